"""SegmentMeIfYouCan component-level metrics (``road_anomaly_benchmark`` ``MetricSegment``, configs
``SegEval-AnomalyTrack`` / ``SegEval-ObstacleTrack``).

Per image, following ``default_instancer`` and ``segment_metrics`` of the reference code:

1. Binarise: predicted anomaly = ``score > threshold`` (strictly; scores cast to ``dtype`` first), zeroed on void
   pixels. The reference uses the method's pixel-level best-F1 threshold on the dataset:
   :meth:`synboost.metrics.pixel.PixelCurve.best_f1_threshold` returns it for this ``>`` rule.
2. Connected components with 8-connectivity of the GT anomaly mask (label 1) and of the prediction.
3. Predicted components smaller than ``min_pred_size`` pixels are removed; GT components smaller than
   ``min_gt_size`` become void. Everything is then restricted to the ROI (non-void pixels), so predicted pixels on
   voided GT components no longer count.
4. For each GT component k, with P_k the predicted components touching k:
   sIoU(k) = |k ∩ P_k| / (|k ∪ P_k| - |P_k ∩ other GT components|).
   For each predicted component p: PPV(p) = |p ∩ GT| / |p|.
5. For tau in 0.25, 0.30, ..., 0.75 (``np.linspace(0.25, 0.75, 11)``): TP = #GT components with sIoU >= tau,
   FN = #GT components with sIoU < tau, FP = #predicted components with PPV < tau, F1 = 2TP / (2TP + FN + FP),
   with the counts summed over the dataset. Reported: mean sIoU over all GT components, mean PPV over all predicted
   components, mean F1 over the 11 tau, and F1 at 0.25 / 0.5 / 0.75.

Void here is any label other than 0 and 1 (the reference: label 255; its data has no other values).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from synboost.errors import ConfigError, DataError

#: (min_pred_size, min_gt_size) of the two SMIYC tracks.
PRESETS: dict[str, tuple[int, int]] = {"anomaly": (500, 100), "obstacle": (50, 10)}
#: The 11 sIoU / PPV thresholds, exactly the reference's values.
TAUS: np.ndarray = np.linspace(0.25, 0.75, 11, endpoint=True)


@dataclass(frozen=True)
class ComponentResult:
    """Dataset-level component metrics; ``tp``, ``fn``, ``fp`` and ``f1`` are per tau in ``taus``."""

    siou_gt: float
    ppv: float
    f1_mean: float
    f1_25: float
    f1_50: float
    f1_75: float
    n_gt: int
    n_pred: int
    taus: tuple[float, ...]
    tp: tuple[int, ...]
    fn: tuple[int, ...]
    fp: tuple[int, ...]
    f1: tuple[float, ...]

    def as_dict(self) -> dict[str, object]:
        """Plain-Python dict (floats, ints, lists), ready for JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of a boolean mask: the label image (0 = background) and each label's area."""
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    return lab, stats[:n, cv2.CC_STAT_AREA].astype(np.int64)


