"""The SynBoost dissimilarity network, with a switch for every variant the paper ablates.

Main configuration ("ours", ``DissimNetPrior`` of the official code): a VGG16 encoder shared by the real and the
resynthesized image (4 scales, 64/128/256/512 channels), a semantic encoder on the one-hot label map
(32/64/128/256), a prior encoder on the uncertainty maps (entropy, perceptual difference, distance; 64..512);
per scale: concat(real, synth, semantic) -> 1x1 conv -> multiplied by the prior features (a non-negative gate)
-> the unnormalised correlation sum_c real*synth prepended as one channel; a U-Net decoder (3x3 conv + SELU,
SPADE decoder layers conditioned on the label map, 2x2 transposed convs, skip concatenations with the decoder
state first) ending in 2-class logits. Parameter names are those of the official checkpoint
(``vgg_encoder.layer1.0.weight`` ... ``conv11.bias``; see synboost-dissim-keys.txt), so it loads 1:1.

Switches: ``semantic`` (semantic encoder on/off), ``priors`` (any subset of entropy / perceptual / distance; empty
= no prior encoder, the official ``prior=False``), ``correlation``, ``spade`` ('decoder' | 'encoder' | 'both' |
'none'). The official code builds the prior encoder only with the semantic encoder (so semantic=False with priors
fails there); here they are independent. ``spade='encoder'`` conditions every VGG conv on the label map with SPADE
(the official VGGSPADE idea; no released checkpoint uses it, so its names are our own).
``width`` scales every channel count (1.0 = the official network; 0.25 trains on a CPU in minutes);
``encoder_width`` (default: ``width``) scales the VGG16 encoder alone, so that a narrow network can still start from
a full-width pretrained VGG16 (ImageNet's, or the world-pretrained one of ``synboost train backbone``).
Input height and width must be divisible by 8.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from synboost.models.layout import cat_channels, to_layout_of
from synboost.models.registry import register_model
from synboost.models.spade import SPADE, SPADEDecoderLayer
from synboost.models.vgg import VGG16Encoder

PRIOR_NAMES = ("entropy", "perceptual", "distance")


class SemanticEncoder(nn.Module):
    """conv7x7 s1 + ReLU, then 3 x (conv3x3 s2 + ReLU) doubling the channels; returns the 4 scales."""

    def __init__(self, in_channels: int = 19, base: int = 32, layers: int = 4):
        super().__init__()
        self.hidden_layers = nn.ModuleList()
        c = in_channels
        for i in range(layers):
            out = base if i == 0 else c * 2
            conv = nn.Conv2d(c, out, 7, 1, 3) if i == 0 else nn.Conv2d(c, out, 3, 2, 1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            self.hidden_layers.append(nn.Sequential(conv, nn.ReLU(inplace=True)))
            c = out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for layer in self.hidden_layers:
            x = layer(x)
            out.append(x)
        return out


class SPADEVGGEncoder(nn.Module):
    """VGG16 with each conv followed by SPADE (batch-norm statistics, label-map modulation) and ReLU."""

    def __init__(self, label_nc: int, width: float = 1.0):
        super().__init__()
        cfg = [[v if v == "M" else max(1, int(round(v * width))) for v in stage]
               for stage in [[64, 64], ["M", 128, 128], ["M", 256, 256, 256], ["M", 512, 512, 512]]]
        self.stages = nn.ModuleList()
        c = 3
        for stage in cfg:
            mods = nn.ModuleList()
            for v in stage:
                if v == "M":
                    mods.append(nn.MaxPool2d(2, 2))
                else:
                    mods.append(nn.Conv2d(c, v, 3, padding=1))
                    mods.append(SPADE(v, label_nc, norm="batch"))
                    c = v
            self.stages.append(mods)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages:
            for m in stage:
                x = torch.relu(m(x, seg)) if isinstance(m, SPADE) else m(x)
            out.append(x)
        return out


def _conv_selu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.SELU())


class DissimilarityNet(nn.Module):
    """SynBoost's dissimilarity network: a shared VGG encoder over the real and the resynthesised image, their
    per-scale correlation, a semantic encoder, the prior maps, and SPADE-conditioned decoders at four scales; two
    output channels (inlier, anomaly)."""
    def __init__(self, num_classes: int = 19, semantic: bool = True, priors: Sequence[str] = PRIOR_NAMES,
                 correlation: bool = True, spade: str = "decoder", width: float = 1.0,
                 encoder_width: float | None = None):
        super().__init__()
        unknown = set(priors) - set(PRIOR_NAMES)
        if unknown:
            raise ValueError(f"unknown priors {sorted(unknown)}; choose from {PRIOR_NAMES}")
        if spade not in ("decoder", "encoder", "both", "none"):
            raise ValueError("spade must be 'decoder', 'encoder', 'both' or 'none'")
        self.num_classes, self.semantic, self.correlation, self.spade = num_classes, semantic, correlation, spade
        self.priors = tuple(p for p in PRIOR_NAMES if p in priors)  # canonical order, as the official concat
        self.width = width
        self.encoder_width = width if encoder_width is None else encoder_width

        def w(c: int) -> int:
            return max(1, int(round(c * width)))
        if spade in ("encoder", "both"):
            self.vgg_encoder = SPADEVGGEncoder(num_classes, self.encoder_width)
        else:
            self.vgg_encoder = VGG16Encoder(width=self.encoder_width)
        # encoder channels at the 4 scales (those of a pretrained VGG16 when encoder_width is 1.0)
        v = [max(1, int(round(c * self.encoder_width))) for c in (64, 128, 256, 512)]
        if semantic:
            self.semantic_encoder = SemanticEncoder(num_classes, w(32))
        if self.priors:
            self.prior_encoder = SemanticEncoder(len(self.priors), v[0])
        k = 1 if correlation else 0
        d4, d3, d2, d1 = w(256), w(256), w(128), w(64)  # decoder widths
        self.conv1 = _conv_selu(v[3] + k, d4)
        self.conv12 = _conv_selu(d4 + v[2] + k, d3)
        self.conv3 = _conv_selu(d3 + v[1] + k, d2)
        self.conv5 = _conv_selu(d2 + v[0] + k, d1)
        dec = spade in ("decoder", "both")
        hid = w(128)
        self.conv2 = SPADEDecoderLayer(d4, num_classes, hid) if dec else _conv_selu(d4, d4)
        self.conv13 = SPADEDecoderLayer(d3, num_classes, hid) if dec else _conv_selu(d3, d3)
        self.conv4 = SPADEDecoderLayer(d2, num_classes, hid) if dec else _conv_selu(d2, d2)
        self.conv6 = SPADEDecoderLayer(d1, num_classes, hid) if dec else _conv_selu(d1, d1)
        self.tconv1 = nn.ConvTranspose2d(d4, d4, 2, 2)
        self.tconv3 = nn.ConvTranspose2d(d3, d3, 2, 2)
        self.tconv2 = nn.ConvTranspose2d(d2, d2, 2, 2)
        s = [w(c) for c in (32, 64, 128, 256)] if semantic else [0, 0, 0, 0]
        self.conv7 = nn.Conv2d(2 * v[3] + s[3], v[3], 1)
        self.conv8 = nn.Conv2d(2 * v[2] + s[2], v[2], 1)
        self.conv9 = nn.Conv2d(2 * v[1] + s[1], v[1], 1)
        self.conv10 = nn.Conv2d(2 * v[0] + s[0], v[0], 1)
        self.conv11 = nn.Conv2d(d1, 2, 1)

    def _decode_layer(self, layer: nn.Module, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        return layer(x, seg) if isinstance(layer, SPADEDecoderLayer) else layer(x)

    def forward(self, image: torch.Tensor, synthesis: torch.Tensor, semantic: torch.Tensor,
                priors: torch.Tensor | None = None) -> torch.Tensor:
        """image, synthesis: (B, 3, H, W) ImageNet-normalised; semantic: (B, C, H, W) one-hot; priors:
        (B, len(self.priors), H, W) in [0, 1], channels in the order of ``self.priors``. Returns (B, 2, H, W)."""
        if image.shape[-1] % 8 or image.shape[-2] % 8:
            raise ValueError(f"input size {tuple(image.shape[-2:])} must be divisible by 8")
        image, synthesis, semantic, priors = to_layout_of(self.conv11.weight, image, synthesis, semantic, priors)
        if self.spade in ("encoder", "both"):
            real, syn = self.vgg_encoder(image, semantic), self.vgg_encoder(synthesis, semantic)
        else:
            real, syn = self.vgg_encoder(image), self.vgg_encoder(synthesis)
        sem = self.semantic_encoder(semantic) if self.semantic else None
        reducers = (self.conv10, self.conv9, self.conv8, self.conv7)
        fused = []
        for i in range(4):
            parts = [real[i], syn[i]] + ([sem[i]] if sem is not None else [])
            fused.append(reducers[i](cat_channels(parts)))
        if self.priors:
            if priors is None or priors.shape[1] != len(self.priors):
                raise ValueError(f"expected {len(self.priors)} prior maps ({', '.join(self.priors)})")
            gates = self.prior_encoder(priors)
            fused = [f * g for f, g in zip(fused, gates)]
        if self.correlation:
            fused = [cat_channels([(r * s).sum(1, keepdim=True), f]) for r, s, f in zip(real, syn, fused)]
        x = self._decode_layer(self.conv2, self.conv1(fused[3]), semantic)
        x = self.tconv1(x)
        x = self._decode_layer(self.conv13, self.conv12(cat_channels([x, fused[2]])), semantic)
        x = self.tconv3(x)
        x = self._decode_layer(self.conv4, self.conv3(cat_channels([x, fused[1]])), semantic)
        x = self.tconv2(x)
        x = self._decode_layer(self.conv6, self.conv5(cat_channels([x, fused[0]])), semantic)
        return self.conv11(x)


@register_model("dissimilarity")
def dissimilarity(**kwargs) -> DissimilarityNet:
    """Registered builder of :class:`DissimilarityNet`."""
    return DissimilarityNet(**kwargs)
