"""Semantic-segmentation metrics from an accumulated confusion matrix (Cityscapes ``evalPixelLevelSemanticLabeling``
conventions on train ids).

Pixels whose ground truth is outside ``0 .. num_classes - 1`` (255 = ignore, or any other id) are skipped.
IoU_c = TP_c / (TP_c + FP_c + FN_c), ``nan`` for a class absent from both prediction and ground truth;
mIoU = mean over the classes with a defined IoU; pixel accuracy = correct / counted pixels.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from synboost.errors import ConfigError, DataError


@dataclass(frozen=True)
class SegmentationResult:
    """Per-class IoU (``nan`` = class absent in both), mIoU and pixel accuracy."""

    iou: tuple[float, ...]
    miou: float
    pixel_accuracy: float
    class_names: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        """Plain-Python dict with the per-class IoU keyed by class name (``nan`` kept)."""
        return {
            "miou": self.miou,
            "pixel_accuracy": self.pixel_accuracy,
            "iou": dict(zip(self.class_names, self.iou)),
        }


class ConfusionMatrix:
    """``matrix[t, p]`` = number of pixels of ground-truth class ``t`` predicted as ``p``."""

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"{len(class_names)} class names for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.class_names = tuple(class_names) if class_names is not None else tuple(str(c) for c in range(num_classes))
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction: ArrayLike, target: ArrayLike) -> None:
        """Add one prediction / ground-truth pair of class-id maps (same shape)."""
        pred = np.asarray(prediction)
        gt = np.asarray(target)
        if pred.shape != gt.shape:
            raise DataError(f"prediction shape {pred.shape} differs from target shape {gt.shape}")
        if pred.dtype.kind not in "iub" or gt.dtype.kind not in "iub":
            raise DataError(f"class maps must be integer arrays, got {pred.dtype} and {gt.dtype}")
        valid = (gt >= 0) & (gt < self.num_classes)
        p = pred[valid].astype(np.int64)
        if p.size and (p.min() < 0 or p.max() >= self.num_classes):
            raise DataError(f"predicted class ids must lie in 0..{self.num_classes - 1}, found {p.min()}..{p.max()}")
        index = gt[valid].astype(np.int64) * self.num_classes + p
        self.matrix += np.bincount(index, minlength=self.num_classes**2).reshape(self.num_classes, self.num_classes)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add the counts of ``other`` (same number of classes); returns ``self``."""
        if other.num_classes != self.num_classes:
            raise ConfigError(f"cannot merge confusion matrices of {other.num_classes} and {self.num_classes} classes")
        self.matrix += other.matrix
        return self

    def compute(self) -> SegmentationResult:
        """Per-class IoU, mIoU (``nan`` if no class is defined) and pixel accuracy (``nan`` if no pixel counted)."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        iou = np.divide(tp, union, out=np.full(self.num_classes, np.nan), where=union > 0)
        defined = iou[~np.isnan(iou)]
        total = self.matrix.sum()
        return SegmentationResult(
            iou=tuple(float(v) for v in iou),
            miou=float(defined.mean()) if defined.size else float("nan"),
            pixel_accuracy=float(tp.sum() / total) if total else float("nan"),
            class_names=self.class_names,
        )
