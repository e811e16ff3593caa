"""``synboost plot-log RUN_DIR``: the curves of a training run's ``train_log.jsonl`` as one PNG (matplotlib, no
TensorBoard): the train loss (and learning rate) per step, the validation numbers per epoch."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub) -> None:
    """``plot-log``."""
    p = sub.add_parser("plot-log", help="draw a training run's curves (train_log.jsonl) to a PNG")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder of `synboost train` (or its train_log.jsonl)")
    p.add_argument("--out", help="the PNG (default: RUN_DIR/train_log.png)")
    p.add_argument("--all", action="store_true", help="every number logged per step (each loss term), not only "
                                                      "the loss and the learning rate")
    p.set_defaults(run=run, interrupt="interrupted; nothing was written: run it again")


def run(a: argparse.Namespace) -> None:
    """Read the log, draw, say where the PNG is."""
    from synboost.training.loggers import read_train_log
    from synboost.viz import plot_training_log

    steps, epochs, notes = read_train_log(a.run_dir, every_key=a.all)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    run_dir = Path(a.run_dir).parent if Path(a.run_dir).is_file() else Path(a.run_dir)
    out = Path(a.out) if a.out else run_dir / "train_log.png"
    plot_training_log(steps, epochs, out, title=str(run_dir))
    last = {k: v[-1][1] for k, v in epochs.items()}
    shown = ", ".join(f"{k} {v:.4g}" for k, v in last.items())
    print(f"{out}: {max(map(len, steps.values()), default=0)} steps, {max(map(len, epochs.values()), default=0)} epochs"
          + (f" (last: {shown})" if shown else ""))
