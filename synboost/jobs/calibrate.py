"""The object threshold from labelled validation data: ``synboost eval --pipeline P --data KIND:DIR --calibrate RULE``.

The detector runs over the labelled images exactly as ``synboost infer`` runs it (``detector(images)``: the
pipeline's method, maps at the input size; resized to the labels' size if those differ). The exact pooled pixel
curve of :mod:`synboost.metrics.pixel` (every distinct positive score, no histogram) gives the threshold:

* ``tpr95``: the highest threshold at which 95 % of the anomaly pixels are found (the operating point of FPR95 under
  the Fishyscapes ``first_ge`` rule);
* ``f1``: the pixel-level best-F1 point (:meth:`~synboost.metrics.pixel.PixelCurve.best_f1_threshold`; the threshold
  the SMIYC component metrics use).

Both are written for the rule ``score > threshold`` (the component metrics' rule, that of
:mod:`synboost.jobs.objects`): just below the chosen positive score, in float32. The pipeline file gets
``score.threshold`` and ``score.calibration`` (rule, method, dataset, value, images and the pixel TPR / FPR /
precision / F1 there), written back with :func:`~synboost.detectors.detector.write_pipeline_file` and read back to
check it loads the same components. Memory: only the scores at labelled pixels and their labels are kept, in
memory up to ``memory_gb`` and in a scratch folder beyond.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from synboost.data.io import write_npy
from synboost.errors import ConfigError, DataError, ImageReadError
from synboost.jobs.objects import DEFAULT_MIN_AREA, ObjectSettings, score_objects
from synboost.metrics.pixel import TPR_LEVEL, PixelCurve, pixel_curve_two_pass

RULES = ("tpr95", "f1")
HOW = "synboost eval --pipeline {p} --data KIND:DIR --calibrate tpr95 (or f1)"


class _Store:
    """Per image: the float32 scores at the labelled pixels, their labels and where they lie (packed bits);
    beyond ``budget`` bytes they go to ``.npy`` files in a scratch folder (removed by :meth:`close`)."""

    def __init__(self, budget: float) -> None:
        self.budget, self.bytes, self.items, self.scratch, self.n = budget, 0, [], None, 0

    def _keep(self, arr: np.ndarray):
        if self.bytes + arr.nbytes <= self.budget:
            self.bytes += arr.nbytes
            return arr
        if self.scratch is None:
            self.scratch = Path(tempfile.mkdtemp(prefix="synboost-calibrate-"))
        self.n += 1
        path = self.scratch / f"{self.n}.npy"
        write_npy(path, arr)
        return path

    def add(self, scores: np.ndarray, labels: np.ndarray) -> None:
        valid = labels <= 1
        self.items.append((valid.shape, np.packbits(valid), self._keep(scores[valid].astype(np.float32)),
                           self._keep(labels[valid].astype(np.uint8))))

    @staticmethod
    def _load(x):
        return np.load(x, mmap_mode="r") if isinstance(x, Path) else x

    def pairs(self):
        for _, _, s, lab in self.items:
            yield self._load(s), self._load(lab)

    def full_maps(self):
        """(H x W scores, -inf off the labelled pixels; H x W labels, 255 there) per image."""
        for shape, bits, s, lab in self.items:
            valid = np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).view(bool)
            score = np.full(shape, -np.inf, np.float32)
            score[valid] = self._load(s)
            full = np.full(shape, 255, np.uint8)
            full[valid] = self._load(lab)
            yield score, full

    def close(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def _below(u: np.floating) -> float:
    """The float32 just below ``u``: ``score > it`` selects exactly ``score >= u``."""
    u32 = np.float32(u)
    return float(np.nextafter(u32, np.float32(-np.inf)))


def threshold_from_curve(curve: PixelCurve, rule: str) -> dict[str, float]:
    """The ``rule`` threshold of an exact pixel curve (for ``score > threshold``) and the operating point there:
    ``{"value", "tpr", "fpr", "precision", "f1"}``."""
    if rule not in RULES:
        raise ConfigError(f"--calibrate {rule}: choose one of {', '.join(RULES)}")
    if curve.n_pos == 0:
        raise DataError("the calibration data has no anomaly pixels (label 1); calibrate on labelled anomalies")
    tpr = curve.tp / curve.n_pos
    if rule == "tpr95":
        j = int(np.searchsorted(tpr, TPR_LEVEL, side="left"))
    else:
        j = int(np.argmax(2.0 * curve.tp / (curve.tp + curve.fp_ge + curve.n_pos)))
    tp, fp = int(curve.tp[j]), int(curve.fp_ge[j])
    return {"value": _below(curve.thresholds[j]), "tpr": float(tpr[j]),
            "fpr": float(fp / curve.n_neg) if curve.n_neg else float("nan"),
            "precision": float(tp / (tp + fp)), "f1": float(2 * tp / (2 * tp + fp + (curve.n_pos - tp)))}


def _fit(score: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if score.shape == tuple(shape):
        return score
    h, w = shape
    shrink = h <= score.shape[0] and w <= score.shape[1]
    return cv2.resize(score, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _collect(detector, datasets, store: _Store, max_images: int | None, progress: bool):
    """Run the detector over every labelled image; returns (images used, skipped entries)."""
    used, skipped = 0, []
    bs = max(1, int(getattr(detector, "batch_size", 1) or 1))
    for name, ds in datasets:
        n = len(ds) if not max_images else min(len(ds), max_images)
        bar = tqdm(total=n, desc=f"calibrate {name}", unit="img", disable=not progress, leave=False)
        for start in range(0, n, bs):
            samples = []
            for i in range(start, min(start + bs, n)):
                try:
                    s = ds[i]
                except ImageReadError as e:
                    skipped.append({"dataset": name, "index": i, "reason": " ".join(str(e).split()),
                                    "file": getattr(e, "path", None)})
                    continue
                if "anomaly" in s:
                    samples.append(s)
            if samples:
                for s, res in zip(samples, detector([s["image"] for s in samples])):
                    store.add(_fit(np.asarray(res["anomaly"], np.float32), s["anomaly"].shape), s["anomaly"])
                    used += 1
            bar.update(min(start + bs, n) - start)
        bar.close()
    return used, skipped


def calibrate(detector, data: Sequence[str], rule: str, *, max_images: int | None = None, progress: bool = True,
              min_area: int = DEFAULT_MIN_AREA, memory_gb: float = 2.0) -> dict[str, Any]:
    """The ``rule`` threshold of ``detector``'s own method on the labelled datasets ``data`` (specs ``KIND:DIR``,
    pooled). Returns the calibration record (the fields of :class:`~synboost.config.ScoreCalibration`), plus
    ``ap`` / ``fpr95`` of the pooled curve, the SMIYC component metrics of the objects at that threshold
    (``objects``: ``min_area`` pixels, GT components of 10 px or more) and the ``skipped`` files."""
    from synboost.data.kinds import open_dataset

    if rule not in RULES:
        raise ConfigError(f"--calibrate {rule}: choose one of {', '.join(RULES)}")
    if not data:
        raise ConfigError("calibration needs labelled data: give --data KIND:DIR (a validation split)")
    datasets = [(str(spec), open_dataset(spec)) for spec in data]
    store = _Store(memory_gb * 2**30)
    try:
        used, skipped = _collect(detector, datasets, store, max_images, progress)
        if not used:
            raise DataError(f"{', '.join(map(str, data))}: no image with anomaly labels could be read ({len(skipped)} "
                            "skipped); calibrate on a labelled split")
        curve = pixel_curve_two_pass(store.pairs)
        point = threshold_from_curve(curve, rule)
        objects = score_objects(store.full_maps(), point["value"], min_area=min_area, min_gt_size=10)
    finally:
        store.close()
    method = getattr(detector, "method", None) or ""
    return {"rule": rule, "method": method, "dataset": [str(d) for d in data], "images": used, **point,
            "ap": curve.ap(), "fpr95": curve.fpr95("first_ge"), "n_pos": curve.n_pos, "n_neg": curve.n_neg,
            "objects": {"min_area": min_area, "min_gt_size": 10, "siou": objects.siou_gt, "ppv": objects.ppv,
                        "f1_mean": objects.f1_mean, "n_gt": objects.n_gt, "n_pred": objects.n_pred},
            "skipped": skipped}


def _absolute_components(cfg, folder: Path) -> dict[str, str]:
    """The component values with relative file paths made absolute from the pipeline file's folder (so that the
    writer, which takes paths from the working directory, writes them back relative to the file as they were)."""
    out = {}
    for f in dataclasses.fields(cfg.components):
        v = str(getattr(cfg.components, f.name))
        is_path = bool(v) and v not in ("imagenet", "random") and bool(Path(v).suffix or "/" in v)
        if is_path:
            v = os.path.realpath(Path(v).expanduser() if Path(v).expanduser().is_absolute() else folder / v)
        out[f.name] = v
    return out


def store_threshold(pipeline: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write ``score.threshold`` and ``score.calibration`` (from a :func:`calibrate` record) into a pipeline file
    with the pipeline writer; everything else in the file is kept. Read back to check it still names the same
    component files; returns the path."""
    from synboost.config.jobs import ScoreCalibration
    from synboost.detectors.detector import read_pipeline, write_pipeline_file

    path = Path(pipeline)
    folder = path.resolve().parent
    cfg = read_pipeline(path, note=False)
    if record["method"] != cfg.score.method:
        raise ConfigError(f"{path}: the threshold was calibrated for method '{record['method']}' but the file scores "
                          f"with '{cfg.score.method}'; calibrate without --method (a threshold belongs to the file's "
                          "own score)")
    fields = [f.name for f in dataclasses.fields(ScoreCalibration)]
    score = {f.name: getattr(cfg.score, f.name) for f in dataclasses.fields(cfg.score)}
    score.update(threshold=float(record["value"]), calibration={k: record[k] for k in fields if k in record})
    components = _absolute_components(cfg, folder)
    write_pipeline_file(path, detector=cfg.detector, **components, **score, **dataclasses.asdict(cfg.defaults))
    if _absolute_components(read_pipeline(path, note=False), folder) != components:
        raise DataError(f"{path}: rewriting the file changed its component paths; check components: in the file")
    return path