def component_scores(
    prediction: np.ndarray, labels: np.ndarray, min_pred_size: int, min_gt_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image sIoU of each GT component and PPV of each predicted component.

    ``prediction`` is a boolean H x W mask (already thresholded), ``labels`` H x W with 0 / 1 / void.
    """
    if prediction.shape != labels.shape or prediction.ndim != 2:
        raise DataError(f"component metrics need 2-D maps of equal shape, got {prediction.shape} and {labels.shape}")
    gt = labels == 1
    void = ~gt & (labels != 0)
    pred = np.ascontiguousarray(prediction & ~void)
    gt_lab, gt_area = _components(np.ascontiguousarray(gt))
    pred_lab, pred_area = _components(pred)

    pred_keep = pred_area >= min_pred_size
    pred_keep[0] = False
    gt_keep = gt_area >= min_gt_size
    gt_keep[0] = True  # background stays in the ROI; only small GT components become void
    roi = ~void & gt_keep[gt_lab]
    g = gt_lab[roi]
    p = np.where(pred_keep, np.arange(pred_area.size), 0)[pred_lab[roi]]

    gt_size = np.bincount(g, minlength=gt_area.size)
    pred_size = np.bincount(p, minlength=pred_area.size)
    both = (g > 0) & (p > 0)
    pairs, overlap = np.unique(g[both].astype(np.int64) * pred_area.size + p[both], return_counts=True)
    pair_gt, pair_pred = np.divmod(pairs, pred_area.size)
    pred_on_gt = np.bincount(pair_pred, weights=overlap, minlength=pred_area.size)  # |p ∩ GT|

    # sIoU(k) = I / (|P_k| + |k| - I - (|P_k ∩ GT| - I)) = I / (|P_k| + |k| - |P_k ∩ GT|)
    inter = np.bincount(pair_gt, weights=overlap, minlength=gt_area.size)
    covered = np.bincount(pair_gt, weights=pred_size[pair_pred], minlength=gt_area.size)
    covered_on_gt = np.bincount(pair_gt, weights=pred_on_gt[pair_pred], minlength=gt_area.size)
    gt_ids = np.flatnonzero(gt_size[1:]) + 1
    siou = inter[gt_ids] / (covered[gt_ids] + gt_size[gt_ids] - covered_on_gt[gt_ids])

    pred_ids = np.flatnonzero(pred_size[1:]) + 1
    ppv = pred_on_gt[pred_ids] / pred_size[pred_ids]
    return siou, ppv


class ComponentMetrics:
    """Accumulates SMIYC component metrics image by image (see the module docstring for the definitions).

    ``threshold``: predicted anomaly = ``score > threshold``. ``preset``: "anomaly" (predicted components >= 500 px,
    GT components >= 100 px) or "obstacle" (50 / 10); ``min_pred_size`` / ``min_gt_size`` override it.
    """

    def __init__(
        self,
        threshold: float,
        preset: Literal["anomaly", "obstacle"] = "anomaly",
        *,
        min_pred_size: int | None = None,
        min_gt_size: int | None = None,
        dtype: DTypeLike = np.float32,
    ) -> None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown component preset {preset!r}; choose one of {', '.join(PRESETS)}")
        if np.isnan(threshold):
            raise ConfigError("component threshold is NaN; pass a number (e.g. PixelCurve.best_f1_threshold())")
        if np.dtype(dtype).kind != "f":
            raise ConfigError(f"score dtype must be a floating type, got {np.dtype(dtype)}")
        default_pred, default_gt = PRESETS[preset]
        self.threshold = float(threshold)
        self.preset = preset
        self.min_pred_size = default_pred if min_pred_size is None else int(min_pred_size)
        self.min_gt_size = default_gt if min_gt_size is None else int(min_gt_size)
        self.dtype = np.dtype(dtype)
        self._siou: list[np.ndarray] = []
        self._ppv: list[np.ndarray] = []

    def _config(self) -> tuple[float, int, int, np.dtype]:
        return self.threshold, self.min_pred_size, self.min_gt_size, self.dtype

    def update(self, scores: ArrayLike, labels: ArrayLike) -> None:
        """Add one image: an H x W anomaly score map and its H x W label map (0 / 1 / void)."""
        s = np.asarray(scores)
        lab = np.asarray(labels)
        if s.shape != lab.shape:
            raise DataError(f"scores shape {s.shape} differs from labels shape {lab.shape}")
        prediction = s.astype(self.dtype, copy=False) > self.threshold
        siou, ppv = component_scores(prediction, lab, self.min_pred_size, self.min_gt_size)
        self._siou.append(siou)
        self._ppv.append(ppv)

    def merge(self, other: ComponentMetrics) -> ComponentMetrics:
        """Add the components of ``other`` (same threshold and sizes); returns ``self``."""
        if other._config() != self._config():
            raise ConfigError("cannot merge ComponentMetrics with different threshold, sizes or dtype")
        self._siou.extend(other._siou)
        self._ppv.extend(other._ppv)
        return self

    def compute(self) -> ComponentResult:
        """Dataset-level metrics; means are ``nan`` without components, F1 is ``nan`` when 2TP + FN + FP = 0."""
        siou = np.concatenate(self._siou) if self._siou else np.empty(0)
        ppv = np.concatenate(self._ppv) if self._ppv else np.empty(0)
        tp = np.array([np.count_nonzero(siou >= t) for t in TAUS])
        fn = siou.size - tp
        fp = np.array([np.count_nonzero(ppv < t) for t in TAUS])
        denominator = 2 * tp + fn + fp
        f1 = np.divide(2.0 * tp, denominator, out=np.full(TAUS.size, np.nan), where=denominator > 0)
        return ComponentResult(
            siou_gt=float(siou.mean()) if siou.size else float("nan"),
            ppv=float(ppv.mean()) if ppv.size else float("nan"),
            f1_mean=float(f1.mean()),
            f1_25=float(f1[0]),
            f1_50=float(f1[5]),
            f1_75=float(f1[10]),
            n_gt=int(siou.size),
            n_pred=int(ppv.size),
            taus=tuple(float(t) for t in TAUS),
            tp=tuple(int(v) for v in tp),
            fn=tuple(int(v) for v in fn),
            fp=tuple(int(v) for v in fp),
            f1=tuple(float(v) for v in f1),
        )
