"""ImageNet backbone weights from local files only (no download at run time).

torchvision names its weight files after the official URL; we look for that file name in the user-given path or
in ``$TORCH_HOME/hub/checkpoints/`` (where torchvision and lpips look too). Absent, one line says which file to
put where, or how to train from scratch explicitly. A user-given ``path`` may also be a ``.safetensors`` file in
torchvision's key layout (``synboost.hub.checkpoint.load_foreign`` reads both), e.g. a trunk of
``synboost train backbone``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import hub

from synboost.errors import CheckpointError
from synboost.hub.checkpoint import load_foreign


def hub_dir() -> Path:
    """torchvision's checkpoint folder (``$TORCH_HOME/hub/checkpoints``), where ImageNet weights are looked for."""
    return Path(hub.get_dir()) / "checkpoints"


def weights_file(url: str) -> str:
    """The file name torchvision gives the weights at ``url``."""
    return os.path.basename(url)


def find_weights(url: str, path: str | os.PathLike | None = None, what: str = "ImageNet weights",
                 disable_hint: str = "model.pretrained=false") -> Path:
    """The local file for ``url``: ``path`` if given (a file, or a folder holding the file), else the hub cache."""
    name = weights_file(url)
    candidates = []
    if path:
        p = Path(path)
        candidates.append(p / name if p.is_dir() else p)
    candidates.append(hub_dir() / name)
    for c in candidates:
        if c.is_file():
            return c
    where = candidates[0]
    raise CheckpointError(f"{what} not found: put {name} (from {url}) at {where}, "
                          f"or set {disable_hint} to train from scratch")


def load_torchvision_weights(module: torch.nn.Module, weights_enum, path=None, strict_prefix: str = "",
                             disable_hint: str = "model.pretrained=false") -> None:
    """Load a torchvision ``Weights`` entry's file into ``module`` (keys missing from the file are an error,
    keys of the file the module lacks, e.g. the ImageNet classifier, are ignored)."""
    file = find_weights(weights_enum.url, path, f"ImageNet weights for {type(module).__name__}", disable_hint)
    sd = load_foreign(file)
    if strict_prefix:
        sd = {k[len(strict_prefix):]: v for k, v in sd.items() if k.startswith(strict_prefix)}
    own = module.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"{file}: lacks {len(missing)} keys the backbone needs (e.g. {missing[:3]}); "
                              "is it the right file?")
    module.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
