"""What PEBAL adds to the training loop: a trained segmenter grows an abstention output, only its head
(``final`` + classifier) trains, on AnomalyMix data, with the abstention and energy losses.

As the official recipe: Adam (no weight decay) with a poly learning rate, outlier objects pasted into
``mix_ratio`` x N extra samples per epoch (each on a random training image, re-drawn every epoch), then the usual
flip / scale / crop. Unlike the official code, the frozen trunk keeps its BatchNorm statistics (``freeze_bn``;
false reproduces the drift) and selection is on held-out validation images with pasted outliers, not on an
evaluation set. The end of the run writes ``pebal.safetensors`` (a segmenter checkpoint with the abstention
output) and a pipeline file that scores PEBAL beside the plain segmenter's post-hoc baselines.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from synboost.config import PebalConfig, to_dict
from synboost.data.anomalies import OUTLIER, DatasetOutliers, ProceduralOutliers, anomaly_mix
from synboost.data.kinds import open_dataset
from synboost.data.labels import CLASS_NAMES
from synboost.data.transforms import augment, resize_pair, to_chw_float
from synboost.errors import ConfigError
from synboost.losses.pebal import PebalWeights, pebal_loss
from synboost.training.stage import publish_run, run_stage
from synboost.training.task import SeededDataset, Task, poly_schedule


def open_outliers(d):
    """The source of outlier objects of a :class:`PebalDataConfig`: ``synthetic`` (the world's own generator,
    optionally some of its object families) or a dataset spec whose samples carry masks (``coco:DIR``)."""
    if d.outliers == "synthetic":
        return ProceduralOutliers(tuple(d.object_size), d.object_shapes, d.object_fills)
    return DatasetOutliers(open_dataset(d.outliers))


class AnomalyMixTrainSet(SeededDataset):
    """N training samples plus round(mix_ratio x N) AnomalyMix samples; every draw is a function of
    (seed, epoch, index), so the mixed images change every epoch and a resumed run sees the same ones."""

    def __init__(self, reader, outliers, cfg, seed: int):
        super().__init__(reader, seed)
        d = cfg.data
        self.outliers, self.d = outliers, d
        self.n_mix = int(round(d.mix_ratio * len(reader)))

    def __len__(self) -> int:
        return len(self.items) + self.n_mix

    def __getitem__(self, i: int):
        rng, d = self.rng(i), self.d
        if i < len(self.items):
            s = self.items[i]
            image, label = s["image"], s["label"]
        else:
            s = self.items[int(rng.integers(len(self.items)))]
            obj, mask = self.outliers.draw(rng, s["label"].shape[0])
            image, label = anomaly_mix(s["image"], s["label"], obj, mask, rng, d.object_scale, d.blend)
        image, label = augment(image, label, rng, tuple(d.crop) if d.crop else None, (d.scale_min, d.scale_max),
                               d.flip)
        return torch.from_numpy(to_chw_float(image)), torch.from_numpy(label.astype(np.int64))


def validation_samples(reader, outliers, cfg) -> list[tuple[np.ndarray, np.ndarray]]:
    """Held-out images with ``val_objects`` outliers pasted into each (fixed seeds): the selection set."""
    d = cfg.data
    n = len(reader) if not d.val_images else min(d.val_images, len(reader))
    out = []
    for i in range(n):
        rng = np.random.default_rng([cfg.train.seed, 7919, i])
        s = reader[i]
        image, label = s["image"], s["label"]
        if d.val_size:
            image, label = resize_pair(image, label, tuple(d.val_size))
        for _ in range(d.val_objects):
            obj, mask = outliers.draw(rng, label.shape[0])
            image, label = anomaly_mix(image, label, obj, mask, rng, d.object_scale, d.blend)
        out.append((image, label))
    return out


@torch.no_grad()
def score_validation(model: nn.Module, samples, device, score: str = "pebal") -> dict:
    """AP / FPR95 / AUROC of a score on pasted outliers against inlier pixels, the energy statistics of both, and
    the mIoU over the inlier pixels. ``score``: ``pebal`` (the smoothed energy), ``energy`` (the plain energy: the
    reference for any segmenter), or a method of ``scores.OUTLIER_SCORES`` (computed from all of the model's
    outputs, as the detectors do)."""
    from synboost import scores
    from synboost.metrics.pixel import pixel_curve
    from synboost.metrics.segmentation import ConfusionMatrix
    from synboost.tensors import images_to_batch

    was = model.training
    model.eval()
    cm = ConfusionMatrix(len(CLASS_NAMES), class_names=list(CLASS_NAMES))
    sc, lab, e_in, e_out = [], [], [], []
    for image, label in samples:
        every = model(images_to_batch([image], device), all_outputs=True)
        logits = every[:, :model.num_classes]
        energy = scores.energy(logits)
        s = (scores.gaussian_blur(energy) if score == "pebal" else energy if score == "energy"
             else scores.OUTLIER_SCORES[score](every))[0].float().cpu().numpy()
        keep = label != 255
        sc.append(s[keep])
        lab.append((label[keep] == OUTLIER).astype(np.uint8))
        e = energy[0].cpu().numpy()
        e_in.append(e[keep & (label != OUTLIER)])
        e_out.append(e[label == OUTLIER])
        cm.update(logits.argmax(1)[0].cpu().numpy(), label)
    model.train(was)
    res = pixel_curve(sc, lab).metrics()
    e_in, e_out = np.concatenate(e_in), np.concatenate(e_out)
    q = (5, 50, 95)
    return {"ap": float(res.ap), "fpr95": float(res.fpr95), "auroc": float(res.auroc),
            "miou": float(cm.compute().miou),
            "energy_in": [float(v) for v in np.percentile(e_in, q)] if e_in.size else [],
            "energy_out": [float(v) for v in np.percentile(e_out, q)] if e_out.size else []}


class PebalTask(Task):
    """PEBAL's head-only fine-tune of a trained segmenter on AnomalyMix data; measures the base segmenter's plain
    energy first (``base_val``) and ends with ``pebal.safetensors`` and a pipeline file."""

    kind = "segmenter"  # a PEBAL model is a segmenter with one more output: every segmenter loader reads it
    name = "pebal"

    def __init__(self, cfg: PebalConfig):
        if not cfg.segmenter:
            raise ConfigError("pebal: 'segmenter' is empty; give the segmenter.safetensors to fine-tune "
                              "(from `synboost train segmentation`)")
        if cfg.loss.form not in ("code", "paper"):
            raise ConfigError(f"pebal: loss.form must be 'code' or 'paper', got '{cfg.loss.form}'")
        from synboost.hub.checkpoint import read_meta

        self.cfg = cfg
        from synboost.detectors.segmenters import refuse_spec

        refuse_spec(cfg.segmenter, "PEBAL fine-tunes its head")
        self.base_meta = read_meta(cfg.segmenter)
        if self.base_meta.get("kind") != "segmenter":
            raise ConfigError(f"{cfg.segmenter}: is a '{self.base_meta.get('kind')}' checkpoint; 'segmenter' must be "
                              "the segmenter.safetensors of `synboost train segmentation`")
        self.weights = PebalWeights(**{k: v for k, v in to_dict(cfg.loss).items()})
        self._val = None
        self.base_val: dict | None = None

    def base_model(self) -> nn.Module:
        from synboost.detectors.components import load_segmenter

        model, _ = load_segmenter(self.cfg.segmenter)
        if model.abstention:
            raise ConfigError(f"{self.cfg.segmenter}: already a PEBAL fine-tune; give the plain segmenter")
        return model

    def build_model(self) -> nn.Module:
        model = self.base_model().add_abstention()
        model.freeze_below_head(self.cfg.freeze_bn)
        return model.train()

    def build_optimizer(self, model: nn.Module):
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=self.cfg.train.lr, weight_decay=self.cfg.train.weight_decay)

    def build_scheduler(self, opt, total_steps: int):
        return poly_schedule(opt, total_steps, self.cfg.poly_power)

    def outliers(self):
        return open_outliers(self.cfg.data)

    def train_dataset(self):
        return AnomalyMixTrainSet(open_dataset(self.cfg.data.train), self.outliers(), self.cfg, self.cfg.train.seed)

    def train_step(self, model, batch, device):
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        logits = model(x, all_outputs=True)
        loss, parts = pebal_loss(logits.float(), y, self.weights)
        return loss, parts

    def validation_set(self):
        if self._val is None:
            self._val = validation_samples(open_dataset(self.cfg.data.val), self.outliers(), self.cfg)
        return self._val

    def validate(self, model, device) -> dict:
        res = score_validation(model, self.validation_set(), device)
        return {"score": res["ap"], **{k: v for k, v in res.items() if not isinstance(v, list)}}

    def checkpoint_meta(self) -> dict:
        model = {**self.base_meta["model"], "abstention": True}
        return {"kind": self.kind, "architecture": "deeplabv3plus", "config": to_dict(self.cfg), "model": model,
                "pebal": {"base_segmenter": str(Path(self.cfg.segmenter).resolve())}}

    def on_fit_start(self, engine) -> None:
        """The base segmenter's plain energy on the validation outliers (the summary's ``base_val``)."""
        cfg = self.cfg
        base = self.base_model().to(engine.device)
        self.base_val = score_validation(base, self.validation_set(), engine.device, score="energy")
        if engine.progress:
            bv = self.base_val
            print(f"[pebal] base segmenter on the validation outliers: energy AP {100 * bv['ap']:.2f}, "
                  f"inlier energy 5/50/95 % {np.round(bv['energy_in'], 2).tolist()}, outlier "
                  f"{np.round(bv['energy_out'], 2).tolist()} (margins m_in {cfg.loss.m_in}, m_out {cfg.loss.m_out})")

    def summary_fields(self) -> dict:
        """``base_val``: the base segmenter's numbers (None off rank 0)."""
        return {"base_val": self.base_val}

    def on_fit_end(self, model, summary, engine) -> None:
        """Publish the best epoch as ``pebal.safetensors`` and a ``pipeline.yaml`` (method pebal, the base
        segmenter beside it for the post-hoc baselines)."""
        publish_run(summary, self.cfg.out, "pebal.safetensors", "pebal", method="pebal",
                    segmenter=str(Path(self.cfg.segmenter).resolve()))


def train_pebal(cfg: PebalConfig, resume: bool = False, progress: bool = True) -> dict:
    """``synboost train pebal``: fine-tune; then (rank 0) write ``pebal.safetensors`` (best epoch by validation
    AP) and ``pipeline.yaml`` (method pebal, with the base segmenter for the post-hoc baselines). The summary holds
    the validation numbers of the base segmenter's plain energy and of PEBAL on the same images."""
    return run_stage(PebalTask(cfg), cfg, resume=resume, progress=progress)
