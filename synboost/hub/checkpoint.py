"""One checkpoint loader for the package.

Our own model files are safetensors (no pickle: loading them cannot execute code) whose header carries JSON
metadata: the model kind, its config, the class list, the package version and anything the stage adds, so a
checkpoint explains itself. Training state (optimizer, scheduler, RNG, epoch) lives beside it in a ``.pt`` file
of plain tensors and numbers, read with ``torch.load(weights_only=True)``. Foreign checkpoints (official
releases, torchvision) are read with ``weights_only=True`` too, or as safetensors when the file is one.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from synboost import __version__
from synboost.data.io import atomic_path
from synboost.errors import CheckpointError


def save_model(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write a model's weights + metadata as safetensors, atomically."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    header = {"synboost": json.dumps({**meta, "synboost_version": __version__}, default=str)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of one of our checkpoints, without loading the tensors."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("synboost")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a synboost checkpoint (expected a .safetensors file written by "
                              f"synboost; {e})") from None
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file without synboost metadata (not written by synboost)")
    return json.loads(raw)


def load_model(path: str | os.PathLike, expect_kind: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Load (state_dict, meta) of one of our checkpoints; ``expect_kind`` checks the model kind."""
    meta = read_meta(path)
    if expect_kind is not None and meta.get("kind") != expect_kind:
        raise CheckpointError(f"{path}: is a '{meta.get('kind')}' checkpoint, expected '{expect_kind}'")
    return load_file(str(path)), meta


def load_foreign(path: str | os.PathLike) -> dict[str, Any]:
    """Read a foreign ``.pth`` safely (``weights_only=True``: tensors and plain containers only). A file holding
    other Python objects is refused with one line naming the object and how to convert a trusted file. A
    ``.safetensors`` file (torchvision's key layout written as safetensors, e.g. by ``synboost train backbone``)
    is read as its flat state dict; one that is not valid safetensors is one line too."""
    path = _existing(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: cannot be read as a safetensors file ({str(e)[:160]}); is the file "
                                  "complete?") from None
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip errors come in many types
        raise CheckpointError(f"{path}: {refusal(path, e)}") from None


#: what torch's weights-only unpickler names when it meets a class or function it does not allow
_GLOBAL = re.compile(r"GLOBAL ([\w.<>]+)|Unsupported class ([\w.<>]+)|unrecognized function ([\w.<>]+)")


def refusal(path: str | os.PathLike, err: BaseException) -> str:
    """Why ``torch.load(path, weights_only=True)`` refused a file, in one clause of our own words (torch's
    message advises ``weights_only=False`` at length): the object found, or what is wrong with the file."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    found = _GLOBAL.search(text)
    if found:
        what = next(g for g in found.groups() if g)
        return (f"cannot be read safely as a PyTorch checkpoint: it holds the Python object {what} (not tensors or "
                "plain data; unpickling it could run code); if you trust the file, convert it once: "
                f"torch.save(torch.load('{path}', weights_only=False)['state_dict'], 'clean.pth') (or whichever "
                "key holds the weights) and use clean.pth")
    advice = ("Weights only load failed", "Please file an issue", "Check the")
    detail = next((ln.strip() for ln in text.splitlines()
                   if ln.strip() and not ln.startswith(advice) and "weights_only" not in ln), "")
    detail = detail.removeprefix("WeightsUnpickler error:").strip().split(". ")[0] or type(err).__name__
    if "Unsupported operand" in detail:  # a plain pickle (not torch.save's zip), which may carry code
        return (f"cannot be read safely as a PyTorch checkpoint: a plain pickle the safe reader refuses ({detail}); "
                "unpickling it could run code: if you trust it, re-save it with torch.save in a trusted session")
    return (f"cannot be read as a PyTorch checkpoint ({detail[:160]}); is the file complete, and a file "
            "torch.save wrote?")


def save_state(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Training state (tensors, numbers, strings, lists, dicts) with ``torch.save``, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(dict(state), str(tmp))
    return path


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Training state written by :func:`save_state` (read with ``weights_only=True``)."""
    return load_foreign(path)


def few(xs: Sequence[str], n: int = 6) -> str:
    """The first ``n`` items, comma-separated, and how many more."""
    return ", ".join(xs[:n]) + (f" (+{len(xs) - n} more)" if len(xs) > n else "")


def key_mismatch(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, Sequence[int]]) -> str:
    """'' when ``state_dict`` holds exactly the keys and shapes of ``expected`` (key -> shape); otherwise one
    clause naming a few missing, unexpected and misshapen keys, for the one-line error of a strict load."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs model {tuple(expected[k])}"
              for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k])]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} of {len(expected)} keys: {few(missing)}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} keys: {few(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches: {few(shapes, 3)}")
    return "; ".join(parts)


def load_into(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with one readable error listing the mismatched keys and shapes."""
    problem = key_mismatch(state_dict, {k: v.shape for k, v in model.state_dict().items()})
    if problem:
        raise CheckpointError(f"{source}: does not fit this model ({problem}); is it a checkpoint of "
                              "another architecture or class count?")
    model.load_state_dict(state_dict, strict=True)


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    return path
