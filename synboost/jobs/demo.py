"""``synboost demo``: the main job on the embedded default, on a fresh machine, with no data and no weights.

world -> segmentation -> PEBAL -> synthesis -> dissimilarity -> SynBoost, PEBAL and the post-hoc baselines on
held-out anomaly scenes -> table, curves, heatmaps, and ``report.html`` (all of it and every stage's training
curves in one self-contained page: :mod:`synboost.jobs.report`). A step that already finished with the same config
is reused, so an interrupted demo continues where it stopped (a stage's own training also resumes from its last
epoch).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from synboost.config import DemoConfig, merge_config, save_config, to_dict
from synboost.data.io import write_json, write_text
from synboost.jobs.stages import fusion_line, fusion_weights, place_stages, prepare_stages


def quick_config(cfg: DemoConfig, overrides: Sequence[str] = ()) -> DemoConfig:
    """``demo --quick``: ``cfg`` shrunk to a smoke-test sized run (about a minute), then the command line's
    ``--set`` overrides applied again on top, so that a key the user set wins over the smoke-test size."""
    _shrink(cfg)
    return merge_config(DemoConfig, to_dict(cfg), overrides, "--quick") if overrides else cfg


def _shrink(cfg: DemoConfig) -> None:
    """--quick: a smoke-test sized run (about a minute)."""
    cfg.world.n, cfg.world.height, cfg.world.width = 40, 64, 128
    cfg.segmentation.data.crop = [64, 128]
    cfg.segmentation.train.epochs, cfg.segmentation.train.batch_size = 2, 4
    cfg.synthesis.data.size, cfg.synthesis.model.num_upsampling = [32, 64], 4
    cfg.synthesis.train.epochs = 1
    cfg.dissimilarity.data.size, cfg.dissimilarity.train.epochs = [32, 64], 1
    cfg.pebal.data.crop, cfg.pebal.train.epochs, cfg.pebal.train.batch_size = [64, 128], 1, 4


#: ``demo --full``: the dissimilarity stage trains this many times the demo's epochs
FULL_EPOCH_FACTOR = 3


def full_config(cfg: DemoConfig) -> DemoConfig:
    """``synboost demo --full``: the demo with its dissimilarity network trained 3x as long (18 epochs on the same
    anomaly data; its held-out AP still rises at the demo's last epoch in every seed, README). The run goes to
    ``<out>-full`` and takes world, segmenter, PEBAL and generator from ``<out>`` (``stages_from``): reused when
    the default demo left them there, trained there otherwise. Changes ``cfg`` in place and returns it."""
    variant_folders(cfg, full=True, trunks=False)
    cfg.dissimilarity.train.epochs *= FULL_EPOCH_FACTOR
    return cfg


def variant_folders(cfg: DemoConfig, full: bool, trunks: bool) -> DemoConfig:
    """The folders of ``demo --full`` / ``--trunks`` (either or both): the run goes to ``<out>-full``,
    ``<out>-trunks`` or ``<out>-full-trunks`` and takes world, segmenter, PEBAL and generator from ``<out>``
    (``stages_from``), unless the config names its own ``stages_from``. Changes ``cfg`` in place and returns it."""
    if (full or trunks) and not cfg.stages_from:
        cfg.stages_from = cfg.out
        cfg.out = str(Path(cfg.out)) + "-full" * full + "-trunks" * trunks
    return cfg


def trunks_config(cfg: DemoConfig) -> DemoConfig:
    """``synboost demo --trunks``: the demo with the world-pretrained VGG16 / VGG19 (``pretrained_trunks``: the
    backbone stage, 30 epochs, trained once per world in ``<stages_from>/backbone``) under the dissimilarity encoder
    (full width) and the perceptual difference. The generator has no VGG loss in the demo, so it and every other
    upstream stage are the default demo's; only the trunks and the dissimilarity network are trained. On 3 seeds
    it lowered the void-clutter FPR95 of the chosen fusion (44.4 -> 35.0) and the test FPR95 below every post-hoc
    baseline's in every seed, at level AP (README); it is not the default because one seed then takes about 28
    min from nothing on 2 cores. Changes ``cfg`` in place and returns it."""
    variant_folders(cfg, full=False, trunks=True)
    cfg.pretrained_trunks = True
    return cfg


def run_demo(cfg: DemoConfig, quick: bool = False, resume: bool = True) -> dict:
    """``synboost demo``: world, stages (each reused when done with the same config), the anomaly test scored
    with every method, report and pipeline file; ``quick`` shrinks everything for smoke tests."""
    from synboost.data.kinds import open_dataset
    from synboost.detectors.detector import load_pipeline
    from synboost.jobs.evaluate import evaluate, markdown_table
    from synboost.jobs.report import Gallery, write_demo_report

    if quick:
        _shrink(cfg)
    place_stages(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    times, _ = prepare_stages(cfg, resume)
    w, seg, syn, dis = cfg.world, cfg.segmentation, cfg.synthesis, cfg.dissimilarity
    t = time.time()
    ensemble = fusion_weights(cfg, dis)
    times["fusion weights"] = time.time() - t

    print(f"[6/6] evaluation on {w.out}/anomaly/test (held-out scenes with out-of-distribution objects)")
    t = time.time()
    from synboost.detectors.detector import write_pipeline_file

    pipe = write_pipeline_file(
        out / "pipeline.yaml", method="synboost", segmenter=str(Path(dis.segmenter).resolve()),
        generator=str(Path(dis.generator).resolve()),
        dissimilarity=str((Path(dis.out) / "dissimilarity.safetensors").resolve()),
        pebal=str((Path(cfg.pebal.out) / "pebal.safetensors").resolve()),
        perceptual_vgg_pretrained=dis.perceptual_vgg_pretrained,
        perceptual_vgg_path=str(Path(dis.perceptual_vgg_path).resolve()) if dis.perceptual_vgg_path else "",
        batch_size=seg.train.batch_size, ensemble_weights=ensemble["weights"])
    det = load_pipeline(pipe)
    gallery, curves = Gallery(), {}
    report = evaluate(det, open_dataset(f"synthetic:{w.out}"), cfg.methods, out / "eval",
                      dataset_name="synthetic anomaly test", curves=curves, gallery=gallery, html=False)
    times["evaluation"] = time.time() - t
    stage_summaries = {k: json.loads((Path(c.out) / "summary.json").read_text()) for k, c in
                       (("segmentation", seg), ("synthesis", syn), ("dissimilarity", dis), ("pebal", cfg.pebal))}
    val = {k: v["best_val"] for k, v in stage_summaries.items()}
    if cfg.pretrained_trunks and "lpips" not in val["synthesis"]:
        from synboost.jobs.stages import generator_lpips, trunk_files

        lp = generator_lpips(syn, trunk_files(cfg.backbone)[0])
        val["synthesis"].update({k: lp[k] for k in ("lpips", "lpips_mean_colour_painting")})
    # what each stage trained in (bf16 autocast, or float32 on a CPU without bf16 units); runs older than the field
    # say "not recorded"
    precision = {k: v.get("precision", "not recorded") for k, v in stage_summaries.items()}
    summary = {"report": report, "stages": val, "ensemble": ensemble, "precision": precision, "seconds": times,
               "config": to_dict(cfg)}
    write_json(out / "report.json", summary)
    sv, dv = val["synthesis"], val["dissimilarity"]
    pb = stage_summaries["pebal"]["base_val"]
    text = (f"# synboost demo\n\n"
            f"- segmenter mIoU on held-out clean scenes: {100 * val['segmentation']['score']:.1f} "
            f"(epoch {val['segmentation']['epoch']})\n"
            f"- generator L1 to the real held-out images: {sv['l1']:.4f} (epoch {sv['epoch']}; per-class "
            f"mean-colour painting: "
            f"{sv['l1_mean_colour_painting']:.4f})"
            + (f"; LPIPS (world-pretrained VGG16 trunk) {sv['lpips']:.4f} (painting: "
               f"{sv['lpips_mean_colour_painting']:.4f})" if "lpips" in sv else "") + "\n"
            f"- dissimilarity AP on held-out training anomalies: {100 * dv['heldout_ap']:.1f} (epoch {dv['epoch']})\n"
            f"- {fusion_line(ensemble)}\n"
            f"- PEBAL on held-out scenes with pasted outliers: AP {100 * val['pebal']['ap']:.1f} (the base "
            f"segmenter's energy: {100 * pb['ap']:.1f}), mIoU {100 * val['pebal']['miou']:.1f} (base: "
            f"{100 * pb['miou']:.1f}) (epoch {val['pebal']['epoch']})\n"
            f"- {precision_line(precision)}\n\n"
            f"{markdown_table(report)}\n"
            "Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
            + f" (total {sum(times.values()):.0f} s)\n")
    write_text(out / "report.md", text)
    write_demo_report(out, summary, curves, gallery, {"segmentation": seg.out, "pebal": cfg.pebal.out,
                                                      "synthesis": syn.out, "dissimilarity": dis.out},
                      Path(syn.out) / "samples")
    print()
    print(text)
    print(f"outputs in {out}/: report.html (everything in one page), report.md, eval/curves.png, "
          f"eval/examples/*.png; pipeline file {pipe}")
    print(f"next: synboost infer --pipeline {pipe} --images {w.out}/anomaly/test/original --out {out}/maps")
    return summary


def precision_line(precision: dict) -> str:
    """One line: what each training stage computed in (``summary.json``'s ``precision``)."""
    return "training precision: " + ", ".join(f"{k} {v}" for k, v in precision.items())


#: the demo's figures that ``run_demo_seeds`` reports as mean +- std: (label, path into the summary, scale)
SEED_FIGURES = (("segmenter mIoU", ("stages", "segmentation", "score"), 100),
                ("generator L1", ("stages", "synthesis", "l1"), 1),
                ("mean-colour painting L1", ("stages", "synthesis", "l1_mean_colour_painting"), 1),
                ("generator LPIPS", ("stages", "synthesis", "lpips"), 1),
                ("mean-colour painting LPIPS", ("stages", "synthesis", "lpips_mean_colour_painting"), 1),
                ("dissimilarity held-out AP", ("stages", "dissimilarity", "heldout_ap"), 100),
                ("PEBAL validation AP", ("stages", "pebal", "ap"), 100),
                ("fusion weight of the dissimilarity", ("ensemble", "weights", 0), 1),
                ("fusion weight of the entropy", ("ensemble", "weights", 1), 1),
                ("fusion weight of the distance", ("ensemble", "weights", 2), 1),
                ("fusion weight of the perceptual difference", ("ensemble", "weights", 3), 1))


def seed_folder(out: str, seed: int) -> str:
    """The run folder of one seed of ``synboost demo --seeds``: ``<out>/seed-<k>``."""
    return str(Path(out) / f"seed-{seed}")


def mean_std(values) -> dict:
    """Mean, population std and the values themselves (as floats) of one figure over seeds."""
    import numpy as np

    a = np.asarray(values, np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "values": [float(v) for v in a]}


def summarise_seeds(summaries: dict[int, dict]) -> dict:
    """Mean, std (population, over seeds) and the per-seed values of every figure and every method's AP / FPR95 /
    AUROC on the anomaly test, from the demo summaries of several seeds."""
    stat = mean_std
    seeds = sorted(summaries)
    figures = {}
    for label, path, scale in SEED_FIGURES:
        vals = []
        for k in seeds:
            v = summaries[k]
            for key in path:
                if isinstance(key, int):
                    v = v[key] if isinstance(v, list) and key < len(v) else None
                else:
                    v = v.get(key) if isinstance(v, dict) else None
            if v is not None:
                vals.append(scale * float(v))
        if len(vals) == len(seeds):  # a figure every seed has (LPIPS only with the world-pretrained trunks)
            figures[label] = stat(vals)
    methods: dict[str, dict] = {}
    for k in seeds:
        for row in summaries[k]["report"]["results"]:
            m = methods.setdefault(row["method"], {"ap": [], "fpr95": [], "auroc": []})
            for key in m:
                m[key].append(100 * row[key])
    table = {name: {key: stat(v) for key, v in vals.items()} for name, vals in methods.items()}
    precision = {k: summaries[k]["precision"] for k in seeds if "precision" in summaries[k]}
    return {"seeds": seeds, "figures": figures, "methods": table, "precision": precision}


def seeds_markdown(agg: dict) -> str:
    """The mean +- std table of :func:`summarise_seeds`."""
    n = len(agg["seeds"])
    lines = [f"# synboost demo over {n} seeds ({', '.join(map(str, agg['seeds']))}): mean +- std (population std "
             "over seeds)", ""]
    for k, p in agg.get("precision", {}).items():  # numbers of a bf16 and a float32 machine differ
        lines.append(f"- seed {k}: {precision_line(p)}")
    if agg.get("precision"):
        lines.append("")
    lines += ["| figure | mean +- std | per seed |", "|---|---:|---|"]
    for label, st in agg["figures"].items():
        digits = 4 if "L1" in label or "LPIPS" in label else 3 if "weight" in label else 1
        lines.append(f"| {label} | {st['mean']:.{digits}f} +- {st['std']:.{digits}f} | "
                     + ", ".join(f"{v:.{digits}f}" for v in st["values"]) + " |")
    lines += ["", "| method | AP | FPR95 | AUROC | AP per seed |", "|---|---:|---:|---:|---|"]
    for name, st in sorted(agg["methods"].items(), key=lambda kv: -kv[1]["ap"]["mean"]):
        lines.append(f"| {name} | {st['ap']['mean']:.2f} +- {st['ap']['std']:.2f} | {st['fpr95']['mean']:.2f} +- "
                     f"{st['fpr95']['std']:.2f} | {st['auroc']['mean']:.2f} +- {st['auroc']['std']:.2f} | "
                     + ", ".join(f"{v:.2f}" for v in st["ap"]["values"]) + " |")
    checks = seed_checks(agg)
    if checks:
        lines += ["", "Per seed, SynBoost against the best post-hoc score of the same segmenter (" + ", ".join(
            m for m in posthoc_scores() if m in agg["methods"]) + "):", "",
            "| seed | SynBoost AP | best post-hoc AP | ratio | SynBoost FPR95 | lowest post-hoc FPR95 | below all |",
            "|---|---:|---:|---:|---:|---:|---|"]
        for c in checks:
            lines.append(f"| {c['seed']} | {c['ap']:.2f} | {c['best_ap']:.2f} ({c['best_ap_method']}) | "
                         f"{c['ratio']:.2f}x | {c['fpr95']:.2f} | {c['best_fpr95']:.2f} ({c['best_fpr95_method']}) | "
                         f"{'yes' if c['fpr95_below_all'] else 'no'} |")
    return "\n".join(lines) + "\n"


def posthoc_scores() -> tuple[str, ...]:
    """The post-hoc scores of the segmenter that SynBoost is held against in ``seeds.md``: the scores of its
    outputs (``POSTHOC_METHODS``) that the comparison table lists with no re-training, no extra network and no
    outlier data (imported here, so that importing this module does not load torch)."""
    from synboost.detectors.posthoc import POSTHOC_METHODS
    from synboost.jobs.compare import METHOD_INFO

    return tuple(m for m in POSTHOC_METHODS if METHOD_INFO[m][:3] == ("no", "no", "no"))


def seed_checks(agg: dict, method: str = "synboost") -> list[dict]:
    """Per seed: ``method``'s AP as a multiple of the best post-hoc AP, and whether its FPR95 is below every
    post-hoc FPR95 (the claims the SynBoost paper makes against those baselines); [] without the rows."""
    post = [m for m in posthoc_scores() if m in agg["methods"]]
    if method not in agg["methods"] or not post:
        return []
    out = []
    for i, seed in enumerate(agg["seeds"]):
        ap = {m: agg["methods"][m]["ap"]["values"][i] for m in post}
        fpr = {m: agg["methods"][m]["fpr95"]["values"][i] for m in post}
        best_ap, best_fpr = max(ap, key=ap.get), min(fpr, key=fpr.get)
        own_ap, own_fpr = (agg["methods"][method][k]["values"][i] for k in ("ap", "fpr95"))
        out.append({"seed": seed, "ap": own_ap, "best_ap": ap[best_ap], "best_ap_method": best_ap,
                    "ratio": own_ap / max(ap[best_ap], 1e-12), "fpr95": own_fpr, "best_fpr95": fpr[best_fpr],
                    "best_fpr95_method": best_fpr, "fpr95_below_all": own_fpr < fpr[best_fpr]})
    return out


def run_demo_seeds(cfg: DemoConfig, seeds: list[int], quick: bool = False, resume: bool = True) -> dict:
    """``synboost demo --seeds A B C``: the whole demo once per training seed (each in ``<out>/seed-<k>``, each
    resumable), then every figure as mean +- std over the seeds in ``<out>/seeds.md`` and ``<out>/seeds.json``."""
    import copy

    base = Path(cfg.out)
    summaries = {}
    for k in seeds:
        print(f"\n=== seed {k} ({seeds.index(k) + 1} of {len(seeds)}) ===")
        one = copy.deepcopy(cfg)
        one.seed, one.out = k, seed_folder(cfg.out, k)
        if not cfg.backbone_from:  # one pair of trunks for every seed (they do not depend on it)
            one.backbone_from = str(Path(cfg.stages_from or cfg.out) / "backbone")
        if cfg.stages_from:
            one.stages_from = seed_folder(cfg.stages_from, k)
        summaries[k] = run_demo(one, quick=quick, resume=resume)
    agg = summarise_seeds(summaries)
    agg["seconds"] = {k: sum(s["seconds"].values()) for k, s in summaries.items()}
    write_json(base / "seeds.json", agg)
    text = seeds_markdown(agg)
    write_text(base / "seeds.md", text)
    print()
    print(text)
    print(f"written to {base}/seeds.md and seeds.json (each seed's run in {base}/seed-<k>/)")
    return agg