def pipeline_objects(pipeline: str | os.PathLike, overrides: Sequence[str], method: str,
                     threshold: float | None, min_area: int) -> ObjectSettings:
    """The :class:`ObjectSettings` of ``infer --objects``: ``threshold`` when given, else the pipeline file's
    ``score.threshold``, if it belongs to ``method`` (the method it was calibrated for, or the file's own method
    for a threshold set by hand); no threshold is one line saying how to calibrate."""
    from synboost.detectors.detector import read_pipeline

    if threshold is not None:
        return ObjectSettings(float(threshold), min_area, source="--threshold")
    score = read_pipeline(pipeline, overrides, note=False).score
    if score.threshold is None:
        raise ConfigError(f"{pipeline}: --objects needs a threshold and the pipeline has none (score.threshold); "
                          f"calibrate one on labelled validation data with `{HOW.format(p=pipeline)}`, or pass "
                          "--threshold T")
    cal = score.calibration
    owner = cal.method or read_pipeline(pipeline, note=False).score.method
    if owner != method:
        raise ConfigError(f"{pipeline}: score.threshold belongs to method '{owner}', not '{method}'; drop --method, "
                          f"pass --threshold T, or calibrate a pipeline file whose score.method is '{method}'")
    source = f"score.threshold ({cal.rule} on {', '.join(cal.dataset)})" if cal.rule else "score.threshold"
    return ObjectSettings(float(score.threshold), min_area, source=source)
