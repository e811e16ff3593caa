"""What the segmentation stage adds to the training loop: DeepLabV3+, cross-entropy (ignore 255), SGD with poly
learning rate, crops / flips / scale jitter, mIoU on the validation split every epoch, and at the end the
standardized-max-logit statistics and a pipeline file that uses what was trained."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from synboost.config import SegmentationConfig, to_dict
from synboost.data.kinds import open_dataset
from synboost.data.labels import CLASS_NAMES, IGNORE
from synboost.data.transforms import augment, resize_pair, to_chw_float
from synboost.detectors.components import build_segmenter, save_component
from synboost.metrics.segmentation import ConfusionMatrix
from synboost.training.stage import run_stage
from synboost.training.task import SeededDataset, Task, poly_schedule


class SegmentationTrainSet(SeededDataset):
    """Reader samples -> augmented (image tensor, label tensor); augmentation seeded by (seed, epoch, index)."""

    def __init__(self, reader, crop, scale, flip: bool, seed: int):
        super().__init__(reader, seed)
        self.crop, self.scale, self.flip = tuple(crop) if crop else None, scale, flip

    def __getitem__(self, i: int):
        s = self.items[i]
        img, lab = augment(s["image"], s["label"], self.rng(i), self.crop, self.scale, self.flip)
        return torch.from_numpy(to_chw_float(img)), torch.from_numpy(lab.astype(np.int64))


@torch.no_grad()
def predict_logits(model: nn.Module, image: np.ndarray, device: torch.device, size=None) -> torch.Tensor:
    """Logits (1, C, H, W) of one RGB uint8 image (optionally resized to ``size`` first)."""
    if size:
        image, _ = resize_pair(image, None, tuple(size))
    x = torch.from_numpy(to_chw_float(image))[None].to(device)
    return model(x)


class SegmentationTask(Task):
    """DeepLabV3+ with cross-entropy, SGD + poly; ends with ``segmenter.safetensors`` (SML statistics) and a
    pipeline file."""

    kind = "segmenter"

    def __init__(self, cfg: SegmentationConfig):
        self.cfg = cfg
        self._val = None

    def build_model(self) -> nn.Module:
        model = build_segmenter(self.cfg.model)
        if self.cfg.model.pretrained:
            from synboost.hub.pretrained import load_torchvision_weights

            if model.trunk.imagenet_weights is None:
                from synboost.errors import ConfigError
                raise ConfigError(f"backbone '{self.cfg.model.backbone}' has no ImageNet weights; "
                                  "set model.pretrained=false")
            load_torchvision_weights(model.trunk, model.trunk.imagenet_weights,
                                     self.cfg.model.pretrained_path or None)
        return model

    def build_optimizer(self, model: nn.Module):
        c = self.cfg
        return torch.optim.SGD(model.parameters(), lr=c.train.lr, momentum=c.momentum,
                               weight_decay=c.train.weight_decay)

    def build_scheduler(self, opt, total_steps: int):
        return poly_schedule(opt, total_steps, self.cfg.poly_power)

    def train_dataset(self) -> Dataset:
        d = self.cfg.data
        return SegmentationTrainSet(open_dataset(d.train), d.crop, (d.scale_min, d.scale_max), d.flip,
                                    self.cfg.train.seed)

    def train_step(self, model, batch, device):
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, ignore_index=IGNORE)
        return loss, {}

    def validate(self, model, device) -> dict:
        if self._val is None:
            self._val = open_dataset(self.cfg.data.val)
        return {"score": evaluate_miou(model, self._val, device, self.cfg.data.val_size)["miou"]}

    def checkpoint_meta(self) -> dict:
        return {"kind": self.kind, "architecture": "deeplabv3plus", "config": to_dict(self.cfg),
                "model": to_dict(self.cfg.model)}

    def on_fit_end(self, model, summary, engine) -> None:
        """Fit the SML statistics of the best weights on the training split (``sml_stats``) and write
        ``segmenter.safetensors`` (best weights + statistics) and ``pipeline.yaml``."""
        from synboost.detectors.detector import write_pipeline_file
        from synboost.hub.checkpoint import load_into, load_model

        cfg = self.cfg
        sd, meta = load_model(summary["best"], "segmenter")
        best = build_segmenter(cfg.model)
        load_into(best, sd, summary["best"])
        best.to(engine.device)
        extra = {}
        if cfg.sml_stats:
            d = cfg.data
            mean, std = fit_sml_statistics(best, open_dataset(d.train), engine.device, d.val_size or None,
                                           engine.progress)
            extra = {"sml_mean": mean, "sml_std": std}
        out = Path(cfg.out) / "segmenter.safetensors"
        meta = {k: v for k, v in meta.items() if k not in ("kind", "model", "classes")}
        save_component(out, best, "segmenter", cfg.model, stats=extra, **meta)
        summary["segmenter"] = str(out)
        summary["pipeline"] = str(write_pipeline_file(Path(cfg.out) / "pipeline.yaml", segmenter=str(out.resolve()),
                                                      method="entropy"))


@torch.no_grad()
def evaluate_miou(model: nn.Module, dataset, device, size=None, progress: bool = False) -> dict:
    """mIoU of a segmenter over a labelled dataset (labels at native size; predictions resized back if needed)."""
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(model.num_classes, class_names=list(CLASS_NAMES))
    for i in range(len(dataset)):
        s = dataset[i]
        logits = predict_logits(model, s["image"], device, size)
        if logits.shape[2:] != s["label"].shape:
            logits = F.interpolate(logits, size=s["label"].shape, mode="bilinear", align_corners=False)
        cm.update(logits.argmax(1)[0].cpu().numpy(), s["label"])
    model.train(was_training)
    res = cm.compute()
    return {"miou": float(res.miou), "per_class": [float(v) for v in res.iou]}


def fit_sml_statistics(model: nn.Module, dataset, device, size=None,
                       progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardized-max-logit class statistics over a training set (SML fits them on Cityscapes train)."""
    from tqdm import tqdm

    from synboost.scores import sml_stats_finalize, sml_stats_update

    model.eval()
    acc = torch.zeros(model.num_classes, 3, dtype=torch.float64, device=device)
    with torch.no_grad():
        for i in tqdm(range(len(dataset)), desc="SML statistics", disable=not progress, leave=False):
            sml_stats_update(acc, predict_logits(model, dataset[i]["image"], device, size))
    return sml_stats_finalize(acc.cpu())


def train_segmentation(cfg: SegmentationConfig, resume: bool = False, progress: bool = True) -> dict:
    """``synboost train segmentation``: train, then (rank 0) fit SML statistics on the training split and write
    ``segmenter.safetensors`` (best weights + statistics) and ``pipeline.yaml`` into the run folder."""
    return run_stage(SegmentationTask(cfg), cfg, resume=resume, progress=progress)
