"""Joint image / label augmentation for training (numpy + OpenCV): scale jitter, random crop, horizontal flip.

Every random choice comes from the ``rng`` passed in, so a sample's augmentation is a function of its seed:
training runs resume bit-for-bit and data-loader workers need no shared state.
"""
from __future__ import annotations

import cv2
import numpy as np

from synboost.data.labels import IGNORE

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def resize_pair(image: np.ndarray, label: np.ndarray | None, size: tuple[int, int]):
    """Resize to (H, W): image bilinear, label nearest."""
    h, w = size
    img = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    lab = None if label is None else cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
    return img, lab


def random_scale(image, label, rng: np.random.Generator, lo: float, hi: float):
    if lo == hi == 1.0:
        return image, label
    s = rng.uniform(lo, hi)
    h, w = image.shape[:2]
    return resize_pair(image, label, (max(1, int(round(h * s))), max(1, int(round(w * s)))))


def random_crop(image, label, rng: np.random.Generator, size: tuple[int, int], fill: int = IGNORE):
    """Crop (H, W); images smaller than the crop are padded (image with 0, label with ``fill``)."""
    ch, cw = size
    h, w = image.shape[:2]
    ph, pw = max(ch - h, 0), max(cw - w, 0)
    if ph or pw:
        image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
        if label is not None:
            label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=fill)
        h, w = image.shape[:2]
    y = int(rng.integers(0, h - ch + 1))
    x = int(rng.integers(0, w - cw + 1))
    return image[y:y + ch, x:x + cw], None if label is None else label[y:y + ch, x:x + cw]


def random_flip(image, label, rng: np.random.Generator, p: float = 0.5):
    if rng.random() < p:
        return image[:, ::-1], None if label is None else label[:, ::-1]
    return image, label


def augment(image, label, rng, crop: tuple[int, int] | None, scale: tuple[float, float] = (1.0, 1.0),
            flip: bool = True):
    image, label = random_scale(image, label, rng, *scale)
    if crop is not None:
        image, label = random_crop(image, label, rng, crop)
    if flip:
        image, label = random_flip(image, label, rng)
    return np.ascontiguousarray(image), None if label is None else np.ascontiguousarray(label)


def to_chw_float(image: np.ndarray, normalize: bool = True) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (3, H, W), ImageNet-normalised (as the official segmenter expects)."""
    x = image.astype(np.float32) / 255.0
    if normalize:
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))
