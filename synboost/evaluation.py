"""A detector over a benchmark folder -> metrics table (JSON + markdown), PR/ROC curves and example heatmaps.

Pixel metrics are the exact Fishyscapes (bdlb) definitions pooled over all pixels with label 0 or 1
(:mod:`synboost.metrics.pixel`); where the dataset also has semantic labels, the segmenter's mIoU is reported.
Bad files are skipped and listed in the report, never fatal.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from synboost.data.io import write_image, write_json, write_text
from synboost.errors import DataError, ImageReadError
from synboost.metrics.pixel import pixel_curve
from synboost.metrics.segmentation import ConfusionMatrix
from synboost.viz import overlay, plot_curves, tile


def _collect(detector, dataset, methods, progress, max_images, examples):
    per_method: dict[str, tuple[list, list]] = {m: ([], []) for m in methods}
    cm = None
    skipped, done = [], []
    shown = []
    n = len(dataset) if not max_images else min(len(dataset), max_images)
    bs = max(1, getattr(detector, "batch_size", 1))
    bar = tqdm(total=n, desc="evaluate", unit="img", disable=not progress, leave=False)
    for start in range(0, n, bs):
        samples = []
        for i in range(start, min(start + bs, n)):
            try:
                s = dataset[i]
                if "anomaly" not in s:
                    raise DataError(f"{dataset.image_path(i)}: has no anomaly labels; evaluation needs a labelled split")
                samples.append(s)
            except ImageReadError as e:
                skipped.append({"index": i, "reason": str(e)})
        if not samples:
            bar.update(min(start + bs, n) - start)
            continue
        outs = detector.run([s["image"] for s in samples], methods)
        for s, o in zip(samples, outs):
            valid = s["anomaly"] <= 1
            lab = s["anomaly"][valid]
            for m in methods:
                per_method[m][0].append(o[m][valid].astype(np.float32))
                per_method[m][1].append(lab)
            if "label" in s:
                if cm is None:
                    cm = ConfusionMatrix(19)
                cm.update(o["segmentation"], s["label"])
            if len(shown) < examples and (s["anomaly"] == 1).any():
                shown.append((s, o))
            done.append(s["name"])
        bar.update(min(start + bs, n) - start)
    bar.close()
    return per_method, cm, skipped, done, shown


def evaluate(detector, dataset, methods: Sequence[str], out_dir: str | os.PathLike | None = None,
             dataset_name: str = "dataset", progress: bool = True, max_images: int | None = None,
             examples: int = 4, fpr_rule: str = "first_ge") -> dict:
    """Score ``dataset`` with every method in ``methods``; returns the report dict (also written if ``out_dir``)."""
    t0 = time.time()
    per_method, cm, skipped, done, shown = _collect(detector, dataset, methods, progress, max_images, examples)
    if not done:
        raise DataError(f"{dataset_name}: no image could be evaluated ({len(skipped)} skipped)")
    rows, curve_data = [], {}
    for m in methods:
        sc, lab = per_method[m]
        curve = pixel_curve(sc, lab)
        res = curve.metrics(fpr_rule)
        rows.append({"method": m, "ap": res.ap, "fpr95": res.fpr95, "auroc": res.auroc})
        c = curve.curves()
        curve_data[m] = {"recall": c.recall, "precision": c.precision, "fpr": c.fpr, "tpr": c.tpr,
                         "ap": res.ap, "auroc": res.auroc}
    n_pos = int(sum(int(x.sum()) for x in per_method[methods[0]][1]))
    n_all = int(sum(x.size for x in per_method[methods[0]][1]))
    report = {
        "dataset": dataset_name, "images": len(done), "skipped": skipped, "anomaly_pixel_ratio": n_pos / max(n_all, 1),
        "fpr_rule": fpr_rule, "results": rows, "seconds": time.time() - t0,
    }
    if cm is not None:
        report["miou"] = float(cm.compute().miou)
    if out_dir is not None:
        out = Path(out_dir)
        write_json(out / "metrics.json", report)
        write_text(out / "metrics.md", markdown_table(report))
        plot_curves(curve_data, out / "curves.png", title=f"{dataset_name}: {len(done)} images")
        for k, (s, o) in enumerate(shown):
            panels = [s["image"]] + [overlay(s["image"], o[m]) for m in methods]
            gt = np.where(s["anomaly"] == 1, 255, np.where(s["anomaly"] == 255, 96, 0)).astype(np.uint8)
            write_image(out / "examples" / f"{k:02d}_{s['name']}.png",
                        tile(panels + [gt], cols=min(4, len(panels) + 1),
                             titles=["image"] + list(methods) + ["ground truth"]))
    return report


def markdown_table(report: dict) -> str:
    lines = [f"**{report['dataset']}**: {report['images']} images, anomaly pixel ratio "
             f"{100 * report['anomaly_pixel_ratio']:.2f} %" + (f", segmenter mIoU {100 * report['miou']:.1f}"
                                                              if "miou" in report else ""), "",
             "| method | AP (%) | FPR95 (%) | AUROC (%) |", "|---|---:|---:|---:|"]
    for r in report["results"]:
        lines.append(f"| {r['method']} | {100 * r['ap']:.2f} | {100 * r['fpr95']:.2f} | {100 * r['auroc']:.2f} |")
    if report.get("skipped"):
        lines += ["", f"{len(report['skipped'])} files skipped (see metrics.json)."]
    return "\n".join(lines) + "\n"
