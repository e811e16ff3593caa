"""Memory layout helpers: a network in channels_last (NHWC) runs fastest when every tensor that meets its weights or
another activation is NHWC too; an NCHW tensor mixed in costs a strided copy or a slow elementwise kernel (on the CPU
the dissimilarity network's concatenations and SPADE modulations spent ~20 % of its bf16 time there).
"""
from __future__ import annotations

import torch


def is_channels_last(t: torch.Tensor) -> bool:
    """True when ``t`` (4-d) is laid out NHWC and not also NCHW (a 1-channel or 1x1 tensor is both)."""
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def to_layout_of(ref: torch.Tensor, *tensors: torch.Tensor | None):
    """``tensors`` (4-d ones; None passes) in the memory layout of ``ref`` (a weight or an activation)."""
    fmt = torch.channels_last if is_channels_last(ref) else torch.contiguous_format
    out = tuple(t.contiguous(memory_format=fmt) if t is not None and t.dim() == 4 else t for t in tensors)
    return out[0] if len(out) == 1 else out


def cat_channels(parts: list[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(parts, 1)`` that stays NHWC when the parts are: a 1-channel part (whose strides say NCHW, though
    its bytes are the same in both layouts) would otherwise make the result NCHW."""
    if any(is_channels_last(p) for p in parts):
        parts = [p.as_strided(p.shape, (p.shape[2] * p.shape[3], 1, p.shape[3], 1))
                 if p.dim() == 4 and p.shape[1] == 1 and p.is_contiguous() else p for p in parts]
    return torch.cat(parts, 1)
