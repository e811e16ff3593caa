"""A run's ``last`` checkpoint as ONE unit: the weights (``last.safetensors``) and the training state
(``last_state.pt``: epoch, best score, optimizer and scheduler state) are two files, each written atomically, and a
small index ``last.json`` naming both with their sha256 is written after them. The index is the commit point:
resume trusts only a pair of files whose hashes match it, so a run killed between the two writes never resumes
with the weights of one epoch and the optimizer state of another.

Writing epoch ``e`` while the index names epoch ``e - 1``:

1. the files the index names are kept as ``last.prev.safetensors`` / ``last_state.prev.pt`` (hard links, else
   copies; no window in which ``last.safetensors`` is missing);
2. the weights, then the state, are written (atomic renames);
3. the index is rewritten (atomic) naming the new files, and the ``.prev`` files are dropped.

A kill anywhere leaves either the new pair or the previous one matching the index: :func:`find_last` looks the
files up by hash, so resume continues from epoch ``e`` or from epoch ``e - 1`` (which then re-runs epoch ``e``
exactly: the data order and the RNG are functions of (seed, epoch)). The first checkpoint of a run starts with an
index that names nothing, so a kill during it resumes afresh. A folder whose files match neither pair (edited by
hand, a damaged disk) is refused with one line. A folder without an index (written before it existed) is trusted
when its weights and state carry the same epoch.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from synboost.data.io import write_json
from synboost.errors import SynboostError
from synboost.hub.checkpoint import load_state, read_meta, save_state
from synboost.hub.registry import sha256_of

WEIGHTS, STATE, INDEX = "last.safetensors", "last_state.pt", "last.json"
PREV = {WEIGHTS: "last.prev.safetensors", STATE: "last_state.prev.pt"}
FORMAT = 1
START_OVER = "start over (`synboost train --fresh`, or resume=False)"
#: config fields a resumed run may change: how long and where it trains, and how it logs
RESUME_MAY_CHANGE = tuple(f"train.{k}" for k in ("epochs", "device", "workers", "log_every", "stop_after", "logger"))


def resume_difference(out: str | os.PathLike, config: Any) -> str | None:
    """How ``config`` differs from the one the run in ``out`` was started with (``key: then -> now``, bar
    :data:`RESUME_MAY_CHANGE`), when ``out`` holds a run to resume; None when there is none or it is the same
    run. Resuming under another config would continue the old weights under the new config's name."""
    from synboost.config.loading import saved_config_difference

    out = Path(out)
    saved = out / "config.yaml"
    if config is None or not saved.is_file() or not any((out / f).is_file() for f in (INDEX, STATE)):
        return None
    return saved_config_difference(config, saved, RESUME_MAY_CHANGE)


def read_index(out: str | os.PathLike) -> dict | None:
    """The index of ``out`` (None when there is none; a damaged one is one error)."""
    import json

    path = Path(out) / INDEX
    if not path.is_file():
        return None
    try:
        idx = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SynboostError(f"{path}: unreadable checkpoint index ({e}); delete it to resume from the files as they "
                            f"are, or {START_OVER}") from None
    if not isinstance(idx, dict) or idx.get("format") != FORMAT:
        raise SynboostError(f"{path}: not a checkpoint index of this version; delete it, or {START_OVER}")
    return idx


def _keep(src: Path, dst: Path) -> None:
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copyfile(src, dst)


def write_last(out: str | os.PathLike, write_weights: Callable[[Path], Any], state: Mapping[str, Any],
               epoch: int) -> None:
    """Write the ``last`` unit of ``out``: ``write_weights(path)`` (an atomic write of the weights), the training
    ``state``, then the index naming both (see the module docstring for the order and what a kill leaves)."""
    out = Path(out)
    idx = read_index(out)
    named = (idx or {}).get("files") or {}
    if not named:  # nothing committed yet: say so first, so a kill below resumes afresh, not from stray files
        write_json(out / INDEX, {"format": FORMAT, "epoch": None, "files": {}})
    for name in (WEIGHTS, STATE):
        if name in named and (out / name).is_file():
            _keep(out / name, out / PREV[name])
    write_weights(out / WEIGHTS)
    save_state(out / STATE, state)
    files = {name: sha256_of(out / name) for name in (WEIGHTS, STATE)}
    write_json(out / INDEX, {"format": FORMAT, "epoch": int(epoch), "files": files})
    for name in (WEIGHTS, STATE):
        (out / PREV[name]).unlink(missing_ok=True)


@dataclass
class LastPair:
    """A consistent pair found by :func:`find_last`: the files to load and a note for the user ('' if none)."""

    weights: Path
    state: Path
    note: str = ""

    @property
    def from_prev(self) -> bool:
        """Whether a file of the pair is a kept ``.prev`` one (the newest checkpoint was interrupted)."""
        return self.weights.name != WEIGHTS or self.state.name != STATE


def find_last(out: str | os.PathLike) -> LastPair | None:
    """The consistent ``last`` pair of ``out`` to resume from, None when there is none (start afresh), or one
    error when the files do not match their index (see the module docstring)."""
    out = Path(out)
    idx = read_index(out)
    if idx is None:
        return _legacy_pair(out)
    named = idx.get("files") or {}
    if not named:
        return None
    found = {}
    for name in (WEIGHTS, STATE):
        for candidate in (out / name, out / PREV[name]):
            if candidate.is_file() and sha256_of(candidate) == named.get(name):
                found[name] = candidate
                break
        else:
            raise SynboostError(f"{out / INDEX}: no {name} in {out} matches the sha256 it names (changed or damaged "
                                f"files); delete {INDEX} to resume from the files as they are, or {START_OVER}")
    pair = LastPair(found[WEIGHTS], found[STATE])
    if pair.from_prev:
        pair.note = (f"the checkpoint after epoch {int(idx['epoch']) + 2} was interrupted while being written; "
                     f"resuming from the one after epoch {int(idx['epoch']) + 1}")
    return pair


def _legacy_pair(out: Path) -> LastPair | None:
    weights, state = out / WEIGHTS, out / STATE
    if not (weights.is_file() and state.is_file()):
        return None
    ew, es = read_meta(weights).get("epoch"), load_state(state).get("epoch")
    if ew is None or es is None or int(ew) != int(es):
        raise SynboostError(f"{out}: {WEIGHTS} (epoch {ew}) and {STATE} (epoch {es}) do not belong together (a run "
                            f"stopped while writing them); {START_OVER}")
    return LastPair(weights, state, f"{out} has no {INDEX} (an older run); its weights and state are both of "
                                    f"epoch {int(ew) + 1}")


def restore(pair: LastPair) -> None:
    """Put the files of a pair found among the kept ``.prev`` ones back under the ``last`` names (rank 0, after
    every process has loaded them), so the folder again holds what its index names."""
    for path, name in ((pair.weights, WEIGHTS), (pair.state, STATE)):
        if path.name != name:
            os.replace(path, path.with_name(name))
