"""Torch tensor helpers shared by the detectors, the training stages and the benchmarks: images to ImageNet-
normalised batches and back, and maps resized to a size (labels nearest, float maps and images bilinear).

A leaf: it imports nothing of the package above ``data`` (``data/`` itself stays numpy-only, so these live here).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from synboost.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def images_to_batch(images: Sequence[np.ndarray], device, size=None) -> torch.Tensor:
    """RGB uint8 images of one size -> normalised float batch on ``device`` (resized to ``size`` if given)."""
    x = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float().div_(255)
    if size:
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return imagenet_normalize01(x)


def _imagenet_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1),
            torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1))


def imagenet_normalize01(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> ImageNet-normalised."""
    mean, std = _imagenet_stats(x)
    return (x - mean) / std


def imagenet_denormalize01(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised images -> [0, 1] (the inverse of :func:`imagenet_normalize01`, clamped)."""
    mean, std = _imagenet_stats(x)
    return (x * std + mean).clamp(0, 1)


def resize_maps(size, labels=None, maps: Sequence[torch.Tensor] = (), image=None):
    """Labels nearest, float maps and images bilinear (antialiased when shrinking) to ``size``."""
    size = tuple(size)
    out = []
    if labels is not None:
        out.append(labels if tuple(labels.shape[-2:]) == size else
                   F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long())
    for m in maps:
        out.append(m if tuple(m.shape[-2:]) == size else
                   F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False, antialias=True)[:, 0])
    if image is not None:
        out.append(image if tuple(image.shape[-2:]) == size else
                   F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True))
    return out
