"""Multi-scale PatchGAN discriminator of pix2pixHD / SPADE (NVlabs `MultiscaleDiscriminator` + `NLayerDiscriminator`).

Input = the one-hot label map (+ edge channel) concatenated with the image (labels first, as SPADE's
``discriminate``). Each scale: a 4x4 stride-2 conv + LeakyReLU 0.2, then ``n_layers - 1`` 4x4 convs with spectral
norm + instance norm + LeakyReLU (channels doubling up to 512, the last one stride 1), then a 4x4 conv to one
channel of patch logits. Scale k+1 sees the input average-pooled by 3x3 / stride 2 (``count_include_pad=False``).
``forward`` returns, per scale, the list of every layer's output (for feature matching) with the logits last.
(SynBoost's CC-FPSE generator was trained against CC-FPSE's feature-pyramid discriminator; this is SPADE's.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synboost.models.registry import register_model
from synboost.models.spade import maybe_spectral


class NLayerDiscriminator(nn.Module):
    """pix2pixHD's PatchGAN: strided convolutions, returning every layer's features (for feature matching)."""
    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 4, spectral: bool = True):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        kw, pad = 4, 2  # ceil((4 - 1) / 2), as SPADE
        nf = ndf
        seq = [nn.Sequential(nn.Conv2d(input_nc, nf, kw, stride=2, padding=pad), nn.LeakyReLU(0.2))]
        for n in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512)
            stride = 1 if n == n_layers - 1 else 2
            conv = maybe_spectral(nn.Conv2d(nf_prev, nf, kw, stride=stride, padding=pad, bias=False), spectral)
            seq.append(nn.Sequential(conv, nn.InstanceNorm2d(nf, affine=False), nn.LeakyReLU(0.2)))
        seq.append(nn.Sequential(nn.Conv2d(nf, 1, kw, stride=1, padding=pad)))
        for i, s in enumerate(seq):
            self.add_module(f"model{i}", s)
        self.num_layers = len(seq)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i in range(self.num_layers):
            x = getattr(self, f"model{i}")(x)
            feats.append(x)
        return feats


class MultiscaleDiscriminator(nn.Module):
    """SPADE's discriminator: ``num_D`` PatchGANs on the label map + image at halved resolutions."""
    def __init__(self, label_nc: int = 19, image_nc: int = 3, edge_channel: bool = False, ndf: int = 64,
                 n_layers: int = 4, num_D: int = 2, spectral: bool = True):
        super().__init__()
        self.input_nc = label_nc + (1 if edge_channel else 0) + image_nc
        self.num_D = num_D
        for i in range(num_D):
            self.add_module(f"discriminator_{i}", NLayerDiscriminator(self.input_nc, ndf, n_layers, spectral))

    @staticmethod
    def downsample(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)

    def forward(self, seg: torch.Tensor, image: torch.Tensor | None = None) -> list[list[torch.Tensor]]:
        """``seg`` (B, label_nc[+1], H, W) and ``image`` (B, 3, H, W), or one already-concatenated tensor.
        Returns ``[scale][layer]`` outputs; ``out[k][-1]`` are the patch logits of scale k (finest first)."""
        x = seg if image is None else torch.cat([seg.to(image.dtype), image], 1)
        if x.shape[1] != self.input_nc:
            raise ValueError(f"discriminator expects {self.input_nc} input channels, got {x.shape[1]}")
        result = []
        for i in range(self.num_D):
            result.append(getattr(self, f"discriminator_{i}")(x))
            if i != self.num_D - 1:
                x = self.downsample(x)
        return result


@register_model("multiscale_discriminator")
def multiscale_discriminator(**kwargs) -> MultiscaleDiscriminator:
    """Registered builder of :class:`MultiscaleDiscriminator`."""
    return MultiscaleDiscriminator(**kwargs)
