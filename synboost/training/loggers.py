"""Where the training engine's records go, and reading them back.

Every run writes ``train_log.jsonl`` (one JSON object per logged step and per epoch; step records carry
``global_step``). ``logger="tensorboard"`` (an :class:`~synboost.training.engine.Engine` argument, ``train.logger``
where the loop config has it, or the ``SYNBOOST_LOGGER`` environment variable) writes the same records to
TensorBoard beside it, in ``<out>/tensorboard/``:

* ``train/<key>`` per logged step (the loss, the learning rate, every term a task logs), at the global step;
* ``epoch/train_loss``, ``epoch/seconds`` and ``val/<key>`` (the validation numbers) per epoch, at the global step
  that ends the epoch;
* ``samples``: the image grids a task writes under ``<out>/samples/`` (the synthesis stage's, ``step<N>.png``),
  read back from disk after they are written, so logging them changes nothing in training.

TensorBoard is an optional extra (``pip install tensorboard``); asking for it without the package stops before
training with one line saying so. A resumed run drops the TensorBoard events past the resumed epoch (the steps of
an epoch cut short are logged again). :func:`read_train_log` reads the JSONL back for ``synboost plot-log``.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from synboost.errors import ConfigError, DataError, SynboostError

LOGGERS = ("jsonl", "tensorboard")
ENV = "SYNBOOST_LOGGER"
_STEP_KEYS = ("epoch", "step", "global_step")
_DIGITS = re.compile(r"(\d+)")


def parse_loggers(spec: str | None) -> tuple[str, ...]:
    """``"tensorboard"`` / ``"jsonl,tensorboard"`` / ``""`` -> the loggers, ``jsonl`` always first."""
    names = [s.strip() for s in (spec or "").split(",") if s.strip()]
    unknown = sorted(set(names) - set(LOGGERS))
    if unknown:
        raise ConfigError(f"logger '{unknown[0]}': choose one of {', '.join(LOGGERS)} (jsonl is always written)")
    return ("jsonl",) + tuple(n for n in LOGGERS[1:] if n in names)


def resolve_loggers(arg: str | None, loop: Any = None) -> tuple[str, ...]:
    """The engine's loggers: its argument, else ``loop.logger`` (if the loop config has one), else ``$SYNBOOST_LOGGER``;
    TensorBoard is checked to be importable here, before any training."""
    names = parse_loggers(arg or getattr(loop, "logger", "") or os.environ.get(ENV, ""))
    if "tensorboard" in names:
        require_tensorboard()
    return names


def require_tensorboard():
    """``torch.utils.tensorboard.SummaryWriter``, or one line naming the package to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SynboostError("the tensorboard logger needs the tensorboard package: pip install tensorboard (or "
                            "pip install 'synboost[tensorboard]')") from None
    return SummaryWriter


def _numbers(record: dict) -> dict[str, float]:
    return {k: float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _STEP_KEYS}


class TensorBoardLogger:
    """The engine's records as TensorBoard scalars, and the task's sample grids as images (see the module
    docstring). ``purge_step``: events of an earlier run at this global step or later are dropped (resume)."""

    def __init__(self, log_dir: str | os.PathLike, purge_step: int | None = None,
                 samples_dir: str | os.PathLike | None = None) -> None:
        self.writer = require_tensorboard()(log_dir=str(log_dir), purge_step=purge_step)
        self.samples = Path(samples_dir) if samples_dir else None
        self.first = purge_step or 0
        self.seen: set[str] = set()

    def log(self, record: dict, global_step: int) -> None:
        """One engine record: a step record (it has ``step``) or an epoch record; then new sample grids; flushed."""
        if "step" in record:
            for k, v in _numbers(record).items():
                self.writer.add_scalar(f"train/{k}", v, global_step)
        else:
            for k, v in _numbers(record).items():
                self.writer.add_scalar(f"val/{k[4:]}" if k.startswith("val_") else f"epoch/{k}", v, global_step)
        self._samples()
        self.writer.flush()

    def _samples(self) -> None:
        if self.samples is None or not self.samples.is_dir():
            return
        from synboost.data.io import read_image

        for f in sorted(self.samples.glob("*.png")):
            if f.name in self.seen:
                continue
            self.seen.add(f.name)
            digits = _DIGITS.findall(f.stem)
            step = int(digits[-1]) if digits else 0
            if step >= self.first:
                self.writer.add_image("samples", read_image(f), step, dataformats="HWC")

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


def read_train_log(run_dir: str | os.PathLike, every_key: bool = False
                   ) -> tuple[dict[str, list[tuple[float, float]]], dict[str, list[tuple[float, float]]], list[str]]:
    """The curves of ``<run_dir>/train_log.jsonl`` (or of that file itself): (per-step series keyed by name, as
    (global step, value) points: ``train loss`` and ``lr``, with ``every_key`` every logged number; per-epoch
    series: ``train loss (epoch mean)`` and each validation number) and notes about lines that could not be used.
    Records repeated by a resumed run replace the earlier ones (the later run's values are kept)."""
    p = Path(run_dir)
    path = p if p.is_file() else p / "train_log.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: no training log here; give a run folder of `synboost train` (it holds "
                        "train_log.jsonl)")
    records, notes = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            notes.append(f"{path}: line {n} is not JSON (a run stopped while writing it?); left out")
            continue
        if isinstance(rec, dict) and "epoch" in rec:
            records.append(rec)
    per_epoch = max([r["step"] for r in records if "step" in r] or [1])
    if any("step" in r and "global_step" not in r for r in records):
        notes.append(f"{path}: records without global_step (an older log): step = (epoch - 1) x {per_epoch} + step, "
                     "assuming every epoch logged its last step")
    steps: dict[str, dict[float, float]] = {}
    epochs: dict[str, dict[float, float]] = {}
    for r in records:
        values = _numbers(r)
        if "step" in r:
            x = r.get("global_step", (r["epoch"] - 1) * per_epoch + r["step"])
            for k, v in values.items():
                if every_key or k in ("loss", "lr"):
                    steps.setdefault("train loss" if k == "loss" else k, {})[x] = v
        else:
            for k, v in values.items():
                if k == "train_loss":
                    epochs.setdefault("train loss (epoch mean)", {})[r["epoch"]] = v
                elif k.startswith("val_"):
                    epochs.setdefault(k, {})[r["epoch"]] = v
    if not steps and not epochs:
        raise DataError(f"{path}: no step or epoch records with numbers to plot")

    def points(d):
        return {k: sorted(v.items()) for k, v in d.items()}

    return points(steps), points(epochs), notes
