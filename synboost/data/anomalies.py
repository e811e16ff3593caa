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
* **AnomalyMix** (PEBAL): outlier objects (COCO objects, or the synthetic world's own) pasted into training
  images with the label 254; the sources of objects are small classes with ``draw(rng, image_height)``.
"""
from __future__ import annotations

import cv2
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


# ------------------------------------------------------------------------------------------------ AnomalyMix

#: label of pasted outlier pixels (PEBAL's convention)
OUTLIER = 254


def anomaly_mix(image: np.ndarray, label: np.ndarray, obj_image: np.ndarray, obj_mask: np.ndarray,
                rng: np.random.Generator, scale: float = 1.0, blend: float = 0.0,
                outlier_label: int = OUTLIER) -> tuple[np.ndarray, np.ndarray]:
    """PEBAL's AnomalyMix: paste an outlier object into a training image; returns (image, label) copies.

    As the official loader does by default: the object image and mask are cropped to the mask's bounding box,
    kept at their own pixel size (``scale=1``), placed at a uniformly random position where the box fits, and
    only the mask's pixels are copied (a hard paste, ``blend=0``); those pixels get ``outlier_label``.
    Options: ``scale`` resizes the object first, ``blend`` feathers its edge over that many pixels (Gaussian
    alpha; the label stays the hard mask). An object larger than the image is shrunk to fit (the official code
    would skip the paste)."""
    ys, xs = np.nonzero(obj_mask)
    if ys.size == 0:
        return image.copy(), label.copy()
    obj = obj_image[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    mask = obj_mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = label.shape
    s = min(scale, h / mask.shape[0], w / mask.shape[1])  # shrunk to fit the image
    if s != 1.0:
        size = (max(1, int(mask.shape[1] * s)), max(1, int(mask.shape[0] * s)))
        obj = cv2.resize(obj, size, interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    oh, ow = mask.shape
    y0, x0 = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
    out_img, out_lab = image.copy(), label.copy()
    region = out_img[y0:y0 + oh, x0:x0 + ow]
    if blend > 0:
        alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), blend, borderType=cv2.BORDER_CONSTANT)
        alpha = alpha[..., None] * mask[..., None]
        alpha = np.maximum(alpha, mask[..., None] * 0.5)
        region[:] = np.clip(alpha * obj + (1 - alpha) * region, 0, 255).astype(image.dtype)
    else:
        region[mask] = obj[mask]
    out_lab[y0:y0 + oh, x0:x0 + ow][mask] = outlier_label
    return out_img, out_lab


class ProceduralOutliers:
    """Outlier objects drawn by the synthetic world's own generator (``synthetic.ood_object``), sized as a
    fraction ``size`` (min, max) of the image height: the embedded stand-in for COCO objects. ``shapes`` /
    ``fills`` restrict the object families (empty = all of them)."""

    def __init__(self, size: tuple[float, float] = (0.08, 0.4), shapes=(), fills=()):
        from synboost.data.synthetic import OOD_FILLS, OOD_SHAPES

        self.size = tuple(size)
        self.shapes, self.fills = tuple(shapes) or OOD_SHAPES, tuple(fills) or OOD_FILLS
        bad = (set(self.shapes) - set(OOD_SHAPES)) | (set(self.fills) - set(OOD_FILLS))
        if bad:
            from synboost.errors import ConfigError
            raise ConfigError(f"unknown outlier shapes/fills {sorted(bad)}; shapes: {', '.join(OOD_SHAPES)}; "
                              f"fills: {', '.join(OOD_FILLS)}")

    def draw(self, rng: np.random.Generator, image_height: int) -> tuple[np.ndarray, np.ndarray]:
        from synboost.data.synthetic import ood_object

        px = int(rng.uniform(*self.size) * image_height)
        col, mask = ood_object(rng, max(px, 6), self.shapes, self.fills)
        col = col + rng.standard_normal((1, 1, 3)).astype(np.float32) * 10  # per-object colour jitter
        return np.clip(col, 0, 255).astype(np.uint8), mask


class DatasetOutliers:
    """Outlier objects from a dataset whose samples carry ``image`` and ``mask`` (COCO prepared as Meta-OoD and
    PEBAL do: the union of a kept image's annotated objects). Unreadable files are skipped and counted."""

    def __init__(self, dataset):
        self.dataset, self.skipped = dataset, 0

    def draw(self, rng: np.random.Generator, image_height: int) -> tuple[np.ndarray, np.ndarray]:
        from synboost.errors import ImageReadError

        for _ in range(10):
            try:
                s = self.dataset[int(rng.integers(len(self.dataset)))]
                return s["image"], s["mask"]
            except ImageReadError:
                self.skipped += 1
        raise ImageReadError(f"{self.dataset.root}: 10 unreadable outlier files in a row; check the folder")
