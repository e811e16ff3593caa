"""``synboost compare``: the comparison table the SynBoost and PEBAL papers print, one row per method, every row
run by the same code on the same data and scored by the same metrics.

A row is ``[LABEL=]PIPELINE[:METHOD,...]``: a pipeline file and the methods to score from it (default: the
pipeline's own method); one detector gives all of its methods from one pass. Columns: whether the method
re-trains the segmenter, needs an extra network, uses outlier data (as the papers' tables mark them), AP and FPR95
per dataset, and the segmenter's mIoU where a dataset has semantic labels (so what re-training costs the inlier
segmentation shows). Written: ``compare.json``, ``compare.md``, one PR / ROC figure per dataset with every
row, and ``report.html`` (:mod:`synboost.jobs.report`: the table, the curves, each row's worst images).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from synboost.data.io import write_json, write_text
from synboost.errors import ConfigError
from synboost.jobs.tables import false_positive_line

#: method -> (re-training, extra network, outlier data, name in the papers' tables)
METHOD_INFO: dict[str, tuple[str, str, str, str]] = {
    "msp": ("no", "no", "no", "MSP (softmax)"),
    "maxlogit": ("no", "no", "no", "max logit"),
    "entropy": ("no", "no", "no", "softmax entropy"),
    "energy": ("no", "no", "no", "energy"),
    "sml": ("no", "no", "no", "SML"),
    "mcdropout": ("no", "no", "no", "MC dropout (Bayesian DeepLab)"),
    "knn": ("no", "no", "no", "kNN embedding density"),
    "nll_single": ("no", "no", "no", "density - single-layer NLL"),
    "nll_min": ("no", "no", "no", "density - minimum NLL"),
    "density_logreg": ("no", "no", "yes", "density - logistic regression"),
    "resynthesis": ("no", "yes", "no", "Image Resynthesis"),
    "dissimilarity": ("no", "yes", "no", "SynBoost w/o ensemble"),
    "synboost": ("no", "yes", "no", "SynBoost"),
    "pebal": ("head", "no", "yes", "PEBAL"),
    "void": ("yes", "no", "yes", "OoD training - void class"),
    "outlier_head": ("yes", "yes", "yes", "discriminative outlier head"),
    "dirichlet": ("yes", "no", "yes", "Dirichlet DeepLab"),
}


@dataclass
class Row:
    """One row of the comparison table: its label, pipeline file and method."""
    label: str
    pipeline: str
    method: str
    info: tuple[str, str, str]


def _info(label: str, method: str) -> tuple[str, str, str, str]:
    return METHOD_INFO.get(label) or METHOD_INFO.get(method) or ("?", "?", "?", method)


def parse_rows(specs: Sequence[str]) -> list[Row]:
    """``[LABEL=]PIPELINE[:METHOD,...]`` -> rows (several methods give several rows of one detector). A label
    that is a key of :data:`METHOD_INFO` (e.g. ``resynthesis``) also sets the row's columns."""
    rows = []
    for spec in specs:
        label, sep, rest = spec.partition("=")
        if not sep:
            label, rest = "", spec
        path, _, methods = rest.partition(":")
        ms = [m for m in methods.split(",") if m] or [""]
        if not path:
            raise ConfigError(f"compare row '{spec}': expected [LABEL=]PIPELINE[:METHOD,...]")
        if label and len(ms) > 1:
            raise ConfigError(f"compare row '{spec}': a label names one row; give one method")
        for m in ms:
            info = _info(label, m)
            rows.append(Row(info[3] if label in METHOD_INFO else (label or (info[3] if m else "")), path, m,
                            info[:3]))
    return rows


