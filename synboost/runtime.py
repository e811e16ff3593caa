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


class FolderLock:
    """An output folder held by one live run: ``with FolderLock(out, "infer"): ...``.

    The lock is ``<out>/.synboost.lock``, holding the holder's host, pid and verb. A second run into a folder
    whose holder is alive refuses with one line; a lock left by a dead process (same host, pid gone) is taken
    over with a note. Under torchrun only rank 0 holds it. Released on exit, also on errors and Ctrl-C."""

    NAME = ".synboost.lock"

    def __init__(self, folder: str | os.PathLike, verb: str):
        from pathlib import Path

        self.path = Path(folder) / self.NAME
        self.verb = verb
        self.held = False

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def acquire(self) -> "FolderLock":
        """Take the lock, or raise a :class:`SynboostError` naming the live holder."""
        import json
        import socket
        import sys

        if dist_info()[1] != 0:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "verb": self.verb}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    other = json.loads(self.path.read_text() or "{}")
                except (OSError, ValueError):
                    other = {}
                pid = int(other.get("pid", 0) or 0)
                same_host = other.get("host") == me["host"]
                if pid and same_host and self._alive(pid):
                    raise SynboostError(
                        f"{self.path.parent}: another run ({other.get('verb', '?')}, pid {pid}) is writing into this "
                        f"folder; wait for it, stop it, or give another output folder") from None
                if pid and not same_host:
                    raise SynboostError(
                        f"{self.path.parent}: held by a run on host {other.get('host')} (pid {pid}); if that run is "
                        f"gone, delete {self.path}") from None
                print(f"note: {self.path.parent}: taking over the lock of a run that is gone "
                      f"({other.get('verb', '?')}, pid {pid or '?'})", file=sys.stderr)
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise SynboostError(f"{self.path}: could not take the folder lock; delete it if no run is writing there")

    def release(self) -> None:
        """Drop the lock (only if this process holds it)."""
        if self.held:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            self.held = False

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def cpu_bf16_supported() -> bool:
    """Whether this CPU has bf16 arithmetic units (x86 AVX512-BF16 or AMX-BF16, Arm BF16), as torch detects
    them; False when torch cannot tell. Never assumed from the architecture alone (training and the detectors
    both use this one)."""
    caps = getattr(torch.cpu, "get_capabilities", None)
    if caps is None:
        return False
    try:
        found = caps()
    except Exception:  # an unknown CPU or an old build
        return False
    return any(v is True and k.lower().endswith("bf16") for k, v in found.items())


def bf16_supported(device: torch.device | str) -> bool:
    """Whether ``device`` computes in bf16 natively: a CUDA device that says so, or a CPU with bf16 units
    (:func:`cpu_bf16_supported`)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_bf16_supported()


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_malloc_tuned: bool | None = None


def tune_malloc() -> bool:
    """Keep freed memory in the process for reuse (glibc only; ``SYNBOOST_MALLOC=default`` leaves it as it is).

    glibc serves every block over its mmap threshold (at most 32 MB on 64-bit) with a fresh ``mmap`` and gives it
    back at ``free``, so each large activation a network allocates is page-faulted in again, zeroed by the kernel,
    at every call: on this project's 2-core machine the official SynBoost loop at 512x1024 spent ~40 % of its time
    in the kernel that way (11.8 s -> 7.1 s per image with the allocator kept; bf16 3.7 -> 3.3 s). This sets
    ``M_MMAP_MAX = 0`` (blocks come from the heap, which glibc reuses) and a high ``M_TRIM_THRESHOLD`` (the heap
    is not shrunk after every large free). The resident memory then stays at its peak until the process ends.
    The ``synboost`` command does this at start; a library user can call it first thing. Returns whether it
    applied (False on other C libraries or when opted out); idempotent."""
    global _malloc_tuned
    if _malloc_tuned is not None:
        return _malloc_tuned
    _malloc_tuned = False
    if os.environ.get("SYNBOOST_MALLOC", "").strip().lower() in ("default", "off", "0", "no"):
        return False
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
            return False
        _malloc_tuned = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
    except OSError:
        pass
    return _malloc_tuned


def malloc_tuned() -> bool:
    """Whether :func:`tune_malloc` applied in this process (for the benchmarks' machine info)."""
    return bool(_malloc_tuned)
