"""``synboost bench accuracy``: what each precision, compiled and exported runtime does to the scores of a trained
pipeline, against fp32 eager PyTorch on the same images, in one run.

For every variant (fp32, mixed, full bf16, bf16 + torch.compile, onnxruntime, OpenVINO f32 / bf16) the pipeline
scores a labelled anomaly split (never used for any choice but this one: which variant may be a default). Each row
holds the pooled AP and FPR95 of each method, the share of pixels whose label equals fp32's, the Spearman
correlation of the anomaly map with fp32's, and the seconds per image. A variant may become a default only when
every method stays within ``AP_BOUND`` AP points and ``FPR_BOUND`` FPR95 points of fp32 (``within_bound``).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from synboost.data.io import write_json

#: the bound of issue 16: a variant is a default candidate only within these of fp32 (points)
AP_BOUND, FPR_BOUND = 0.3, 1.0
#: label -> (precision, channels_last, compile, backend, freeze); the reference is fp32 eager, not frozen
VARIANTS = {
    "fp32": ("fp32", False, False, "torch", False),
    "fp32 + channels_last, frozen": ("fp32", True, False, "torch", True),
    "mixed (segmenter fp32, rest bf16) + channels_last, frozen": ("mixed", True, False, "torch", True),
    "bf16 + channels_last, not frozen": ("bf16", True, False, "torch", False),
    "bf16 + channels_last, frozen (the default)": ("bf16", True, False, "torch", True),
    "mixed + channels_last, frozen + torch.compile": ("mixed", True, True, "torch", True),
    "bf16 + channels_last, frozen + torch.compile": ("bf16", True, True, "torch", True),
    "onnxruntime fp32": ("fp32", False, False, "onnxruntime", False),
    "OpenVINO f32": ("fp32", False, False, "openvino", False),
    "OpenVINO bf16": ("bf16", False, False, "openvino", False),
}

#: short names (``synboost bench accuracy --variants mixed bf16``)
SHORT = dict(zip(("fp32", "fp32-frozen", "mixed", "bf16-eager", "bf16", "mixed-compile", "bf16-compile", "ort",
                  "ov-f32", "ov-bf16"), VARIANTS))


def _load(dataset, max_images: int | None):
    n = len(dataset) if not max_images else min(len(dataset), max_images)
    samples = [dataset[i] for i in range(n)]
    return [s for s in samples if "anomaly" in s]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    import torch

    from synboost.jobs.export import spearman

    return float(spearman(torch.from_numpy(a.ravel()), torch.from_numpy(b.ravel())))


def _variant(det, label: str, folder: Path, images):
    """(the detector of variant ``label``, "") or (None, why this machine cannot run it)."""
    from synboost.bench.speed import variant_detector
    from synboost.detectors.runtimes import unavailable

    precision, _, _, backend, _ = VARIANTS[label]
    why = unavailable(backend, precision, det.device)
    if why:
        return None, why
    return variant_detector(det, VARIANTS[label], folder, images, det.batch_size, "the pipeline under test",
                            copy_torch=True), ""


def run_accuracy_benchmark(pipeline: str | os.PathLike, data: str, out_json: str | None = None,
                           variants: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                           max_images: int | None = None) -> list[dict]:
    """Score ``data`` (a labelled anomaly split, ``KIND:DIR``) with ``pipeline`` in each variant; returns the rows
    (also printed as a table and written to ``out_json``)."""
    from synboost.bench.speed import device_info, format_rows, pick_variants
    from synboost.data.kinds import open_dataset
    from synboost.detectors.detector import load_pipeline
    from synboost.metrics.pixel import pixel_metrics

    chosen = list(pick_variants(variants or list(VARIANTS), VARIANTS, SHORT, "accuracy"))
    chosen = ["fp32"] + [v for v in chosen if v != "fp32"]  # the reference comes first
    det = load_pipeline(pipeline, device="cpu", freeze=False)  # each variant freezes its copy
    methods = list(methods or [m for m in ("synboost", "dissimilarity", "entropy", "maxlogit", "energy")
                               if m in det.methods])
    samples = _load(open_dataset(data), max_images)
    images = [s["image"] for s in samples]
    valid = [s["anomaly"] <= 1 for s in samples]
    targets = np.concatenate([s["anomaly"][v] for s, v in zip(samples, valid)])
    rows, ref, skipped = [], None, []
    print(f"{len(images)} images of {data}; methods {', '.join(methods)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="synboost-accuracy-") as tmp:
        for label in chosen:
            run, why = _variant(det, label, Path(tmp), images)
            if run is None:
                skipped.append({"variant": label, "why": why})
                print(f"  skipped: {label}: {why}", flush=True)
                continue
            t0 = time.perf_counter()
            run.run(images[:run.batch_size], methods)  # warm-up (compiles, starts the sessions' kernels)
            first = time.perf_counter() - t0
            t1 = time.perf_counter()
            outs = run.run(images, methods)
            sec = (time.perf_counter() - t1) / len(images)
            seg = np.concatenate([o["segmentation"].ravel() for o in outs])
            scores = {m: np.concatenate([o[m][v] for o, v in zip(outs, valid)]).astype(np.float32)
                      for m in methods}
            row = {"variant": label, "s_per_image": sec, "first_call_s": first}
            for m in methods:
                pm = pixel_metrics(scores[m], targets)
                row[f"AP {m}"], row[f"FPR95 {m}"] = 100 * pm.ap, 100 * pm.fpr95
            if ref is None:
                ref = {"seg": seg, "scores": scores, "row": row}
            row["equal labels %"] = 100 * float((seg == ref["seg"]).mean())
            row["spearman"] = _spearman(scores[methods[0]], ref["scores"][methods[0]])
            row["within_bound"] = all(abs(row[f"AP {m}"] - ref["row"][f"AP {m}"]) <= AP_BOUND
                                      and abs(row[f"FPR95 {m}"] - ref["row"][f"FPR95 {m}"]) <= FPR_BOUND
                                      for m in methods)
            rows.append(row)
            print(f"  {label}: " + ", ".join(f"{m} {row[f'AP {m}']:.2f} / {row[f'FPR95 {m}']:.2f}" for m in methods)
                  + f"; labels {row['equal labels %']:.3f} %; {sec:.3f} s / image", flush=True)
            del run
    cols = ["variant"] + [f"{k} {m}" for m in methods for k in ("AP", "FPR95")] + \
        ["equal labels %", "spearman", "within_bound", "s_per_image", "first_call_s"]
    print(format_rows(rows, cols))
    for s in skipped:
        print(f"skipped: {s['variant']}: {s['why']}")
    if out_json:
        info = device_info(det.device)
        info["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        write_json(out_json, {"benchmark": "accuracy", "pipeline": str(pipeline), "data": data, "methods": methods,
                              "images": len(images), "bound": {"ap": AP_BOUND, "fpr95": FPR_BOUND}, "info": info,
                              "rows": rows, "skipped": skipped})
    return rows