def compare(rows: Sequence[Row], data: Sequence[str], out: str | os.PathLike | None = None,
            progress: bool = True, max_images: int | None = None, echo=print, config: dict | None = None,
            timings: dict | None = None) -> dict:
    """Evaluate every row on every dataset spec; returns (and writes) the table. ``config`` / ``timings``: what
    ``report.html`` shows as the run's config and timings besides the evaluations' own (default: the rows)."""
    from synboost.data.kinds import open_dataset
    from synboost.detectors.detector import load_pipeline
    from synboost.jobs.evaluate import dataset_names, evaluate
    from synboost.jobs.report import Gallery, write_compare_report

    if not rows or not data:
        raise ConfigError("compare needs at least one pipeline row and one dataset")
    t0 = time.time()
    names = dataset_names(data)
    datasets = {n: open_dataset(spec) for n, spec in zip(names, data)}
    by_pipeline: dict[str, list[Row]] = {}
    for r in rows:
        by_pipeline.setdefault(r.pipeline, []).append(r)
    results: dict[str, dict] = {}
    curves: dict[str, dict[str, dict]] = {n: {} for n in names}
    galleries = {n: Gallery() for n in names}
    timings = dict(timings or {})
    for path, group in by_pipeline.items():
        det = load_pipeline(path)
        for r in group:
            if not r.method:
                r.method = det.method
                r.info = _info("", r.method)[:3] if r.info == ("?", "?", "?") else r.info
            r.label = r.label or _info("", r.method)[3] or r.method
        methods = list(dict.fromkeys(r.method for r in group))
        for n, ds in datasets.items():
            c: dict = {}
            g = Gallery(keep=72) if out is not None else None  # a wider net: more of the shown images keep each row
            rep = evaluate(det, ds, methods, None, dataset_name=n, progress=progress, max_images=max_images,
                           curves=c, gallery=g)
            timings[f"{', '.join(dict.fromkeys(r.label for r in group))} on {n}"] = rep["seconds"]
            if g is not None:
                labels: dict[str, list[str]] = {}
                for r in group:
                    labels.setdefault(r.method, []).append(r.label)
                galleries[n].merge(g, labels)
            for r in group:
                res = next(x for x in rep["results"] if x["method"] == r.method)
                entry = results.setdefault(r.label, {"label": r.label, "pipeline": r.pipeline, "method": r.method,
                                                     "retraining": r.info[0], "extra_network": r.info[1],
                                                     "outlier_data": r.info[2], "datasets": {}})
                entry["datasets"][n] = {"ap": res["ap"], "fpr95": res["fpr95"], "auroc": res["auroc"],
                                        "miou": rep.get("miou"), "anomaly_pixel_ratio": rep.get("anomaly_pixel_ratio"),
                                        "images": rep["images"],
                                        "false_positive_classes": res.get("false_positive_classes")}
                curves[n][r.label] = c[r.method]
            if progress:
                echo(f"  {Path(path).name} on {n}: " + ", ".join(
                    f"{m} AP {100 * next(x for x in rep['results'] if x['method'] == m)['ap']:.2f}"
                    for m in methods))
    table = {"datasets": names, "rows": [results[r.label] for r in rows if r.label in results],
             "seconds": time.time() - t0}
    table["rows"] = list({r["label"]: r for r in table["rows"]}.values())
    if out is not None:
        from synboost.viz import plot_curves

        o = Path(out)
        write_json(o / "compare.json", table)
        write_text(o / "compare.md", compare_table(table))
        for n in names:
            plot_curves(curves[n], o / f"curves_{n}.png", title=f"{n}: every method")
        timings["evaluation, every row"] = table["seconds"]
        write_compare_report(o, table, curves, galleries, config or {
            "rows": [f"{r.label}={r.pipeline}:{r.method}" for r in rows], "data": list(data),
            "max_images": max_images}, timings)
    return table


def _pct(v) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.2f}"


def compare_table(table: dict) -> str:
    """The papers' layout: method, re-training, extra network, outlier data, then AP / FPR95 per dataset, mIoU."""
    names = table["datasets"]
    head = ["method", "re-training", "extra network", "outlier data"]
    for n in names:
        head += [f"{n} AP", f"{n} FPR95"]
    head.append("mIoU")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 4 + "---:|" * (2 * len(names) + 1)]
    for r in table["rows"]:
        cells = [r["label"], r["retraining"], r["extra_network"], r["outlier_data"]]
        miou = None
        for n in names:
            d = r["datasets"].get(n, {})
            cells += [_pct(d.get("ap")), _pct(d.get("fpr95"))]
            miou = miou if miou is not None else d.get("miou")
        cells.append(_pct(miou))
        lines.append("| " + " | ".join(cells) + " |")
    ratios = [f"{n}: {100 * r['datasets'][n]['anomaly_pixel_ratio']:.2f} %" for n in names
              for r in table["rows"][:1] if n in r["datasets"] and r["datasets"][n].get("anomaly_pixel_ratio")]
    if ratios:
        lines += ["", "Anomaly pixel ratio (the AP of a random score): " + ", ".join(ratios) + "."]
    lines += ["", "AP / FPR95 in %; mIoU of the segmenter each row uses, on the first dataset with semantic labels."]
    for n in names:
        tops = [(r["label"], r["datasets"][n]["false_positive_classes"]["top"]) for r in table["rows"]
                if (r["datasets"].get(n) or {}).get("false_positive_classes")]
        if tops:
            lines += ["", f"{n}: false positives at each row's pixel best-F1 threshold, the inlier classes most "
                      "over-represented among them (share of the false positives / share of the inlier pixels):"]
            lines += [false_positive_line(label, top) for label, top in tops]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ the synthetic world's table


