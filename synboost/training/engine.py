"""THE training loop, once, for every stage.

A stage is a :class:`Task`: it builds its model, optimiser, scheduler and dataset, does one step on a batch and
validates. The engine adds everything else:

* device: CUDA when there is one (``device: auto``), else the CPU, same code; bf16 autocast on CUDA (``amp``);
* ``torchrun``: DistributedDataParallel (NCCL on GPUs, gloo on CPUs), DistributedSampler, rank-0 logging,
  validation and checkpoints;
* determinism: the data order, every sample's augmentation and the dropout RNG are functions of (seed, epoch),
  so a run stopped after any epoch and resumed gives the same weights as one that never stopped;
* checkpoints every epoch (``last``: weights as safetensors + training state), ``best`` by the task's
  validation score; ``resume`` continues from ``last``;
* logs: ``train_log.jsonl`` (one JSON object per logged step and per epoch), a progress bar with loss and ETA;
* the resolved config beside the outputs.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from synboost.config import LoopConfig, save_config
from synboost.data.io import write_json
from synboost.detectors.components import save_component
from synboost.errors import SynboostError
from synboost.hub.checkpoint import load_into, load_model, load_state, read_meta, save_state
from synboost.runtime import dist_info, pick_device


class Task(Protocol):
    """What a stage gives the engine. ``build_optimizer`` / ``build_scheduler`` may return one object or a dict of
    them (a GAN has two). With ``manual_step = True`` the task's ``train_step(model, batch, device, optimizers)``
    does its own backward passes and optimizer steps and returns a detached loss; otherwise the engine does
    ``loss.backward(); optimizer.step()``. An optional ``wrap_distributed(model)`` replaces the default
    ``DistributedDataParallel(model)`` (a GAN wraps its generator and discriminator separately), and an optional
    ``after_step(model, global_step, out_dir)`` runs on rank 0 after every step (sample grids, ...)."""

    kind: str  #: checkpoint kind, e.g. "segmenter"; an optional ``name`` labels progress and logs (default: kind)

    def build_model(self) -> nn.Module: ...
    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer: ...
    def build_scheduler(self, opt: torch.optim.Optimizer, total_steps: int) -> Any: ...
    def train_dataset(self) -> Dataset: ...
    def train_step(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, dict]: ...
    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]: ...
    def checkpoint_meta(self) -> dict: ...


class SeededDataset(Dataset):
    """A map-style dataset over ``items`` whose per-sample randomness (augmentation) is drawn from
    ``self.rng(i)``, a function of (seed, epoch, index): the engine calls ``set_epoch`` before every epoch, so a
    resumed run and data-loader workers see exactly the same samples as an uninterrupted single process."""

    def __init__(self, items, seed: int = 0):
        self.items, self.seed, self.epoch = items, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, i])

    def __len__(self) -> int:
        return len(self.items)


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


class Engine:
    def __init__(self, task: Task, loop: LoopConfig, out_dir: str | os.PathLike, config: Any = None,
                 progress: bool = True):
        self.task, self.loop, self.out = task, loop, Path(out_dir)
        self.config = config
        self.progress = progress
        self.world, self.rank, self.local_rank = dist_info()
        self.device = pick_device(loop.device, self.local_rank)
        self.log_path = self.out / "train_log.jsonl"

    # ------------------------------------------------------------------------------------------------ helpers
    @property
    def name(self) -> str:
        return getattr(self.task, "name", self.task.kind)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _log(self, record: dict) -> None:
        if self.is_main:
            with open(self.log_path, "a") as f:
                import json
                f.write(json.dumps(record) + "\n")

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def _ckpt(self, name: str) -> Path:
        return self.out / f"{name}.safetensors"

    def _save_weights(self, path: Path, model: nn.Module, epoch: int, val: dict) -> None:
        meta = dict(self.task.checkpoint_meta())
        kind, cfg = meta.pop("kind", self.task.kind), meta.pop("model", None)
        save_component(path, model, kind, cfg, **meta, epoch=epoch, val=val)

    def _save(self, model: nn.Module, opt, sched, epoch: int, best: float, val: dict) -> None:
        self._save_weights(self._ckpt("last"), model, epoch, val)
        save_state(self.out / "last_state.pt", {
            "epoch": epoch, "best": best, "best_val": self.best_val, "optimizer": _state_of(opt),
            "scheduler": _state_of(sched),
        })

    # --------------------------------------------------------------------------------------------------- fit
    def fit(self, resume: bool = False) -> dict:
        """Train; returns a summary (paths of the last and best checkpoints, final validation)."""
        loop = self.loop
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
        opt = self.task.build_optimizer(model)
        dataset = self.task.train_dataset()
        sampler = DistributedSampler(dataset, num_replicas=self.world, rank=self.rank, shuffle=True,
                                     seed=loop.seed, drop_last=True)
        per_rank = len(sampler)
        steps = per_rank // loop.batch_size
        if loop.steps_per_epoch:
            steps = min(steps, loop.steps_per_epoch) if steps else loop.steps_per_epoch
        if steps == 0:
            raise SynboostError(f"training set has {len(dataset)} samples, fewer than one batch of "
                                f"{loop.batch_size} per process; lower train.batch_size")
        sched = self.task.build_scheduler(opt, steps * loop.epochs)

        start, best = 0, -math.inf
        self.best_val: dict = {}
        if resume and self._ckpt("last").is_file() and (self.out / "last_state.pt").is_file():
            sd, meta = load_model(self._ckpt("last"), self.task.kind)
            load_into(model, sd, str(self._ckpt("last")))
            st = load_state(self.out / "last_state.pt")
            _load_state(opt, st["optimizer"])
            _load_state(sched, st.get("scheduler"))
            start, best = int(st["epoch"]) + 1, float(st["best"])
            self.best_val = dict(st.get("best_val") or {})
            if not self.best_val and self._ckpt("best").is_file():  # a state written before best_val was kept
                bm = read_meta(self._ckpt("best"))
                self.best_val = {**bm.get("val", {}), "epoch": int(bm.get("epoch", 0)) + 1}
            if self.is_main:
                print(f"resuming from {self._ckpt('last')} (epoch {start} of {loop.epochs})")
        elif resume and self.is_main:
            print(f"no checkpoint in {self.out} to resume from; starting afresh")

        if self.world > 1:
            wrap = getattr(self.task, "wrap_distributed", None)
            net = wrap(model) if wrap is not None else nn.parallel.DistributedDataParallel(model)
        else:
            net = model
        manual = getattr(self.task, "manual_step", False)
        use_amp = loop.amp and self.device.type == "cuda"
        val: dict = {}
        epochs_run = 0
        for epoch in range(start, loop.epochs):
            if loop.stop_after and epochs_run >= loop.stop_after:
                break
            sampler.set_epoch(epoch)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            _seed_all(loop.seed, epoch + 1, self.rank)
            loader = DataLoader(dataset, batch_size=loop.batch_size, sampler=sampler, drop_last=True,
                                num_workers=loop.workers, pin_memory=self.device.type == "cuda",
                                persistent_workers=False)
            net.train()
            bar = tqdm(total=steps, desc=f"{self.name} epoch {epoch + 1}/{loop.epochs}", unit="step",
                       disable=not (self.progress and self.is_main), dynamic_ncols=True, leave=False)
            t0, running, n = time.time(), 0.0, 0
            for i, batch in enumerate(loader):
                if i >= steps:
                    break
                if manual:
                    loss, logs = self.task.train_step(net, batch, self.device, opt)
                else:
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                        loss, logs = self.task.train_step(net, batch, self.device)
                if not torch.isfinite(loss):
                    raise SynboostError(f"{self.name}: loss became {loss.item()} at epoch {epoch + 1} step "
                                        f"{i + 1}; the last good checkpoint is {self._ckpt('last')}; "
                                        "lower train.lr and resume")
                if not manual:
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                for sc in _each(sched):
                    if not isinstance(sc, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        sc.step()
                running += float(loss.detach())
                n += 1
                after = getattr(self.task, "after_step", None)
                if after is not None and self.is_main:
                    after(model, epoch * steps + i + 1, self.out)
                bar.set_postfix(loss=f"{running / n:.4f}")
                bar.update()
                if loop.log_every and (i + 1) % loop.log_every == 0:
                    self._log({"epoch": epoch + 1, "step": i + 1, "loss": float(loss.detach()),
                               "lr": _each(opt)[0].param_groups[0]["lr"], **{k: float(v) for k, v in logs.items()}})
            bar.close()
            if self.is_main:
                val = self.task.validate(model, self.device)
                for sc in _each(sched):  # plateau schedulers step once per epoch on the validation loss
                    if isinstance(sc, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        sc.step(val.get("loss", running / max(n, 1)))
                score = float(val.get("score", -running / max(n, 1)))
                improved = score > best
                best = max(best, score)
                if improved:
                    self.best_val = {**val, "epoch": epoch + 1}
                self._save(model, opt, sched, epoch, best, val)
                if improved:
                    self._save_weights(self._ckpt("best"), model, epoch, val)
                record = {"epoch": epoch + 1, "train_loss": running / max(n, 1), "seconds": time.time() - t0,
                          **{f"val_{k}": v for k, v in val.items()}}
                self._log(record)
                if self.progress:
                    shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in record.items())
                    tqdm.write(f"[{self.name}] {shown}")
            self._barrier()
            epochs_run += 1
        finished = not (loop.stop_after and start + epochs_run < loop.epochs)
        summary = {"out": str(self.out), "last": str(self._ckpt("last")), "best": str(self._ckpt("best")),
                   "finished": finished, "val": val, "best_val": getattr(self, "best_val", {})}
        if self.is_main:
            write_json(self.out / "summary.json", summary)
        if self.world > 1:
            dist.destroy_process_group()
        return summary


def poly_schedule(opt, total_steps: int, power: float = 0.9):
    """The "poly" learning rate of DeepLab and PEBAL: lr x (1 - step / total_steps) ** power, per step."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda it: max(1 - it / max(total_steps, 1), 0.0) ** power)


def publish_run(summary: dict, out: str | os.PathLike, product: str, field: str, **pipeline) -> Path:
    """End a finished run: copy its best checkpoint (``summary["best"]``) to ``out/product`` atomically, write
    ``out/pipeline.yaml`` with the ``pipeline`` fields and the new file as its ``field`` (e.g. ``pebal``), and
    rewrite ``out/summary.json`` with both paths (the file under ``summary[field]``). Returns the file."""
    import shutil

    from synboost.data.io import atomic_path
    from synboost.detectors.pipeline import write_pipeline_file

    out = Path(out)
    path = out / product
    with atomic_path(path) as tmp:
        shutil.copyfile(summary["best"], tmp)
    summary[field] = str(path)
    summary["pipeline"] = str(write_pipeline_file(out / "pipeline.yaml", **pipeline, **{field: str(path.resolve())}))
    write_json(out / "summary.json", summary)
    return path
