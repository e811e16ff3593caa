"""``synboost ablate``: train and score the variants the SynBoost paper ablates, print the paper-style table.

Each variant is the main configuration with one thing removed. "no_ensemble" reuses the full network and drops
the final fusion with the entropy. "no_data_generator" drops the void regions as training anomalies (the paper's
"data generator") and keeps label switching, without which there would be no anomaly to learn from.
Written: ``ablation.json``, ``ablation.md`` and ``report.html`` (the table, every variant's curves and worst
images, the config and timings; :mod:`synboost.jobs.report`).
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

from synboost.config import AblationConfig, save_config, to_dict
from synboost.data.io import write_json, write_text

#: variant -> (model overrides, data overrides, evaluation method, what it removes)
VARIANTS: dict[str, tuple[dict, dict, str, str]] = {
    "full": ({}, {}, "synboost", "nothing (main configuration)"),
    "no_ensemble": ({}, {}, "dissimilarity", "the final fusion with the entropy"),
    "no_entropy": ({"priors": ["perceptual", "distance"]}, {}, "synboost", "the entropy input"),
    "no_perceptual": ({"priors": ["entropy", "distance"]}, {}, "synboost", "the perceptual-difference input"),
    "no_distance": ({"priors": ["entropy", "perceptual"]}, {}, "synboost", "the softmax-distance input"),
    "no_uncertainty_maps": ({"priors": []}, {}, "synboost", "all three uncertainty inputs"),
    "no_correlation": ({"correlation": False}, {}, "synboost", "the feature correlation"),
    "no_semantic_encoder": ({"semantic": False}, {}, "synboost", "the semantic encoder"),
    "no_spade": ({"spade": "none"}, {}, "synboost", "the SPADE decoder conditioning"),
    "no_data_generator": ({}, {"void_anomalies": False}, "synboost", "void regions as training anomalies"),
}


def training_key(name: str) -> str:
    """Variants with the same key train the same network (e.g. "full" and "no_ensemble")."""
    model_ov, data_ov, _, _ = VARIANTS[name]
    return repr((sorted(model_ov.items()), sorted(data_ov.items())))


def run_ablation(cfg: AblationConfig, resume: bool = True) -> dict:
    """Train one dissimilarity network per ablation variant on shared anomaly data (reusing the base
    demo's world, segmenter and generator), score each on the held-out anomaly scenes, write the table."""
    from synboost.data.kinds import open_dataset
    from synboost.detectors.detector import load_pipeline, write_pipeline_file
    from synboost.jobs.evaluate import evaluate
    from synboost.jobs.report import Gallery, write_ablation_report
    from synboost.jobs.stages import fusion_weights, place_stages, prepare_stages, resumable, stage_done
    from synboost.runtime import pick_device
    from synboost.training.dissimilarity import prepare_samples, train_dissimilarity

    unknown = [v for v in cfg.variants if v not in VARIANTS]
    if unknown:
        from synboost.errors import ConfigError

        raise ConfigError(f"unknown ablation variants {unknown}; known: {', '.join(VARIANTS)}")
    out = Path(cfg.out)
    base = cfg.base
    place_stages(base)
    save_config(cfg, out / "config.yaml")
    t0 = time.time()
    _, ran = prepare_stages(base, resume, dissimilarity=False, pebal=False)
    resume = resume and not ran  # a variant is reused or resumed only while the stages it builds on are
    timings = {"base stages (reused when done)": time.time() - t0}
    gallery, curves, stage_dirs = Gallery(), {}, {}
    test = open_dataset(f"synthetic:{base.world.out}")
    dev = pick_device(base.dissimilarity.train.device)
    shared: dict[bool, dict] = {}  # void_anomalies -> samples with all three prior maps
    rows, trained = [], {}
    for name in cfg.variants:
        model_ov, data_ov, method, removes = VARIANTS[name]
        key = training_key(name)
        dis = copy.deepcopy(base.dissimilarity)
        for k, v in model_ov.items():
            setattr(dis.model, k, v)
        for k, v in data_ov.items():
            setattr(dis.data, k, v)
        dis.out = str(out / ("full" if not model_ov and not data_ov else name))
        if key not in trained and not model_ov and not data_ov and resume and stage_done(
                base.dissimilarity, "dissimilarity.safetensors"):
            # the main configuration is the base demo's own dissimilarity stage: a finished run of exactly this
            # config (same anomaly data, seed and network) is that network, so it is not trained twice
            print(f"[{name}] the base demo's dissimilarity network ({base.dissimilarity.out}), finished with this "
                  "config: reused")
            stage_dirs[name] = base.dissimilarity.out
            trained[key] = Path(base.dissimilarity.out) / "dissimilarity.safetensors"
        if key not in trained and resume and stage_done(dis, "dissimilarity.safetensors"):
            print(f"[{name}] finished with this config in {dis.out}: reused")
            stage_dirs[name], trained[key] = dis.out, Path(dis.out) / "dissimilarity.safetensors"
        if key not in trained:
            void = dis.data.void_anomalies
            if void not in shared:
                print(f"anomaly data (void anomalies {'on' if void else 'off'}), shared by the variants")
                shared[void] = prepare_samples(dis, dev, priors=("entropy", "perceptual", "distance"))
            print(f"[{name}] training the dissimilarity network without {removes}")
            t = time.time()
            train_dissimilarity(dis, resume=resumable(dis, resume), samples=shared[void])
            timings[f"{name}: training"] = time.time() - t
            stage_dirs[name] = dis.out
            trained[key] = Path(dis.out) / "dissimilarity.safetensors"
        fusion = fusion_weights(base, dis, trained[key])["weights"] if method == "synboost" else None
        pipe = write_pipeline_file(out / f"{name}.pipeline.yaml", method=method, segmenter=dis.segmenter,
                                   **({"ensemble_weights": fusion} if fusion else {}),
                                   generator=dis.generator, dissimilarity=str(trained[key]),
                                   perceptual_vgg_pretrained=dis.perceptual_vgg_pretrained,
                                   perceptual_vgg_path=str(Path(dis.perceptual_vgg_path).resolve())
                                   if dis.perceptual_vgg_path else "")
        g, c = Gallery(keep=72), {}  # a wider net: more of the shown images keep every variant's view
        rep = evaluate(load_pipeline(pipe), test, [method], out / "eval" / name, dataset_name=name, progress=False,
                       curves=c, gallery=g, html=False)
        gallery.merge(g, {method: [name]})
        curves[name], timings[f"{name}: evaluation"] = c[method], rep["seconds"]
        r = rep["results"][0]
        rows.append({"variant": name, "removes": removes, "ap": r["ap"], "fpr95": r["fpr95"], "auroc": r["auroc"],
                     "fusion_weights": fusion})
        print(f"[{name}] AP {100 * r['ap']:.2f}  FPR95 {100 * r['fpr95']:.2f}  AUROC {100 * r['auroc']:.2f}")
    report = {"dataset": "synthetic anomaly test", "images": len(test), "rows": rows, "seconds": time.time() - t0}
    write_json(out / "ablation.json", report)
    text = ablation_table(report)
    write_text(out / "ablation.md", text)
    write_ablation_report(out, report, curves, gallery, to_dict(cfg), {**timings, "total": report["seconds"]},
                          stage_dirs)
    print("\n" + text)
    return report


def ablation_table(report: dict) -> str:
    """The ablation report as a markdown table, each row's AP against the full configuration."""
    full = next((r for r in report["rows"] if r["variant"] == "full"), None)
    lines = [f"Ablation on the {report['dataset']} ({report['images']} images); each row removes one thing.", "",
             "| variant | removes | AP (%) | FPR95 (%) | AUROC (%) | AP vs full | fusion weights |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in report["rows"]:
        d = "" if full is None or r is full else f"{100 * (r['ap'] - full['ap']):+.2f}"
        fw = r.get("fusion_weights")
        lines.append(f"| {r['variant']} | {r['removes']} | {100 * r['ap']:.2f} | {100 * r['fpr95']:.2f} | "
                     f"{100 * r['auroc']:.2f} | {d} | {'' if not fw else ' / '.join(f'{w:.3g}' for w in fw)} |")
    return "\n".join(lines) + "\n"


def run_ablation_seeds(cfg: AblationConfig, seeds: list[int], resume: bool = True) -> dict:
    """``synboost ablate --seeds A B C``: the ablation once per training seed, each on the base demo's stages of
    that seed (``<base.out>/seed-<k>``, as ``synboost demo --seeds`` leaves them, trained there when missing)
    and written to ``<out>/seed-<k>``; then ``ablation_seeds.md`` / ``.json``: every row's AP and FPR95 as mean +-
    std over the seeds, and its change against the full configuration per seed (paired)."""
    from synboost.jobs.demo import seed_folder

    reports = {}
    for k in seeds:
        print(f"\n=== ablation, seed {k} ({seeds.index(k) + 1} of {len(seeds)}) ===")
        one = copy.deepcopy(cfg)
        one.base.seed, one.base.out, one.out = k, seed_folder(cfg.base.out, k), seed_folder(cfg.out, k)
        reports[k] = run_ablation(one, resume=resume)
    agg = summarise_ablation_seeds(reports)
    out = Path(cfg.out)
    write_json(out / "ablation_seeds.json", agg)
    text = ablation_seeds_markdown(agg)
    write_text(out / "ablation_seeds.md", text)
    print("\n" + text)
    print(f"written to {out}/ablation_seeds.md and ablation_seeds.json (each seed's run in {out}/seed-<k>/)")
    return agg


def summarise_ablation_seeds(reports: dict[int, dict]) -> dict:
    """Per variant: AP / FPR95 / AUROC (in %) as mean, population std and per-seed values, and the paired change
    against the full configuration of the same seed (variant - full), with ``beyond_spread`` true where the mean
    change is larger than its std over the seeds and of the same sign in every seed."""
    import numpy as np

    from synboost.jobs.demo import mean_std as stat

    seeds = sorted(reports)

    by_seed = {k: {r["variant"]: r for r in reports[k]["rows"]} for k in seeds}
    names = [r["variant"] for r in reports[seeds[0]]["rows"]]
    rows = []
    for name in names:
        if not all(name in by_seed[k] for k in seeds):
            continue
        row = {"variant": name, "removes": by_seed[seeds[0]][name]["removes"]}
        for key in ("ap", "fpr95", "auroc"):
            row[key] = stat([100 * by_seed[k][name][key] for k in seeds])
        if name != "full" and all("full" in by_seed[k] for k in seeds):
            for key in ("ap", "fpr95"):
                d = np.asarray([100 * (by_seed[k][name][key] - by_seed[k]["full"][key]) for k in seeds])
                row[f"delta_{key}"] = {**stat(d), "beyond_spread": bool(abs(d.mean()) > d.std()
                                                                         and (np.all(d > 0) or np.all(d < 0)))}
        rows.append(row)
    first = reports[seeds[0]]
    return {"seeds": seeds, "dataset": first["dataset"], "images": first["images"], "rows": rows,
            "seconds": {k: reports[k]["seconds"] for k in seeds}}


def ablation_seeds_markdown(agg: dict) -> str:
    """The table of :func:`summarise_ablation_seeds`: a change marked * is beyond its spread."""
    def pm(st: dict) -> str:
        return f"{st['mean']:.2f} +- {st['std']:.2f}"

    def delta(row: dict, key: str) -> str:
        d = row.get(f"delta_{key}")
        return "" if d is None else f"{d['mean']:+.2f} +- {d['std']:.2f}{' *' if d['beyond_spread'] else ''}"

    n = len(agg["seeds"])
    lines = [f"Ablation on the {agg['dataset']} ({agg['images']} images) over {n} seeds "
             f"({', '.join(map(str, agg['seeds']))}): mean +- population std over the seeds; each row removes one "
             "thing. The change is the variant minus the full configuration of the same seed (mean +- std of the "
             "per-seed changes); * marks a change larger than its std and of the same sign in every seed.", "",
             "| variant | removes | AP (%) | FPR95 (%) | AP change | FPR95 change | AP per seed |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in agg["rows"]:
        lines.append(f"| {r['variant']} | {r['removes']} | {pm(r['ap'])} | {pm(r['fpr95'])} | {delta(r, 'ap')} | "
                     f"{delta(r, 'fpr95')} | " + ", ".join(f"{v:.2f}" for v in r["ap"]["values"]) + " |")
    return "\n".join(lines) + "\n"
