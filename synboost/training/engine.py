"""THE training loop, once, for every stage.

A stage is a :class:`~synboost.training.task.Task` (:mod:`synboost.training.task`): it builds its model, optimiser,
scheduler and dataset, does one step on a batch and validates; its hooks add what else it needs (sample grids,
the products written at the end). The engine adds everything else:

* device: CUDA when there is one (``device: auto``), else the CPU, same code; bf16 autocast on CUDA (``amp``), and
  on a CPU with bf16 units when asked for (``Engine(cpu_amp=True)``; see :func:`cpu_bf16_supported`);
* ``torchrun``: DistributedDataParallel (NCCL on GPUs, gloo on CPUs), DistributedSampler, rank-0 logging,
  validation and checkpoints;
* determinism: the data order, every sample's augmentation and the dropout RNG are functions of (seed, epoch),
  so a run stopped after any epoch and resumed gives the same weights as one that never stopped;
* checkpoints every epoch: ``best`` by the task's validation score, then ``last`` (weights + training state +
  an index naming both by hash, one unit: :mod:`synboost.training.snapshot`); ``resume`` continues from ``last``;
* one run per output folder (:class:`synboost.runtime.FolderLock`, held by rank 0 for the whole fit);
* logs: ``train_log.jsonl`` (one JSON object per logged step and per epoch), a progress bar with loss and ETA;
  ``logger="tensorboard"`` adds TensorBoard (scalars, validation, sample grids: :mod:`synboost.training.loggers`);
* an exponential moving average of the weights (``loop.ema``, torch's ``AveragedModel``): when on, it is what is
  validated, selected as ``best`` and published; ``last`` keeps the trained weights and the average's state;
* the resolved config beside the outputs.
"""
from __future__ import annotations

import json
import math
import os
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from synboost.config import LoopConfig, save_config
from synboost.data.io import write_json
from synboost.detectors.components import save_component
from synboost.errors import SynboostError
from synboost.hub.checkpoint import load_into, load_model, load_state, read_meta
from synboost.runtime import FolderLock, cpu_bf16_supported, dist_info, pick_device
from synboost.training import snapshot
from synboost.training.loggers import TensorBoardLogger, resolve_loggers

# what a stage gives the engine lives in task.py; imported here too, where older code looked for it
from synboost.training.task import (  # noqa: F401
    SeededDataset,
    Task,
    linear_decay_schedule,
    poly_schedule,
)


def _each(x) -> list:
    return [] if x is None else list(x.values()) if isinstance(x, dict) else [x]


def _state_of(x):
    if x is None:
        return {}
    return {k: v.state_dict() for k, v in x.items()} if isinstance(x, dict) else x.state_dict()


def _load_state(x, st) -> None:
    if x is None or not st:
        return
    if isinstance(x, dict):
        for k, v in x.items():
            v.load_state_dict(st[k])
    else:
        x.load_state_dict(st)


def _seed_all(*parts: int) -> None:
    s = int(np.random.SeedSequence(list(parts)).generate_state(1)[0])
    torch.manual_seed(s)
    np.random.seed(s % 2**32)


def _plateau(sc) -> bool:
    return isinstance(sc, torch.optim.lr_scheduler.ReduceLROnPlateau)