def prepare_methods(cfg, resume: bool = True) -> list[Row]:
    """Train (or reuse) everything the table needs on the synthetic world, and return its rows: the demo's stages
    (world, segmenter, PEBAL, generator, SynBoost's dissimilarity network), the Image Resynthesis network (the
    dissimilarity network without priors and SPADE, on label switching only), the density fit, and the re-training
    methods (``cfg.outlier_methods``, each the whole demo segmenter re-trained with outlier data). The density fit
    and the re-training take the base demo's ``seed``, as its own stages do."""
    import copy

    from synboost.detectors.detector import write_pipeline_file
    from synboost.jobs.stages import place_stages, prepare_stages, resumable, same_config, stage_done
    from synboost.training.density import fit_density
    from synboost.training.dissimilarity import train_dissimilarity
    from synboost.training.outlier import train_outlier

    base, out = cfg.base, Path(cfg.out)
    place_stages(base)
    _, ran = prepare_stages(base, resume)
    resume = resume and not ran  # a stage made here is reused only while the demo's stages it builds on are
    seg = str(Path(base.dissimilarity.segmenter).resolve())
    gen = str(Path(base.dissimilarity.generator).resolve())
    dis = str((Path(base.dissimilarity.out) / "dissimilarity.safetensors").resolve())
    peb = str((Path(base.pebal.out) / "pebal.safetensors").resolve())

    res = copy.deepcopy(base.dissimilarity)
    res.out = str(out / "resynthesis")
    res.model.priors, res.model.spade, res.data.void_anomalies = [], "none", False
    res.data.switch_on = "ground_truth"  # Lis et al.'s switches, whatever SynBoost's demo now trains on
    res.train.epochs = cfg.resynthesis_epochs or res.train.epochs
    print(f"Image Resynthesis: dissimilarity network without priors and SPADE, {res.train.epochs} epochs")
    if not (resume and stage_done(res, "dissimilarity.safetensors")):
        train_dissimilarity(res, resume=resumable(res, resume))

    den = copy.deepcopy(cfg.density)
    den.out, den.segmenter, den.seed = str(out / "density"), seg, base.seed  # seeded as the demo's own stages
    den.data.train = f"synthetic:{base.world.out}@train"
    print("embedding density: per-layer Gaussians, kNN bank, logistic regression")
    if not (resume and (Path(den.out) / "density.safetensors").is_file()
            and same_config(den, Path(den.out) / "config.yaml")):
        fit_density(den)
    retrained = []
    for m in cfg.outlier_methods:
        if m not in cfg.outlier:
            raise ConfigError(f"outlier_methods: '{m}' has no config under 'outlier' (known: {sorted(cfg.outlier)})")
        oc = copy.deepcopy(cfg.outlier[m])
        oc.out, oc.segmenter, oc.train.seed = str(out / f"outlier-{m}"), seg, base.seed
        oc.data.train, oc.data.val = f"synthetic:{base.world.out}@train", f"synthetic:{base.world.out}@val"
        print(f"re-training with outlier data: {oc.method}, the whole segmenter, {oc.train.epochs} epochs")
        if not (resume and stage_done(oc, "segmenter.safetensors")):
            train_outlier(oc, resume=resumable(oc, resume))
        retrained.append(f"{Path(oc.out) / 'pipeline.yaml'}:{oc.method}")
    common = dict(segmenter=seg, perceptual_vgg_pretrained=base.dissimilarity.perceptual_vgg_pretrained,
                  batch_size=base.segmentation.train.batch_size)
    from synboost.jobs.stages import fusion_weights

    fusion = fusion_weights(base, base.dissimilarity)["weights"]
    main = write_pipeline_file(out / "main.pipeline.yaml", method="synboost", generator=gen, dissimilarity=dis,
                               ensemble_weights=fusion,
                               density=str((Path(den.out) / "density.safetensors").resolve()), **common)
    pebal = write_pipeline_file(out / "pebal.pipeline.yaml", method="pebal", segmenter=peb, batch_size=common[
        "batch_size"])
    resyn = write_pipeline_file(out / "resynthesis.pipeline.yaml", method="dissimilarity", generator=gen,
                                dissimilarity=str((Path(res.out) / "dissimilarity.safetensors").resolve()),
                                ensemble=False, **common)
    return parse_rows([f"{main}:{','.join(cfg.main_methods)}", f"resynthesis={resyn}:dissimilarity",
                       f"{main}:dissimilarity,synboost", f"{pebal}:pebal", *retrained, *cfg.rows])


def run_compare(cfg, resume: bool = True) -> dict:
    """``synboost compare --config configs/compare/synthetic.yaml``: every method on the synthetic world's
    held-out anomaly scenes, in one table (``<out>/compare.md``), with the run time."""
    from synboost.config import save_config, to_dict

    t0 = time.time()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    rows = prepare_methods(cfg, resume)
    prepared = time.time() - t0
    data = list(cfg.data) or [f"synthetic:{cfg.base.world.out}"]
    table = compare(rows, data, out, config=to_dict(cfg), timings={"training and fitting (stages reused where "
                                                                   "already trained)": prepared})
    table["seconds_training"], table["seconds_total"] = prepared, time.time() - t0
    write_json(out / "compare.json", table)
    text = compare_table(table) + (f"\nTime: training and fitting {prepared:.0f} s (stages reused where already "
                                   f"trained), evaluation {table['seconds']:.0f} s.\n")
    write_text(out / "compare.md", text)
    print("\n" + text)
    return table
