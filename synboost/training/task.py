"""What a stage gives the training engine (:mod:`synboost.training.engine`, the one loop): the :class:`Task` it
subclasses, the :class:`SeededDataset` whose per-sample randomness is a function of (seed, epoch, index), and the
per-step learning-rate schedules the stages share."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset


class Task:
    """What a stage gives the engine; subclass it and fill in the ``build_*``, ``train_dataset``, ``train_step``,
    ``validate`` and ``checkpoint_meta`` methods; the hooks are no-ops unless overridden.

    ``build_optimizer`` / ``build_scheduler`` may return one object or a dict of them (a GAN has two). With
    ``manual_step = True`` the task's ``train_step(model, batch, device, optimizers)`` does its own backward passes
    and optimizer steps and returns a detached loss; otherwise ``train_step(model, batch, device)`` returns
    ``(loss, logs)`` and the engine does ``loss.backward(); optimizer.step()``."""

    kind: str = ""  #: checkpoint kind (a key of ``synboost.detectors.components.COMPONENT_KINDS``)
    name: str | None = None  #: labels progress and logs (None: ``kind``)
    manual_step: bool = False
    #: the engine's autocast device ("cuda", "cpu" or None for fp32), set before training; a ``manual_step`` task
    #: runs its forward passes under ``torch.autocast(amp_device, torch.bfloat16)`` itself when it is not None
    amp_device: str | None = None

    def build_model(self) -> nn.Module:
        """The network to train (on the CPU; the engine moves it)."""
        raise NotImplementedError

    def build_optimizer(self, model: nn.Module) -> Any:
        """An optimizer, or a dict of them."""
        raise NotImplementedError

    def build_scheduler(self, opt: Any, total_steps: int) -> Any:
        """A scheduler (stepped per step; ``ReduceLROnPlateau`` per epoch on the validation loss), a dict of them,
        or None (the default)."""
        return None

    def train_dataset(self) -> Dataset:
        """The training set (a :class:`SeededDataset` for per-epoch augmentation)."""
        raise NotImplementedError

    def train_step(self, model: nn.Module, batch: Any, device: torch.device, *opts) -> tuple[torch.Tensor, dict]:
        """(loss, logs of floats) of one batch (see the class docstring for ``manual_step``)."""
        raise NotImplementedError

    def validate(self, model: nn.Module, device: torch.device) -> dict:
        """Validation numbers after an epoch (rank 0); ``score`` (higher is better) selects ``best``, ``loss``
        steps plateau schedulers. Default: none (best = lowest training loss)."""
        return {}

    def checkpoint_meta(self) -> dict:
        """Metadata of the checkpoints: ``kind``, ``model`` (its config) and anything else to keep."""
        return {"kind": self.kind}

    def wrap_distributed(self, model: nn.Module) -> nn.Module:
        """The module trained under torchrun (default: ``DistributedDataParallel(model)``); the engine keeps
        saving the plain ``model``."""
        return nn.parallel.DistributedDataParallel(model)

    def after_step(self, model: nn.Module, global_step: int, out_dir: Path) -> None:
        """Rank 0, after every training step (sample grids, ...)."""

    def on_fit_start(self, engine: Any) -> None:
        """Rank 0, with the folder locked, before the model is built (reference numbers of a base model, ...);
        ``engine`` is the running :class:`~synboost.training.engine.Engine` (not imported here: the engine imports
        this module)."""

    def summary_fields(self) -> dict:
        """Fields this task adds to the run's summary on every rank (e.g. ``base_val``)."""
        return {}

    def on_fit_end(self, model: nn.Module, summary: dict, engine: Any) -> None:
        """Rank 0, with the folder still locked, after the last epoch of a finished run (not after a
        ``stop_after`` pause): write the stage's products and add their paths to ``summary``."""


class SeededDataset(Dataset):
    """A map-style dataset over ``items`` whose per-sample randomness (augmentation) is drawn from
    ``self.rng(i)``, a function of (seed, epoch, index): the engine calls ``set_epoch`` before every epoch, so a
    resumed run and data-loader workers see exactly the same samples as an uninterrupted single process."""

    def __init__(self, items, seed: int = 0):
        self.items, self.seed, self.epoch = items, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws ``rng`` gives."""
        self.epoch = epoch

    def rng(self, i: int) -> np.random.Generator:
        """The generator of sample ``i`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, i])

    def __len__(self) -> int:
        return len(self.items)


def poly_schedule(opt, total_steps: int, power: float = 0.9):
    """The "poly" learning rate of DeepLab and PEBAL: lr x (1 - step / total_steps) ** power, per step."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda it: max(1 - it / max(total_steps, 1), 0.0) ** power)


def linear_decay_schedule(opt, total_steps: int, fraction: float):
    """SPADE's learning rate (niter constant, then niter_decay linear): lr constant, then falling linearly to 0
    over the last ``fraction`` of the ``total_steps``, per step."""
    start, span = total_steps * (1.0 - fraction), max(total_steps * fraction, 1.0)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda it: min(1.0, max(0.0, 1.0 - (it - start) / span)))
