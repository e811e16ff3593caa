"""``synboost data world``: write the procedural driving world (``data synth``: its old, hidden name)."""
from __future__ import annotations

import argparse

from synboost.cli.common import add_config, alias, no_resume, size, visible_metavar


def _world_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--out")
    s.add_argument("--n", type=int, help="number of scenes over all splits")
    s.add_argument("--size", type=size, help="HxW, e.g. 256x512")
    s.add_argument("--seed", type=int)
    add_config(s)
    s.set_defaults(run=run, interrupt=no_resume("data world", " (the world is deterministic; files written "
                                                              "again are identical)"))


def register(sub) -> None:
    """``data world`` (and the hidden ``data synth``)."""
    d = sub.add_parser("data", help="datasets")
    what = d.add_subparsers(dest="what", required=True)
    _world_args(what.add_parser("world", help="write the procedural driving world (train/val/anomaly test splits)"))
    _world_args(alias(what, "synth", "synboost data synth", "synboost data world"))
    what.metavar = visible_metavar(what)


def run(a: argparse.Namespace) -> None:
    """Write the world of ``--config`` / ``--set`` with the flags on top."""
    from synboost.config import SyntheticWorldConfig, load_config
    from synboost.data.synthetic import write_world

    ov = list(a.overrides)
    for key, val in (("out", a.out), ("n", a.n), ("seed", a.seed)):
        if val is not None:
            ov.append(f"{key}={val}")
    if a.size:
        ov += [f"height={a.size[0]}", f"width={a.size[1]}"]
    cfg = load_config(SyntheticWorldConfig, a.config, ov)
    meta = write_world(cfg)
    print(f"wrote {sum(meta['splits'].values())} scenes to {cfg.out} ({meta['splits']})")
