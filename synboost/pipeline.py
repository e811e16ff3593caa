"""Detectors built from a pipeline file: a batch of RGB images in, one anomaly map per image out.

Inference, evaluation, the demo and the benchmarks all go through these detectors, so the numbers in a table
are the numbers a user gets. A detector's ``__call__`` takes a list of RGB uint8 images (any sizes) and returns,
per image, a dict of float32 maps at the image's size: ``anomaly`` (higher = more anomalous) for its method, plus
``segmentation`` (train ids). ``score_all`` gives every post-hoc score from the same forward pass.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from synboost import scores
from synboost.config import PipelineConfig, SegModelConfig, from_dict, load_config
from synboost.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from synboost.errors import CheckpointError, ConfigError
from synboost.hub.checkpoint import load_into, load_model
from synboost.models import create_model

POSTHOC_METHODS = ("msp", "maxlogit", "entropy", "energy", "sml", "mcdropout")


def load_segmenter(path: str | os.PathLike, device: torch.device | str = "cpu"):
    """(model in eval mode, SML statistics or None) from one of our segmenter checkpoints."""
    sd, meta = load_model(path, expect_kind="segmenter")
    stats = {k[len("_stats."):]: v for k, v in sd.items() if k.startswith("_stats.")}
    weights = {k: v for k, v in sd.items() if not k.startswith("_stats.")}
    m = from_dict(SegModelConfig, meta["model"])
    model = create_model("deeplabv3plus", backbone=m.backbone, num_classes=m.num_classes,
                         output_stride=m.output_stride, aspp_dim=m.aspp_dim, decoder_dim=m.decoder_dim,
                         head_dropout=m.head_dropout, width=m.width)
    load_into(model, weights, str(path))
    sml = (stats["sml_mean"], stats["sml_std"]) if "sml_mean" in stats else None
    return model.to(device).eval(), sml


def images_to_batch(images: Sequence[np.ndarray], device, size=None) -> torch.Tensor:
    """RGB uint8 images of one size -> normalised float batch on ``device`` (resized to ``size`` if given)."""
    x = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float().div_(255)
    if size:
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


class PosthocDetector:
    """A segmenter plus one post-hoc score (MSP, max logit, entropy, energy, SML, MC dropout)."""

    def __init__(self, segmenter: torch.nn.Module, method: str = "entropy", sml_stats=None, input_size=None,
                 batch_size: int = 4, mc_samples: int = 8, device: torch.device | str = "cpu"):
        if method not in POSTHOC_METHODS:
            raise ConfigError(f"unknown method '{method}'; post-hoc methods: {', '.join(POSTHOC_METHODS)}")
        if method == "sml" and sml_stats is None:
            raise ConfigError("method 'sml' needs class statistics: the segmenter checkpoint has none "
                              "(train with sml_stats=true)")
        self.model, self.method, self.sml_stats = segmenter, method, sml_stats
        self.input_size, self.batch_size, self.mc_samples = input_size or None, batch_size, mc_samples
        self.device = torch.device(device)

    @property
    def methods(self) -> tuple[str, ...]:
        """Every method this detector can score from one forward pass (``score_all``)."""
        return tuple(m for m in POSTHOC_METHODS if m not in ("mcdropout",) and (m != "sml" or self.sml_stats))

    def _logits(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)

    def _maps(self, logits: torch.Tensor, methods: Sequence[str], batch: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for m in methods:
            if m == "sml":
                out[m] = scores.sml(logits, *self.sml_stats)
            elif m == "mcdropout":
                out[m] = self._mc(batch)
            else:
                out[m] = scores.LOGIT_SCORES[m](logits)
        return out

    def _mc(self, batch: torch.Tensor) -> torch.Tensor:
        drop = [mod for mod in self.model.modules() if isinstance(mod, torch.nn.modules.dropout._DropoutNd)]
        for d in drop:
            d.train()
        try:
            return scores.mc_dropout(self.model, batch, self.mc_samples)
        finally:
            for d in drop:
                d.eval()

    @torch.no_grad()
    def run(self, images: Sequence[np.ndarray], methods: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """Score maps for ``methods`` (+ ``segmentation``) per image, at each image's own size."""
        results: list[dict[str, np.ndarray] | None] = [None] * len(images)
        # group by size so that every batch is one tensor
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.shape, []).append(i)
        for shape, idx in groups.items():
            for k in range(0, len(idx), self.batch_size):
                part = idx[k:k + self.batch_size]
                batch = images_to_batch([images[i] for i in part], self.device, self.input_size)
                logits = self._logits(batch)
                maps = self._maps(logits, methods, batch)
                maps["segmentation"] = logits.argmax(1).float()
                for name, t in maps.items():
                    if t.shape[-2:] != shape[:2]:
                        mode = "nearest" if name == "segmentation" else "bilinear"
                        t = F.interpolate(t[:, None].float(), size=shape[:2], mode=mode,
                                          **({} if mode == "nearest" else {"align_corners": False}))[:, 0]
                    arr = t.float().cpu().numpy()
                    for j, i in enumerate(part):
                        results[i] = results[i] or {}
                        results[i][name] = arr[j] if name != "segmentation" else arr[j].astype(np.uint8)
        return results  # type: ignore[return-value]

    def __call__(self, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        res = self.run(images, [self.method])
        for r in res:
            r["anomaly"] = r.pop(self.method)
        return res

    def score_all(self, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        return self.run(images, self.methods)


def _resolve(path: str, base: Path | None) -> str:
    p = Path(path).expanduser()
    if not p.is_absolute() and base is not None and not p.exists():
        p = base / p
    return str(p)


def build_detector(cfg: PipelineConfig, base: Path | None = None, device: str | None = None) -> PosthocDetector:
    from synboost.runtime import pick_device

    dev = pick_device(device or cfg.device)
    if not cfg.segmenter:
        raise ConfigError("pipeline: 'segmenter' is empty; give the segmenter checkpoint (a .safetensors file)")
    seg_path = _resolve(cfg.segmenter, base)
    if not Path(seg_path).is_file():
        raise CheckpointError(f"{seg_path}: segmenter checkpoint not found (train one with `synboost train "
                              "segmentation`, or fix 'segmenter' in the pipeline file)")
    model, sml = load_segmenter(seg_path, dev)
    return PosthocDetector(model, cfg.method, sml, cfg.input_size, cfg.batch_size, cfg.mc_samples, dev)


def load_pipeline(path: str | os.PathLike, overrides: Sequence[str] = (), device: str | None = None) -> PosthocDetector:
    """``synboost.load_pipeline("runs/demo/pipeline.yaml")(images) -> [{"anomaly": ..., "segmentation": ...}]``."""
    cfg = load_config(PipelineConfig, path, overrides)
    return build_detector(cfg, Path(path).resolve().parent, device)


def write_pipeline_file(path: str | os.PathLike, **fields) -> Path:
    """Write a pipeline file (validated against :class:`PipelineConfig`)."""
    from synboost.config import save_config

    cfg = from_dict(PipelineConfig, fields)
    return save_config(cfg, path)