class Engine:
    """Runs a :class:`Task`: ``fit()`` = ``setup`` + (``train_epoch`` + ``validate_and_save``) per epoch + the
    summary and the task's end hook, all under the folder lock. ``cpu_amp``: bf16 autocast on the CPU too (when
    ``loop.amp`` and :func:`cpu_bf16_supported`); off by default, so the CPU numbers are float32's. ``logger``:
    ``"tensorboard"`` also logs to TensorBoard (default: ``loop.logger`` if the loop config has it, else
    ``$SYNBOOST_LOGGER``; see :func:`synboost.training.loggers.resolve_loggers`); ``train_log.jsonl`` is always
    written."""

    def __init__(self, task: Task, loop: LoopConfig, out_dir: str | os.PathLike, config: Any = None,
                 progress: bool = True, cpu_amp: bool = False, logger: str | None = None):
        self.task, self.loop, self.out = task, loop, Path(out_dir)
        self.config = config
        self.progress = progress
        self.world, self.rank, self.local_rank = dist_info()
        self.device = pick_device(loop.device, self.local_rank)
        self.log_path = self.out / "train_log.jsonl"
        self.loggers = resolve_loggers(logger, loop)
        self._tensorboard = None
        self.amp_device = self._amp_device(cpu_amp)
        task.amp_device = self.amp_device
        if cpu_amp and loop.amp and self.device.type == "cpu" and self.amp_device is None and self.is_main:
            # asked for bf16 on a CPU without bf16 units: said once per stage, never a silent fall-back
            print(f"note: {self.name}: train.amp_cpu asks for bf16, but this CPU has no bf16 units (AVX512-BF16 or "
                  "AMX), so it trains in float32: slower, and its numbers are not those of a bf16 machine")
        self.best_val: dict = {}
        self.val: dict = {}
        self.start, self.best, self.epochs_run = 0, -math.inf, 0
        self.ema: AveragedModel | None = None

    # ------------------------------------------------------------------------------------------------ helpers
    @property
    def name(self) -> str:
        """The task's label (its ``name``, else its ``kind``)."""
        return self.task.name or self.task.kind

    @property
    def precision(self) -> str:
        """What the forward passes compute in: "bf16" under autocast, else "fp32" (in ``summary.json``)."""
        return "bf16" if self.amp_device else "fp32"

    @property
    def is_main(self) -> bool:
        """Rank 0 (the one process without torchrun)."""
        return self.rank == 0

    @property
    def eval_model(self) -> nn.Module:
        """What is validated, saved as ``best`` and published: the moving average when ``loop.ema`` is on, else
        the trained model."""
        return self.ema.module if self.ema is not None else self.model

    def _amp_device(self, cpu_amp: bool) -> str | None:
        if not self.loop.amp:
            return None
        if self.device.type == "cuda":
            return "cuda"
        return "cpu" if cpu_amp and self.device.type == "cpu" and cpu_bf16_supported() else None

    def _log(self, record: dict) -> None:
        """Rank 0: one step record (it has ``step``, the step of the epoch; ``global_step`` is added) or epoch
        record, to ``train_log.jsonl`` and to the other loggers."""
        if not self.is_main:
            return
        if "step" in record:
            record = {**record, "global_step": (record["epoch"] - 1) * self.steps + record["step"]}
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if "tensorboard" in self.loggers:
            if self._tensorboard is None:  # after setup: the resumed epoch is known
                self._tensorboard = TensorBoardLogger(self.out / "tensorboard", self.start * self.steps + 1,
                                                      self.out / "samples")
                weakref.finalize(self, self._tensorboard.close)
            self._tensorboard.log(record, record.get("global_step", record["epoch"] * self.steps))

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def _ckpt(self, name: str) -> Path:
        return self.out / f"{name}.safetensors"

    def _save_weights(self, path: Path, model: nn.Module, epoch: int, val: dict) -> None:
        meta = dict(self.task.checkpoint_meta())
        kind, cfg = meta.pop("kind", self.task.kind), meta.pop("model", None)
        save_component(path, model, kind, cfg, **meta, epoch=epoch, val=val)

    def _save_last(self, epoch: int, val: dict) -> None:
        state = {"epoch": epoch, "best": self.best, "best_val": self.best_val, "optimizer": _state_of(self.opt),
                 "scheduler": _state_of(self.sched)}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        snapshot.write_last(self.out, lambda p: self._save_weights(p, self.model, epoch, val), state, epoch)

    # ------------------------------------------------------------------------------------------------- setup
    def setup(self, resume: bool = False) -> None:
        """Process group, output folder and config, model, optimizer, data, scheduler and (``resume``) the state
        of the last consistent checkpoint."""
        loop = self.loop
        if resume:
            self._check_same_run()
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend)
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.config is not None:
                save_config(self.config, self.out / "config.yaml")
        _seed_all(loop.seed, 0)
        model = self.task.build_model().to(self.device)
        if loop.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        if not 0.0 <= loop.ema < 1.0:
            raise SynboostError(f"{self.name}: train.ema is {loop.ema}; give a decay in [0, 1) (e.g. 0.99), or 0 "
                                "for no moving average")
        self.ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(loop.ema), use_buffers=True)
                    if loop.ema else None)
        self.opt = self.task.build_optimizer(model)
        self.dataset = self.task.train_dataset()
        self.sampler = DistributedSampler(self.dataset, num_replicas=self.world, rank=self.rank, shuffle=True,
                                          seed=loop.seed, drop_last=True)
        steps = len(self.sampler) // loop.batch_size
        if loop.steps_per_epoch:
            steps = min(steps, loop.steps_per_epoch) if steps else loop.steps_per_epoch
        if steps == 0:
            raise SynboostError(f"training set has {len(self.dataset)} samples, fewer than one batch of "
                                f"{loop.batch_size} per process; lower train.batch_size")
        self.steps = steps
        self.sched = self.task.build_scheduler(self.opt, steps * loop.epochs)
        self.start, self.best, self.best_val, self.val, self.epochs_run = 0, -math.inf, {}, {}, 0
        if resume:
            self._resume()
        self.net = self.task.wrap_distributed(model) if self.world > 1 else model

    def _check_same_run(self) -> None:
        """Resuming continues the run in ``out`` only under the config it was started with
        (:func:`~synboost.training.snapshot.resume_difference`)."""
        diff = snapshot.resume_difference(self.out, self.config)
        if diff:
            raise SynboostError(f"{self.out / 'config.yaml'}: the run there was started with another config ({diff}); "
                                "resuming takes the same config (only train.epochs, device, workers and logging may "
                                "change): set it back, or start over with --fresh or another out folder")

    def _resume(self) -> None:
        pair = snapshot.find_last(self.out)
        if pair is None:  # nothing to resume: a fresh run (resuming is the default, so say so only for leftovers)
            if self.is_main and any((self.out / f).exists() for f in ("last.safetensors", "last_state.pt")):
                print(f"no complete checkpoint in {self.out} to resume from (the last one was cut short); "
                      "starting afresh")
            return
        sd, _ = load_model(pair.weights, self.task.kind)
        load_into(self.model, sd, str(pair.weights))
        st = load_state(pair.state)
        _load_state(self.opt, st["optimizer"])
        _load_state(self.sched, st.get("scheduler"))
        if (self.ema is not None) != ("ema" in st):
            raise SynboostError(f"{pair.state}: this run was started with{'out' if 'ema' not in st else ''} a moving "
                                f"average of the weights and train.ema is now {self.loop.ema}; set train.ema as it "
                                "was, or train afresh in another out folder")
        if self.ema is not None:
            self.ema.load_state_dict(st["ema"])
        self.start, self.best = int(st["epoch"]) + 1, float(st["best"])
        self.best_val = dict(st.get("best_val") or {})
        if not self.best_val and self._ckpt("best").is_file():  # a state written before best_val was kept
            bm = read_meta(self._ckpt("best"))
            self.best_val = {**bm.get("val", {}), "epoch": int(bm.get("epoch", 0)) + 1}
        self._barrier()  # every rank has read the pair before rank 0 renames kept files back
        if self.is_main:
            if pair.from_prev:
                snapshot.restore(pair)
            if pair.note:
                print(f"note: {pair.note}")
            print(f"resuming from {self._ckpt('last')} (epoch {self.start} of {self.loop.epochs})")

    # -------------------------------------------------------------------------------------------- one epoch
    def train_epoch(self, epoch: int) -> dict:
        """One pass of ``steps`` batches (epoch-seeded data order, augmentation and RNG); returns the mean loss,
        the number of steps and the seconds taken."""
        loop, task, net = self.loop, self.task, self.net
        self.sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        _seed_all(loop.seed, epoch + 1, self.rank)
        loader = DataLoader(self.dataset, batch_size=loop.batch_size, sampler=self.sampler, drop_last=True,
                            num_workers=loop.workers, pin_memory=self.device.type == "cuda", persistent_workers=False)
        net.train()
        bar = tqdm(total=self.steps, desc=f"{self.name} epoch {epoch + 1}/{loop.epochs}", unit="step",
                   disable=not (self.progress and self.is_main), dynamic_ncols=True, leave=False)
        t0, running, n = time.time(), 0.0, 0
        amp = self.amp_device
        for i, batch in enumerate(loader):
            if i >= self.steps:
                break
            if task.manual_step:
                loss, logs = task.train_step(net, batch, self.device, self.opt)
            else:
                with torch.autocast(amp or "cuda", dtype=torch.bfloat16, enabled=amp is not None):
                    loss, logs = task.train_step(net, batch, self.device)
            if not torch.isfinite(loss):
                raise SynboostError(f"{self.name}: loss became {loss.item()} at epoch {epoch + 1} step {i + 1}; the "
                                    f"last good checkpoint is {self._ckpt('last')}; lower train.lr and resume")
            if not task.manual_step:
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            for sc in _each(self.sched):
                if not _plateau(sc):
                    sc.step()
            running += float(loss.detach())
            n += 1
            if self.is_main:
                task.after_step(self.model, epoch * self.steps + i + 1, self.out)
            bar.set_postfix(loss=f"{running / n:.4f}")
            bar.update()
            if loop.log_every and (i + 1) % loop.log_every == 0:
                self._log({"epoch": epoch + 1, "step": i + 1, "loss": float(loss.detach()),
                           "lr": _each(self.opt)[0].param_groups[0]["lr"], **{k: float(v) for k, v in logs.items()}})
        bar.close()
        return {"loss": running / max(n, 1), "steps": n, "seconds": time.time() - t0}

    def validate_and_save(self, epoch: int, train: dict) -> dict:
        """Rank 0: validate, step plateau schedulers, write ``best`` (if improved) and then the ``last`` unit,
        log the epoch; every rank then waits for rank 0. Returns the validation numbers ({} off rank 0)."""
        if self.is_main:
            val = self.task.validate(self.eval_model, self.device)
            for sc in _each(self.sched):  # plateau schedulers step once per epoch on the validation loss
                if _plateau(sc):
                    sc.step(val.get("loss", train["loss"]))
            score = float(val.get("score", -train["loss"]))
            improved = score > self.best
            self.best = max(self.best, score)
            if improved:
                self.best_val = {**val, "epoch": epoch + 1}
                self._save_weights(self._ckpt("best"), self.eval_model, epoch, val)
            self._save_last(epoch, val)
            record = {"epoch": epoch + 1, "train_loss": train["loss"], "seconds": train["seconds"],
                      **{f"val_{k}": v for k, v in val.items()}}
            self._log(record)
            if self.progress:
                shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
                tqdm.write(f"[{self.name}] {shown}")
            self.val = val
        self._barrier()
        return self.val

    # --------------------------------------------------------------------------------------------------- fit
    def fit(self, resume: bool = False) -> dict:
        """Train; returns a summary (paths of the last and best checkpoints, whether the run finished, the final
        and best validation, and the task's ``summary_fields``); rank 0 also writes it as ``summary.json``."""
        loop = self.loop
        with FolderLock(self.out, "train"):  # rank 0 only; refuses a folder another live run writes into
            if self.is_main:
                self.task.on_fit_start(self)
            try:
                self.setup(resume)
                for epoch in range(self.start, loop.epochs):
                    if loop.stop_after and self.epochs_run >= loop.stop_after:
                        break
                    self.validate_and_save(epoch, self.train_epoch(epoch))
                    self.epochs_run += 1
            finally:
                if self.world > 1 and dist.is_initialized():
                    dist.destroy_process_group()
            finished = not (loop.stop_after and self.start + self.epochs_run < loop.epochs)
            summary = {"out": str(self.out), "last": str(self._ckpt("last")), "best": str(self._ckpt("best")),
                       "finished": finished, "precision": self.precision, "val": self.val, "best_val": self.best_val,
                       **self.task.summary_fields()}
            if self.is_main:
                write_json(self.out / "summary.json", summary)
                if finished:
                    self.task.on_fit_end(self.eval_model, summary, self)
        return summary
