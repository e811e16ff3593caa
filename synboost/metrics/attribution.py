"""Where a detector's false alarms fall: at one operating point, the inlier pixels it scores as anomalous, counted
by their semantic class and set against all inlier pixels of that class.

A class whose share of the false positives is many times its share of the inlier pixels is one the detector
confuses with anomalies (SynBoost's, for example, fire on the thin classes its generator cannot redraw). numpy
only, streamed over images like the pixel curve.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np


@dataclass(frozen=True)
class ClassFalsePositives:
    """``fp[c]``: inlier pixels of class ``c`` scored above ``threshold``; ``inliers[c]``: all inlier pixels of
    class ``c`` (pixels of unknown class, 255, are in neither)."""

    threshold: float
    fp: np.ndarray
    inliers: np.ndarray

    def top(self, names: Sequence[str], min_share: float = 0.02, n: int = 3) -> list[dict]:
        """The ``n`` classes most over-represented among the false positives (share of the false positives /
        share of the inlier pixels, both among the pixels of a known class), of those holding at least ``min_share``
        of the false positives."""
        fp_total, in_total = int(self.fp.sum()), int(self.inliers.sum())
        if fp_total == 0 or in_total == 0:
            return []
        rows = []
        for c in np.flatnonzero(self.fp):
            fp_share, in_share = self.fp[c] / fp_total, self.inliers[c] / in_total
            if fp_share >= min_share:
                rows.append({"class": names[c] if c < len(names) else str(c), "fp_share": float(fp_share),
                             "inlier_share": float(in_share), "ratio": float(fp_share / in_share)})
        return sorted(rows, key=lambda r: -r["ratio"])[:n]


def class_false_positives(chunks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], threshold: float,
                          n_classes: int = 19) -> ClassFalsePositives:
    """Count over ``chunks`` of (scores, anomaly labels 0 / 1, semantic class ids), arrays of one shape per chunk:
    the inlier pixels (label 0) with ``score > threshold`` per class, and all inlier pixels per class. Class ids
    at or above ``n_classes`` (255: unknown) are left out."""
    fp = np.zeros(n_classes, np.int64)
    inliers = np.zeros(n_classes, np.int64)
    for scores, labels, classes in chunks:
        scores, labels, classes = (np.asarray(a).ravel() for a in (scores, labels, classes))
        if not scores.shape == labels.shape == classes.shape:
            raise ValueError(f"scores, labels and classes differ in size: {scores.shape}, {labels.shape}, "
                             f"{classes.shape}")
        keep = (labels == 0) & (classes < n_classes)
        cls = classes[keep].astype(np.int64)
        inliers += np.bincount(cls, minlength=n_classes)
        fp += np.bincount(cls[scores[keep] > threshold], minlength=n_classes)
    return ClassFalsePositives(float(threshold), fp, inliers)
