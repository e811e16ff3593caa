"""SPADE: spatially-adaptive denormalisation (Park et al., CVPR 2019) and the blocks built on it.

``SPADE``: a parameter-free norm of ``x`` (BatchNorm or InstanceNorm, ``affine=False``), then a shared 3x3 conv +
ReLU on the label map resized **nearest** to ``x`` and two 3x3 convs giving gamma and beta;
``out = norm(x) * (1 + gamma) + beta``. Submodule names ``shared.0``, ``gamma``, ``beta`` follow the SynBoost
dissimilarity decoder (``image_dissimilarity/models/normalization.py``), so its keys such as
``conv2.norm1.shared.0.weight`` map 1:1. (NVlabs' SPADE names them ``mlp_shared``/``mlp_gamma``/``mlp_beta``.)

``SPADEResnetBlock``: the residual block of the SPADE generator (NVlabs ``SPADEResnetBlock``: SPADE -> LeakyReLU 0.2
-> 3x3 conv twice, learned 1x1 shortcut with its own SPADE when the channel count changes, spectral norm optional).

``SPADEDecoderLayer``: SynBoost's decoder block, SPADE -> SELU -> 3x3 conv -> SPADE -> SELU with InstanceNorm.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm as _spectral_norm

NORMS = ("batch", "instance")


def param_free_norm(kind: str, nc: int) -> nn.Module:
    """The normalisation SPADE modulates: no affine parameters (SPADE's gamma and beta take their place)."""
    if kind == "batch":  # SPADE's generator default (synchronised BN there; plain BN is what one device needs)
        return nn.BatchNorm2d(nc, affine=False)
    if kind == "instance":  # the SynBoost dissimilarity decoder; no running statistics
        return nn.InstanceNorm2d(nc, affine=False, track_running_stats=False)
    raise ValueError(f"SPADE norm must be one of {NORMS}, got '{kind}'")


def maybe_spectral(module: nn.Module, on: bool) -> nn.Module:
    """``torch.nn.utils.spectral_norm`` (keys ``weight_orig``/``weight_u``/``weight_v`` as in SPADE checkpoints)."""
    return _spectral_norm(module) if on else module


class SPADE(nn.Module):
    """Spatially-adaptive normalisation: a parameter-free norm modulated by a scale and shift predicted from the
    label map."""
    def __init__(self, norm_nc: int, label_nc: int, norm: str = "instance", hidden: int = 128,
                 kernel_size: int = 3):
        super().__init__()
        pad = kernel_size // 2
        self.param_free_norm = param_free_norm(norm, norm_nc)
        self.shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size, padding=pad), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, norm_nc, kernel_size, padding=pad)
        self.beta = nn.Conv2d(hidden, norm_nc, kernel_size, padding=pad)

    def modulation(self, x: torch.Tensor, segmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma, beta) at x's resolution from the label map (resized nearest, as the official code)."""
        seg = F.interpolate(segmap.to(x.dtype), size=x.shape[2:], mode="nearest")
        actv = self.shared(seg)
        return self.gamma(actv), self.beta(actv)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.modulation(x, segmap)
        return self.param_free_norm(x) * (1 + gamma) + beta


class SPADEResnetBlock(nn.Module):
    """NVlabs SPADE's residual block: ``shortcut(x) + conv_1(act(norm_1(conv_0(act(norm_0(x))))))``."""

    def __init__(self, fin: int, fout: int, label_nc: int, norm: str = "batch", spectral: bool = True,
                 hidden: int = 128):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = maybe_spectral(nn.Conv2d(fin, fmiddle, 3, padding=1), spectral)
        self.conv_1 = maybe_spectral(nn.Conv2d(fmiddle, fout, 3, padding=1), spectral)
        self.norm_0 = SPADE(fin, label_nc, norm, hidden)
        self.norm_1 = SPADE(fmiddle, label_nc, norm, hidden)
        if self.learned_shortcut:
            self.conv_s = maybe_spectral(nn.Conv2d(fin, fout, 1, bias=False), spectral)
            self.norm_s = SPADE(fin, label_nc, norm, hidden)

    @staticmethod
    def actvn(x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, 0.2)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(self.actvn(self.norm_0(x, seg)))
        dx = self.conv_1(self.actvn(self.norm_1(dx, seg)))
        return x_s + dx


class SPADEDecoderLayer(nn.Module):
    """SynBoost's dissimilarity decoder block: SPADE -> SELU -> 3x3 conv (nc -> nc) -> SPADE -> SELU.

    Keys: ``norm1.shared.0.*``, ``norm1.gamma.*``, ``norm1.beta.*``, ``conv.*``, ``norm2.*`` (no norm buffers:
    InstanceNorm with ``affine=False``), exactly the official ``conv2.*``/``conv13.*``/``conv4.*``/``conv6.*`` entries.
    """

    def __init__(self, nc: int = 256, label_nc: int = 19, hidden: int = 128):
        super().__init__()
        self.norm1 = SPADE(nc, label_nc, norm="instance", hidden=hidden)
        self.selu1 = nn.SELU()
        self.conv = nn.Conv2d(nc, nc, 3, padding=1)
        self.norm2 = SPADE(nc, label_nc, norm="instance", hidden=hidden)
        self.selu2 = nn.SELU()

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        return self.selu2(self.norm2(self.conv(self.selu1(self.norm1(x, seg))), seg))
