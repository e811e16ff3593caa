"""Obstacles as objects: the connected components of a thresholded anomaly map, and their SMIYC component scores.

``find_objects(anomaly_map, threshold, min_area)`` -> one dict per object (JSON-ready)::

    {"id": 1, "bbox": [x, y, w, h], "area": 412, "centroid": [cx, cy], "mean_score": 0.71, "max_score": 0.98}

* a pixel is anomalous when ``score > threshold`` (strictly, on float32 scores: the rule of
  :mod:`synboost.metrics.components`, so thresholds from :func:`synboost.jobs.calibrate.threshold_from_curve` select
  exactly the pixels they were calibrated on); NaN is never anomalous;
* objects are the 8-connected components (OpenCV ``connectedComponentsWithStats``) of those pixels, as the SMIYC
  benchmark groups its predictions; components smaller than ``min_area`` pixels are dropped;
* ``bbox`` is x, y (the top-left pixel), width, height in pixels; ``centroid`` the mean pixel position (x, y);
  ``mean_score`` / ``max_score`` over the object's pixels; objects are numbered in raster order of their first pixel.

:func:`score_objects` scores the objects of many maps against labelled data with the SMIYC component metrics
(sIoU, PPV, mean F1 over tau 0.25..0.75) of :mod:`synboost.metrics.components`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import cv2
import numpy as np
from numpy.typing import ArrayLike

from synboost.errors import ConfigError, DataError
from synboost.metrics.components import ComponentMetrics, ComponentResult

#: objects smaller than this many pixels are dropped (SMIYC's obstacle track drops predicted components < 50 px)
DEFAULT_MIN_AREA = 50


@dataclasses.dataclass(frozen=True)
class ObjectSettings:
    """How objects are cut out of anomaly maps: ``score > threshold``, components of ``min_area`` pixels or more,
    ``connectivity`` 8 (or 4). ``source`` says where the threshold came from (for reports)."""

    threshold: float
    min_area: int = DEFAULT_MIN_AREA
    connectivity: int = 8
    source: str = ""

    def __post_init__(self) -> None:
        if not np.isfinite(self.threshold):
            raise ConfigError(f"object threshold {self.threshold}: give a finite number")
        if self.min_area < 0:
            raise ConfigError(f"min_area={self.min_area}: give 0 or more pixels")
        if self.connectivity not in (4, 8):
            raise ConfigError(f"connectivity={self.connectivity}: choose 4 or 8")

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for reports."""
        return dataclasses.asdict(self)

    def find(self, anomaly_map: ArrayLike) -> list[dict[str, Any]]:
        """:func:`find_objects` with these settings."""
        return find_objects(anomaly_map, self.threshold, self.min_area, self.connectivity)


def _map2d(anomaly_map: ArrayLike) -> np.ndarray:
    s = np.asarray(anomaly_map)
    if s.ndim != 2:
        raise DataError(f"objects need a 2-D anomaly map, got shape {s.shape}")
    return s.astype(np.float32, copy=False)


def label_objects(anomaly_map: ArrayLike, threshold: float, min_area: int = DEFAULT_MIN_AREA,
                  connectivity: int = 8) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(H x W int32 label image: 0 = background, k = object k; the objects as :func:`find_objects` returns them)."""
    s = _map2d(anomaly_map)
    mask = s > np.float32(threshold)
    n, lab, stats, cents = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=connectivity,
                                                            ltype=cv2.CV_32S)
    area = stats[:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(area >= max(int(min_area), 1))
    keep = keep[keep > 0]
    new_id = np.zeros(n, np.int32)
    new_id[keep] = np.arange(1, keep.size + 1, dtype=np.int32)
    labels = new_id[lab]
    if keep.size == 0:
        return labels, []
    ids, vals = labels[mask], s[mask]
    sums = np.bincount(ids, weights=vals, minlength=keep.size + 1)
    maxes = np.full(keep.size + 1, -np.inf, np.float32)
    np.maximum.at(maxes, ids, vals)
    objects = []
    for k, old in enumerate(keep, start=1):
        x, y, w, h, a = (int(v) for v in stats[old, :5])
        objects.append({"id": k, "bbox": [x, y, w, h], "area": a,
                        "centroid": [round(float(cents[old, 0]), 2), round(float(cents[old, 1]), 2)],
                        "mean_score": float(sums[k] / a), "max_score": float(maxes[k])})
    return labels, objects


def find_objects(anomaly_map: ArrayLike, threshold: float, min_area: int = DEFAULT_MIN_AREA,
                 connectivity: int = 8) -> list[dict[str, Any]]:
    """The objects of one anomaly map (see the module docstring): a JSON-ready list of dicts with ``id``, ``bbox``
    (x, y, w, h), ``area``, ``centroid`` (x, y), ``mean_score`` and ``max_score``."""
    return label_objects(anomaly_map, threshold, min_area, connectivity)[1]


def score_objects(pairs: Iterable[tuple[ArrayLike, ArrayLike]], threshold: float,
                  min_area: int = DEFAULT_MIN_AREA, min_gt_size: int = 10, connectivity: int = 8) -> ComponentResult:
    """SMIYC component metrics of the objects found in each ``(anomaly_map, labels)`` pair (labels 0 inlier, 1
    anomaly, anything else void).

    The predicted mask of an image is the union of its objects (:func:`label_objects` with ``threshold`` and
    ``min_area``); it is then scored as the reference scores a prediction (:func:`synboost.metrics.components
    .component_scores`): zeroed on void, 8-connected components of at least ``min_area`` pixels (removing void
    can split or shrink an object), GT components smaller than ``min_gt_size`` voided. Returns the dataset-level
    :class:`~synboost.metrics.components.ComponentResult` (mean sIoU, mean PPV, mean F1, ...).
    """
    metrics = ComponentMetrics(0.5, "obstacle", min_pred_size=min_area, min_gt_size=min_gt_size)
    for anomaly_map, labels in pairs:
        lab = np.asarray(labels)
        objects, _ = label_objects(anomaly_map, threshold, min_area, connectivity)
        if objects.shape != lab.shape:
            raise DataError(f"anomaly map {objects.shape} and labels {lab.shape} differ in size")
        metrics.update((objects > 0).astype(np.float32), lab)
    return metrics.compute()
