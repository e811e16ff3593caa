"""Training anomalies, made the SynBoost way (numpy only).

* **Label switching** (``create_unknown_examples.py`` of the official code, after Lis et al. 2019): pick
  floor(U(0, 1) * N) of the N object instances (label ids 24..33 with instance ids >= 1000) uniformly without
  replacement and give each a new label id drawn from a weighted list (the official "optimized" list: road x3,
  sidewalk, building, wall, fence, traffic sign, vegetation, terrain, person x3, rider, car x7, truck, bus,
  motorcycle, bicycle), redrawn while it equals the old one. The switched instances are the anomalies: the
  generator redraws them as the new class while the real image shows the old one.
* **Void as anomaly** (the paper's "data generator"; the official ``include_void_to_labels`` with the
  commented list): pixels of the void label ids unlabeled, static, dynamic (and optionally others) are anomalies;
  the ego vehicle is excluded ("no_ego"). The semantic input there is the segmenter's prediction pasted into the
  void region (``create_void_semantic``), so the label map looks as it would at test time.
"""
from __future__ import annotations

import numpy as np

from synboost.data.labels import NAME_TO_ID

#: the official weighted target list for label switching (label ids; repeats are weights)
OFFICIAL_SWITCH_TARGETS: tuple[int, ...] = (7, 7, 7, 8, 11, 12, 13, 20, 21, 22, 24, 24, 24, 25,
                                            26, 26, 26, 26, 26, 26, 26, 27, 28, 32, 33)
#: void label ids treated as anomalies (unlabeled, static, dynamic, ground); the ego vehicle (1) is never one
VOID_ANOMALY_IDS: tuple[int, ...] = (NAME_TO_ID["unlabeled"], NAME_TO_ID["static"], NAME_TO_ID["dynamic"],
                                     NAME_TO_ID["ground"])


def switch_instances(label_ids: np.ndarray, instance_ids: np.ndarray, rng: np.random.Generator,
                     targets: tuple[int, ...] = OFFICIAL_SWITCH_TARGETS, min_pixels: int = 1,
                     fraction: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(switched label ids, anomaly mask bool). ``fraction`` fixes the share of instances switched (default:
    U(0, 1) per image, as the official code); instances smaller than ``min_pixels`` are left alone."""
    inst = np.asarray(instance_ids)
    ids, counts = np.unique(inst[inst >= 1000], return_counts=True)
    ids = ids[counts >= min_pixels]
    out = np.array(label_ids, copy=True)
    mask = np.zeros(inst.shape, bool)
    if ids.size == 0:
        return out, mask
    share = rng.random() if fraction is None else fraction
    chosen = rng.choice(ids, size=int(np.floor(share * ids.size)), replace=False)
    for k in chosen:
        m = inst == k
        old = int(k // 1000)
        new = old
        while new == old:
            new = int(targets[rng.integers(len(targets))])
        out[m] = new
        mask |= m
    return out, mask


def void_mask(label_ids: np.ndarray, void_ids: tuple[int, ...] = VOID_ANOMALY_IDS) -> np.ndarray:
    """Pixels whose label id is one of ``void_ids`` (the ego vehicle is not among the defaults)."""
    return np.isin(label_ids, void_ids)


def paste(base: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``base`` with ``source`` pasted where ``mask`` is set (e.g. the predicted segmentation into void regions)."""
    return np.where(mask, source, base)
