"""A detector over benchmark folders -> metrics tables (JSON + markdown), curves, example heatmaps, submission files.

Pixel metrics are the exact Fishyscapes (bdlb) definitions pooled over all pixels with label 0 or 1
(:mod:`synboost.metrics.pixel`); where the dataset also has semantic labels, the segmenter's mIoU is reported,
and for each method the inlier classes its false positives fall on at its pixel best-F1 threshold
(:mod:`synboost.metrics.attribution`; ``false_positive_classes`` in metrics.json, the most over-represented in
metrics.md).
On SegmentMeIfYouCan-style data (the anomaly and obstacle tracks, and LostAndFound, which SMIYC scores with the
obstacle-track settings), or when asked, the SMIYC component metrics are added: sIoU, PPV and mean F1 at each
method's pixel-level best-F1 threshold, as the reference computes them (:mod:`synboost.metrics.components`).
Frames without public labels (SMIYC's hidden test frames) are only run when submission files are written.
Bad files are skipped and listed in the report (``skipped``: index, name, file, one-line reason), never fatal; the
entries of the dataset's image folders that are not images are listed too (``ignored``: path, reason).

Memory: per image only the scores at labelled pixels (float32), their labels and a 1-bit map of where those
pixels lie are kept; beyond ``memory_gb`` they go to a scratch folder on disk. That is all the metrics need: the
component metrics zero predictions on void pixels, so the full map rebuilt with ``-inf`` there binarises exactly as
the original. The pixel curve is computed in two streaming passes (positives, then negatives).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from synboost.data.io import scan_images, write_image, write_json, write_npy, write_text
from synboost.data.labels import CLASS_NAMES
from synboost.errors import ConfigError, DataError, ImageReadError
from synboost.jobs.submission import Submission, parse_formats, smiyc_dataset_name, write_validation_performance
from synboost.jobs.tables import (  # noqa: F401
    COMPONENT_COLUMNS,
    PIXEL_COLUMNS,
    combined_table,
    dataset_names,
    markdown_table,
    write_combined,
)
from synboost.metrics.attribution import class_false_positives
from synboost.metrics.components import PRESETS, ComponentMetrics
from synboost.metrics.pixel import pixel_curve_two_pass
from synboost.metrics.segmentation import ConfusionMatrix
from synboost.viz import overlay, plot_curves, tile

COMPONENT_CHOICES = ("auto", "anomaly", "obstacle", "off")


def smiyc_track(dataset) -> str | None:
    """The SMIYC component preset a dataset is scored with by the benchmark (None: not a SMIYC-style set)."""
    from synboost.data.benchmarks import LostAndFoundDataset, SMIYCDataset

    if isinstance(dataset, SMIYCDataset):
        return dataset.track
    return "obstacle" if isinstance(dataset, LostAndFoundDataset) else None


def component_preset(dataset, components: str | bool | None) -> str | None:
    """None / "" = only SMIYC-style datasets; "auto" / True = every dataset (its track, else "anomaly");
    "anomaly" / "obstacle" = every dataset with that preset; "off" / False = never."""
    if isinstance(components, str):  # YAML / --set turn a bare off / on into False / True
        components = {"false": "off", "no": "off", "true": "auto", "on": "auto", "yes": "auto"}.get(
            components.lower(), components)
    if components in (None, ""):
        return smiyc_track(dataset)
    if components is False or components == "off":
        return None
    if components is True or components == "auto":
        return smiyc_track(dataset) or "anomaly"
    if components in PRESETS:
        return str(components)
    raise ConfigError(f"components={components!r}: choose one of {', '.join(COMPONENT_CHOICES)}")


class _ScoreStore:
    """Per image: each method's scores at the labelled pixels, their labels, and (for components) a packed bit
    map of where they lie; in memory up to ``budget`` bytes, then as ``.npy`` files in a scratch folder."""

    def __init__(self, budget: float, scratch_parent: Path | None, layout: bool) -> None:
        self.budget, self.parent, self.layout = budget, scratch_parent, layout
        self.images: list[dict[str, Any]] = []
        self.bytes = self.spilled = 0
        self.scratch: Path | None = None

    def _keep(self, arr: np.ndarray) -> np.ndarray | Path:
        if self.bytes + arr.nbytes <= self.budget:
            self.bytes += arr.nbytes
            return arr
        if self.scratch is None:
            if self.parent is not None:
                self.parent.mkdir(parents=True, exist_ok=True)
            self.scratch = Path(tempfile.mkdtemp(prefix=".eval-scratch-", dir=self.parent))
        self.spilled += 1
        path = self.scratch / f"{self.spilled}.npy"
        write_npy(path, arr)
        return path

    def add(self, valid: np.ndarray, labels: np.ndarray, scores: dict[str, np.ndarray],
            classes: np.ndarray | None = None) -> None:
        """One image: ``labels`` / ``scores`` / ``classes`` (semantic train ids, where the data has them) at
        its labelled pixels ``valid``."""
        self.images.append({
            "shape": valid.shape, "valid": np.packbits(valid) if self.layout else None, "labels": self._keep(labels),
            "scores": {m: self._keep(s) for m, s in scores.items()},
            "classes": self._keep(classes) if classes is not None else None})

    @property
    def has_classes(self) -> bool:
        return bool(self.images) and all(e["classes"] is not None for e in self.images)

    def triples(self, method: str):
        """(scores, labels, semantic classes) per image (only when :attr:`has_classes`)."""
        for e in self.images:
            yield self._load(e["scores"][method]), self._load(e["labels"]), self._load(e["classes"])

    @staticmethod
    def _load(x: np.ndarray | Path) -> np.ndarray:
        return np.load(x, mmap_mode="r") if isinstance(x, Path) else x

    def pairs(self, method: str):
        for e in self.images:
            yield self._load(e["scores"][method]), self._load(e["labels"])

    def full_maps(self, method: str):
        """(H x W float32 scores with -inf off the labelled pixels, H x W labels with 255 there) per image."""
        for e in self.images:
            shape = e["shape"]
            valid = np.unpackbits(e["valid"], count=shape[0] * shape[1]).reshape(shape).view(bool)
            s = np.full(shape, -np.inf, np.float32)
            s[valid] = self._load(e["scores"][method])
            lab = np.full(shape, 255, np.uint8)
            lab[valid] = self._load(e["labels"])
            yield s, lab

    def close(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


def _resize(arr: np.ndarray, size: Sequence[int] | None, nearest: bool) -> np.ndarray:
    if not size or tuple(arr.shape[:2]) == tuple(size):
        return arr
    h, w = int(size[0]), int(size[1])
    shrink = h <= arr.shape[0] and w <= arr.shape[1]
    mode = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(arr if nearest else arr.astype(np.float32, copy=False), (w, h), interpolation=mode)


class _Writers:
    """Submission files written in two background threads while the detector runs."""

    def __init__(self, targets: dict[str, Submission]) -> None:
        self.targets = targets
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="synboost-submit") if targets else None
        self.pending: list[Future] = []

    def submit(self, name: str, maps: dict[str, np.ndarray], segmentation: np.ndarray | None) -> None:
        if self.pool is None:
            return
        for m, target in self.targets.items():
            self.pending.append(self.pool.submit(target.write, name, maps[m], segmentation))
        while len(self.pending) > 8:
            self.pending.pop(0).result()

    def close(self) -> None:
        if self.pool is not None:
            try:
                for f in self.pending:
                    f.result()
            finally:
                self.pool.shutdown(wait=True)


def _collect(detector, dataset, methods, store, writers, progress, max_images, examples, eval_size, gallery):
    cm = None
    skipped, done, unlabelled, shown = [], [], [], []
    n = len(dataset) if not max_images else min(len(dataset), max_images)
    bs = max(1, getattr(detector, "batch_size", 1))
    bar = tqdm(total=n, desc="evaluate", unit="img", disable=not progress, leave=False)
    for start in range(0, n, bs):
        samples = []
        for i in range(start, min(start + bs, n)):
            try:
                s = dataset[i]
            except ImageReadError as e:  # the file that failed (the image or a label), its one-line reason
                name, image = (getattr(dataset, a, None) for a in ("names", "image_path"))
                skipped.append({"index": i, "name": name[i] if name else None, "reason": str(e),
                                "file": getattr(e, "path", None) or (str(image(i)) if image else None)})
                continue
            if "anomaly" in s or writers.pool is not None:
                samples.append(s)
            else:
                unlabelled.append(s["name"])
        if samples:
            outs = detector.run([s["image"] for s in samples], methods)
            for s, o in zip(samples, outs):
                writers.submit(s["name"], o, o.get("segmentation"))
                if "anomaly" not in s:
                    unlabelled.append(s["name"])
                    continue
                anomaly = _resize(s["anomaly"], eval_size, nearest=True)
                valid = anomaly <= 1
                scored = {m: _resize(o[m], eval_size, nearest=False)[valid].astype(np.float32) for m in methods}
                label = _resize(s["label"], eval_size, nearest=True) if "label" in s else None
                store.add(valid, anomaly[valid], scored, label[valid].astype(np.uint8) if label is not None else None)
                if gallery is not None:  # per-image AP, and views of each method's worst images (report.html)
                    gallery.add(s["name"], s["image"], s["anomaly"], {m: o[m] for m in methods}, anomaly[valid],
                                scored)
                if label is not None:
                    cm = cm or ConfusionMatrix(19)
                    cm.update(_resize(o["segmentation"], eval_size, True), label)
                if len(shown) < examples and (s["anomaly"] == 1).any():
                    shown.append((s, o))
                done.append(s["name"])
        bar.update(min(start + bs, n) - start)
    bar.close()
    return cm, skipped, done, unlabelled, shown


def evaluate(detector, dataset, methods: Sequence[str] | None = None, out_dir: str | os.PathLike | None = None,
             dataset_name: str = "dataset", progress: bool = True, max_images: int | None = None,
             examples: int = 4, fpr_rule: str = "first_ge", components: str | bool | None = None,
             eval_size: Sequence[int] | None = None, submission: str | os.PathLike | None = None,
             formats: str | Sequence[str] | None = None, memory_gb: float = 4.0,
             curves: dict | None = None, gallery=None, html: bool = True) -> dict:
    """Score ``dataset`` with every method in ``methods``; returns the report dict (also written if ``out_dir``).

    ``detector``: a detector or a pipeline file; ``dataset``: a dataset or a spec ``KIND:DIR`` (see
    :func:`synboost.data.kinds.open_dataset`); ``methods``: default the detector's own method.

    ``components``: see :func:`component_preset`. ``eval_size`` (H, W): score maps (area) and labels (nearest)
    resized before scoring (SynBoost's 256 x 512 protocol); default the labels' own size. ``submission``: a folder
    that receives each method's submission files for every frame, labelled or not (:mod:`synboost.submission`):
    ``formats`` "smiyc" -> ``anomaly_p/<method>/<SMIYC dataset>/<fid>.hdf5``, "fishyscapes" ->
    ``fishyscapes/<method>/<dataset_name>/<id>_anomaly.npy`` + ``_segmentation.npy`` + the pull request's
    ``validation_performance.json``; default: "fishyscapes" for Fishyscapes data, else "smiyc". ``curves``: a
    dict that receives each method's PR / ROC arrays (for figures that combine several runs). ``gallery``: a
    :class:`synboost.jobs.report.Gallery` that receives each image's AP per method and the views of each
    method's worst images; ``html``: also write ``out_dir/report.html`` (:mod:`synboost.jobs.report`).
    """
    from synboost.data.benchmarks import FishyscapesDataset

    t0 = time.time()
    if isinstance(detector, (str, os.PathLike)):
        from synboost.detectors.detector import load_pipeline

        detector = load_pipeline(detector)
    if isinstance(dataset, str):
        from synboost.data.kinds import open_dataset

        dataset = open_dataset(dataset)
    methods = list(methods) if methods is not None else [detector.method]
    preset = component_preset(dataset, components)
    fmts = parse_formats(formats) or (("fishyscapes",) if isinstance(dataset, FishyscapesDataset) else ("smiyc",))
    root = Path(submission) if submission else None
    targets = {m: Submission(root, fmts, m, smiyc_dataset_name(dataset) or dataset_name,
                             root / "fishyscapes" / m / dataset_name) for m in methods} if root else {}
    store = _ScoreStore(memory_gb * 2**30, Path(out_dir) if out_dir else None, layout=preset is not None)
    writers = _Writers(targets)
    if gallery is None and out_dir is not None and html:
        from synboost.jobs.report import Gallery

        gallery = Gallery()
    try:
        try:
            cm, skipped, done, unlabelled, shown = _collect(detector, dataset, methods, store, writers, progress,
                                                            max_images, examples, eval_size, gallery)
        finally:
            writers.close()
        if not done and root is None:
            raise DataError(f"{dataset_name}: no image with anomaly labels could be evaluated ({len(skipped)} "
                            f"skipped, {len(unlabelled)} without labels); evaluation needs a labelled split")
        rows, curve_data = _score(store, methods, preset, fpr_rule) if done else ([], {})
    finally:
        store.close()
    ignored, hidden = folder_entries(dataset)
    report: dict[str, Any] = {
        "dataset": dataset_name, "images": len(done), "skipped": skipped, "ignored": ignored,
        "counts": {"done": len(done), "skipped": len(skipped), "ignored": len(ignored), "hidden": hidden,
                   "unlabelled": len(unlabelled)}, "unlabelled": len(unlabelled),
        "fpr_rule": fpr_rule, "eval_size": list(eval_size) if eval_size else None, "results": rows,
        "seconds": time.time() - t0,
    }
    if rows:
        report["anomaly_pixel_ratio"] = rows[0]["n_pos"] / max(rows[0]["n_pos"] + rows[0]["n_neg"], 1)
    if preset is not None:
        pred, gt = PRESETS[preset]
        report["components"] = {"preset": preset, "min_pred_size": pred, "min_gt_size": gt,
                                "threshold": "each method's pixel best-F1 threshold (score > threshold)"}
    if cm is not None:
        report["miou"] = float(cm.compute().miou)
    if root is not None:
        report["submission"] = {"dir": str(root), "formats": list(fmts), "frames": len(done) + len(unlabelled)}
        if "fishyscapes" in fmts:
            for r in rows:
                write_validation_performance(targets[r["method"]].fishyscapes_folder, r["ap"], r["fpr95"])
    if out_dir is not None:
        _write_outputs(Path(out_dir), report, curve_data, shown, methods, dataset_name)
        if html:
            from synboost.jobs.report import eval_config, write_eval_report

            write_eval_report(out_dir, [report], {dataset_name: curve_data}, {dataset_name: gallery}, eval_config(
                detector, methods, dataset=dataset_name, max_images=max_images, fpr_rule=fpr_rule, components=preset,
                eval_size=eval_size, memory_gb=memory_gb))
    if curves is not None:
        curves.update(curve_data)
    return report


def folder_entries(dataset) -> tuple[list[dict[str, str]], int]:
    """The entries of the folders holding ``dataset``'s images that are not images (``{"path", "reason"}``:
    dangling links, folders named like images, other suffixes, special files; subfolders belong to layouts and
    are not listed), and the count of hidden ones. Empty for a dataset without ``image_path``."""
    where = getattr(dataset, "image_path", None)
    ignored, hidden = [], 0
    for folder in sorted({Path(where(i)).parent for i in range(len(dataset))} if where else ()):
        listing = scan_images(folder)
        ignored += [e.as_dict() for e in listing.ignored if e.kind != "subfolder"]
        hidden += listing.hidden
    return ignored, hidden


def _score(store: _ScoreStore, methods, preset, fpr_rule):
    rows, curve_data = [], {}
    for m in methods:
        curve = pixel_curve_two_pass(lambda m=m: store.pairs(m))
        res = curve.metrics(fpr_rule)
        row: dict[str, Any] = {"method": m, "ap": res.ap, "fpr95": res.fpr95, "auroc": res.auroc,
                               "n_pos": res.n_pos, "n_neg": res.n_neg}
        if store.has_classes:  # which inlier classes the false alarms fall on, at the best-F1 operating point
            threshold = curve.best_f1_threshold()[0]
            if not np.isnan(threshold):
                cfp = class_false_positives(store.triples(m), threshold)
                row["false_positive_classes"] = {"threshold": threshold, "fp": cfp.fp.tolist(),
                                                 "inliers": cfp.inliers.tolist(), "top": cfp.top(CLASS_NAMES)}
        if preset is not None:
            threshold, best_f1 = curve.best_f1_threshold()
            row.update(component_threshold=threshold, pixel_best_f1=best_f1)
            if not np.isnan(threshold):
                comp = ComponentMetrics(threshold, preset)
                for scores, labels in store.full_maps(m):
                    comp.update(scores, labels)
                c = comp.compute()
                row.update(siou=c.siou_gt, ppv=c.ppv, f1_mean=c.f1_mean, f1_25=c.f1_25, f1_50=c.f1_50,
                           f1_75=c.f1_75, n_gt_components=c.n_gt, n_pred_components=c.n_pred)
            else:
                row.update(siou=float("nan"), ppv=float("nan"), f1_mean=float("nan"))
        rows.append(row)
        c = curve.curves()
        curve_data[m] = {"recall": c.recall, "precision": c.precision, "fpr": c.fpr, "tpr": c.tpr,
                         "ap": res.ap, "auroc": res.auroc}
    return rows, curve_data


def _write_outputs(out: Path, report, curve_data, shown, methods, dataset_name) -> None:
    write_json(out / "metrics.json", report)
    write_text(out / "metrics.md", markdown_table(report))
    if curve_data:
        plot_curves(curve_data, out / "curves.png", title=f"{dataset_name}: {report['images']} images")
    for k, (s, o) in enumerate(shown):
        panels = [s["image"]] + [overlay(s["image"], o[m]) for m in methods]
        gt = np.where(s["anomaly"] == 1, 255, np.where(s["anomaly"] == 255, 96, 0)).astype(np.uint8)
        write_image(out / "examples" / f"{k:02d}_{s['name']}.png",
                    tile(panels + [gt], cols=min(4, len(panels) + 1),
                         titles=["image"] + list(methods) + ["ground truth"]))


def evaluate_many(detector, specs: Sequence[str], methods: Sequence[str], out: str | os.PathLike | None = None,
                  echo=print, **kw) -> list[dict]:
    """:func:`evaluate` on each dataset spec (``kind:DIR``; results in ``out/<name>/``), then the combined table
    in ``out/summary.md`` and every dataset in one ``out/report.html``. ``echo`` receives each dataset's table as
    it finishes."""
    from synboost.data.kinds import open_dataset
    from synboost.jobs.report import Gallery, eval_config, write_eval_report

    datasets = [(name, open_dataset(spec)) for name, spec in zip(dataset_names(specs), specs)]
    reports, curves, galleries = [], {}, {}
    for name, ds in datasets:
        curves[name], galleries[name] = {}, Gallery() if out is not None else None
        rep = evaluate(detector, ds, methods, Path(out) / name if out else None, dataset_name=name,
                       curves=curves[name], gallery=galleries[name], html=False, **kw)
        reports.append(rep)
        echo(markdown_table(rep))
    if out is not None:
        write_combined(reports, out)
        write_eval_report(out, reports, curves, galleries, eval_config(detector, methods, data=list(specs), **kw))
    return reports
