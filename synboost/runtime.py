"""Where code runs: the device (CUDA when there is one, else the CPU, same code) and the torchrun process layout."""
from __future__ import annotations

import os

import torch

from synboost.errors import SynboostError


def dist_info() -> tuple[int, int, int]:
    """(world size, rank, local rank) from torchrun's environment; (1, 0, 0) without torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def pick_device(spec: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto``: this process's CUDA device when there is one, else the CPU; ``cpu`` / ``cuda`` force one."""
    if local_rank is None:
        local_rank = dist_info()[2]
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SynboostError("device 'cuda' asked for but no CUDA device is visible; use device=auto or cpu")
    return torch.device("cuda", local_rank)
