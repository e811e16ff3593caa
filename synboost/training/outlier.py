"""What re-training the segmenter with outlier data adds to the training loop: the three methods of the
Fishyscapes / SynBoost / PEBAL comparison tables that change the segmenter itself.

* ``void``: OoD training with a void class (Blum et al.'s "void classifier"): one more output, trained as a class
  on the outlier pixels; score = its softmax probability.
* ``outlier_head``: a discriminative outlier detection head (Bevandic et al. 2019) beside the classifier on the
  decoder features, trained with BCE (inlier vs outlier pixels) jointly with the segmentation cross-entropy;
  score = the head's outlier probability.
* ``dirichlet``: Dirichlet DeepLab (a prior network, Malinin & Gales 2018): alpha = exp(logits), KL to a sharp
  target on inlier pixels and to the flat Dirichlet on outlier pixels; score = the mutual information.

The WHOLE network trains (unlike PEBAL's head-only fine-tune), from a given segmenter checkpoint (``segmenter``:
its weights, the void filter / head freshly initialised) or from scratch (``model``). Outlier pixels are
PEBAL's AnomalyMix pastes (the same data code, :mod:`synboost.training.pebal`), optionally also the void pixels
(``data.void_outliers``: label ids unlabeled, static, dynamic, ground; not the ego vehicle). Validation per
epoch: mIoU on the clean validation split (what re-training costs the inlier segmentation) and AP / FPR95 /
AUROC of the method's score on validation images with pasted outliers; the best epoch by ``select``. The run
ends with ``segmenter.safetensors`` (model.outlier_training = the method) and a pipeline file scoring it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from synboost.config import OutlierTrainingConfig, SegmentationConfig, SegModelConfig, from_dict, to_dict
from synboost.data.anomalies import OUTLIER, void_mask
from synboost.data.kinds import open_dataset
from synboost.data.labels import CLASS_NAMES, IGNORE
from synboost.errors import ConfigError
from synboost.losses.outlier import dirichlet_loss, outlier_head_loss, void_loss
from synboost.training.pebal import AnomalyMixTrainSet, open_outliers, score_validation, validation_samples
from synboost.training.stage import publish_run, run_stage
from synboost.training.task import Task, poly_schedule

METHODS = ("void", "outlier_head", "dirichlet")
SELECT = ("ap", "miou", "mean")


class VoidAsOutliers:
    """A reader whose labels mark the void pixels (label ids of :data:`VOID_ANOMALY_IDS`, read from the instance
    map; the ego vehicle excluded) as ``OUTLIER``; everything else passes through."""

    def __init__(self, reader):
        self.reader = reader

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int) -> dict:
        from synboost.training.dissimilarity import _label_ids

        s = dict(self.reader[i])
        label = np.array(s["label"], copy=True)
        label[void_mask(_label_ids(s)) & (label == IGNORE)] = OUTLIER
        s["label"] = label
        return s


class OutlierTask(Task):
    """The whole segmenter re-trained for one outlier method (see the module docstring); measures the starting
    segmenter first (``base_val``) and ends with ``segmenter.safetensors`` and a pipeline file."""

    kind = "segmenter"  # a re-trained segmenter: every segmenter loader reads it

    def __init__(self, cfg: OutlierTrainingConfig):
        if cfg.method not in METHODS:
            raise ConfigError(f"outlier: method must be one of {', '.join(METHODS)}, got '{cfg.method}'")
        if cfg.select not in SELECT:
            raise ConfigError(f"outlier: select must be one of {', '.join(SELECT)}, got '{cfg.select}'")
        if cfg.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"outlier: optimizer must be adam or sgd, got '{cfg.optimizer}'")
        self.cfg, self.method, self.name = cfg, cfg.method, f"outlier-{cfg.method}"
        self.base_meta: dict | None = None
        if cfg.segmenter:
            from synboost.detectors.segmenters import refuse_spec
            from synboost.hub.checkpoint import read_meta

            refuse_spec(cfg.segmenter, "outlier re-training fine-tunes it")
            self.base_meta = read_meta(cfg.segmenter)
            if self.base_meta.get("kind") != "segmenter":
                raise ConfigError(f"{cfg.segmenter}: is a '{self.base_meta.get('kind')}' checkpoint; 'segmenter' "
                                  "must be the segmenter.safetensors of `synboost train segmentation`")
            m = self.base_meta.get("model", {})
            if m.get("abstention") or m.get("outlier_training"):
                what = "a PEBAL fine-tune" if m.get("abstention") else f"re-trained for '{m['outlier_training']}'"
                raise ConfigError(f"{cfg.segmenter}: {what}; give the plain segmenter (of `synboost train "
                                  "segmentation`) or segmenter='' to train from scratch")
        if cfg.loss.smoothing * (len(CLASS_NAMES) - 1) >= 1 or cfg.loss.smoothing < 0:
            raise ConfigError(f"outlier: loss.smoothing {cfg.loss.smoothing} leaves no target mass for the "
                              f"labelled class with {len(CLASS_NAMES)} classes")
        self._val = None
        self._clean_val = None
        self.base_val: dict | None = None

    # ------------------------------------------------------------------------------------------- the model
    def model_config(self) -> SegModelConfig:
        base = from_dict(SegModelConfig, self.base_meta["model"]) if self.base_meta else self.cfg.model
        return dataclasses.replace(base, outlier_training=self.method)

    def base_model(self) -> nn.Module:
        """The plain segmenter to start from (eval mode)."""
        from synboost.detectors.components import load_segmenter

        return load_segmenter(self.cfg.segmenter)[0]

    def build_model(self) -> nn.Module:
        if self.cfg.segmenter:
            model = self.base_model().set_outlier_training(self.method)
        else:
            from synboost.training.segmentation import SegmentationTask

            # the segmentation stage's model building (ImageNet trunk if model.pretrained)
            model = SegmentationTask(SegmentationConfig(model=self.model_config())).build_model()
        return model.train()

    def build_optimizer(self, model: nn.Module):
        c = self.cfg
        if c.optimizer == "sgd":
            return torch.optim.SGD(model.parameters(), lr=c.train.lr, momentum=c.momentum,
                                   weight_decay=c.train.weight_decay)
        return torch.optim.Adam(model.parameters(), lr=c.train.lr, weight_decay=c.train.weight_decay)

    def build_scheduler(self, opt, total_steps: int):
        return poly_schedule(opt, total_steps, self.cfg.poly_power)

    # -------------------------------------------------------------------------------------------- the data
    def outliers(self):
        return open_outliers(self.cfg.data)

    def train_dataset(self):
        d = self.cfg.data
        reader = open_dataset(d.train, **({"with_instances": True} if d.void_outliers else {}))
        if d.void_outliers:
            reader = VoidAsOutliers(reader)
        return AnomalyMixTrainSet(reader, self.outliers(), self.cfg, self.cfg.train.seed)

    # --------------------------------------------------------------------------------------------- one step
    def loss(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        c = self.cfg.loss
        if self.method == "void":
            return void_loss(outputs, target)
        if self.method == "outlier_head":
            return outlier_head_loss(outputs, target, c.head_weight)
        return dirichlet_loss(outputs, target, c.precision, c.smoothing, c.outlier_weight)

    def train_step(self, model, batch, device):
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        outputs = model(x, all_outputs=True)
        return self.loss(outputs.float(), y)

    # ------------------------------------------------------------------------------------------- validation
    def validation_set(self):
        if self._val is None:
            self._val = validation_samples(open_dataset(self.cfg.data.val), self.outliers(), self.cfg)
        return self._val

    def validate(self, model, device) -> dict:
        from synboost.training.segmentation import evaluate_miou

        if self._clean_val is None:
            self._clean_val = open_dataset(self.cfg.data.val)
        miou = evaluate_miou(model, self._clean_val, device, self.cfg.data.val_size or None)["miou"]
        res = score_outliers(model, self.validation_set(), device, self.method)
        score = {"ap": res["ap"], "miou": miou, "mean": 0.5 * (res["ap"] + miou)}[self.cfg.select]
        return {"score": score, "miou": miou, **res}

    def checkpoint_meta(self) -> dict:
        return {"kind": self.kind, "architecture": "deeplabv3plus", "config": to_dict(self.cfg),
                "model": to_dict(self.model_config()),
                "outlier": {"method": self.method,
                            "base_segmenter": str(Path(self.cfg.segmenter).resolve()) if self.cfg.segmenter else ""}}

    def on_fit_start(self, engine) -> None:
        """With a starting segmenter: its clean mIoU and plain-energy AP on the validation outliers (the summary's
        ``base_val``)."""
        if not self.cfg.segmenter:
            return
        from synboost.training.segmentation import evaluate_miou

        cfg = self.cfg
        base = self.base_model().to(engine.device)
        miou = evaluate_miou(base, open_dataset(cfg.data.val), engine.device, cfg.data.val_size or None)["miou"]
        self.base_val = {"miou": miou, **{f"energy_{k}": v for k, v in
                                          score_outliers(base, self.validation_set(), engine.device, "energy").items()}}
        if engine.progress:
            print(f"[{self.name}] base segmenter: clean val mIoU {100 * miou:.2f}, energy AP on the validation "
                  f"outliers {100 * self.base_val['energy_ap']:.2f}")

    def summary_fields(self) -> dict:
        """``base_val``: the starting segmenter's numbers (None from scratch and off rank 0)."""
        return {"base_val": self.base_val}

    def on_fit_end(self, model, summary, engine) -> None:
        """Publish the best epoch as ``segmenter.safetensors`` and a ``pipeline.yaml`` scoring its method."""
        publish_run(summary, self.cfg.out, "segmenter.safetensors", "segmenter", method=self.cfg.method)


@torch.no_grad()
def score_outliers(model: nn.Module, samples, device, method: str) -> dict:
    """AP / FPR95 / AUROC of ``method``'s score (``"energy"`` for a plain segmenter: the reference) on images
    with pasted outliers (label ``OUTLIER``) against their inlier pixels (void excluded)."""
    res = score_validation(model, samples, device, method)
    return {k: res[k] for k in ("ap", "fpr95", "auroc")}


def train_outlier(cfg: OutlierTrainingConfig, resume: bool = False, progress: bool = True) -> dict:
    """``synboost train outlier``: re-train; then (rank 0) write ``segmenter.safetensors`` (best epoch by
    ``select``) and ``pipeline.yaml`` (its method). With a starting segmenter, the summary's ``base_val`` holds
    that segmenter's clean mIoU and its plain-energy AP on the same validation outliers, for comparison."""
    return run_stage(OutlierTask(cfg), cfg, resume=resume, progress=progress)
