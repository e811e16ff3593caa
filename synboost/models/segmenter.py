"""DeepLabV3+ over the 19 Cityscapes train classes.

The head follows NVIDIA's ``DeepWV3Plus`` (the segmenter of SynBoost and PEBAL) layer for layer and name for name:
ASPP with image pooling first (``aspp.img_pooling``, ``aspp.img_conv``, ``aspp.features``), ``bot_aspp`` (1x1 to
256), ``bot_fine`` (1x1 of the stride-4 features to 48), ``final`` (two 3x3 conv-BN-ReLU + 1x1 classifier), logits
upsampled bilinearly to the input size (``align_corners=True`` as in the official code). So an official
checkpoint maps onto ``head.*`` by a renaming table once the WideResNet38 trunk is added.

``forward`` returns the logits; ``forward_features`` also returns the decoder features (for PEBAL's extra output
and the density baselines).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synboost.models.backbones import build_trunk
from synboost.models.registry import register_model


def upsample(x: torch.Tensor, size, align_corners: bool = True) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


class ASPP(nn.Module):
    def __init__(self, in_dim: int, reduction_dim: int = 256, output_stride: int = 16):
        super().__init__()
        rates = {8: (12, 24, 36), 16: (6, 12, 18)}[output_stride]

        def branch(k, r):
            return nn.Sequential(nn.Conv2d(in_dim, reduction_dim, k, padding=0 if k == 1 else r, dilation=r,
                                           bias=False), nn.BatchNorm2d(reduction_dim), nn.ReLU(inplace=True))
        self.features = nn.ModuleList([branch(1, 1)] + [branch(3, r) for r in rates])
        self.img_pooling = nn.AdaptiveAvgPool2d(1)
        self.img_conv = nn.Sequential(nn.Conv2d(in_dim, reduction_dim, 1, bias=False), nn.BatchNorm2d(reduction_dim),
                                      nn.ReLU(inplace=True))
        self.out_channels = 5 * reduction_dim

    def forward(self, x):
        img = upsample(self.img_conv(self.img_pooling(x)), x.shape[2:])
        return torch.cat([img] + [f(x) for f in self.features], 1)


class DeepLabV3Plus(nn.Module):
    def __init__(self, backbone: str = "resnet50", num_classes: int = 19, output_stride: int = 16,
                 aspp_dim: int = 256, decoder_dim: int = 256, head_dropout: float = 0.1, width: int = 16):
        super().__init__()
        self.trunk = build_trunk(backbone, output_stride, width)
        self.num_classes = num_classes
        self.aspp = ASPP(self.trunk.out_channels, aspp_dim, output_stride)
        self.bot_aspp = nn.Conv2d(self.aspp.out_channels, decoder_dim, 1, bias=False)
        self.bot_fine = nn.Conv2d(self.trunk.low_channels, 48, 1, bias=False)
        self.final = nn.Sequential(
            nn.Conv2d(decoder_dim + 48, decoder_dim, 3, padding=1, bias=False), nn.BatchNorm2d(decoder_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(decoder_dim, decoder_dim, 3, padding=1, bias=False), nn.BatchNorm2d(decoder_dim),
            nn.ReLU(inplace=True),
            nn.Dropout2d(head_dropout),  # parameter-free; the official classifier key final.6 maps to classifier
        )
        self.classifier = nn.Conv2d(decoder_dim, num_classes, 1, bias=False)
        self.feature_dim = decoder_dim

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits at input size, decoder features at stride 4)."""
        low, high = self.trunk(x)
        up = upsample(self.bot_aspp(self.aspp(high)), low.shape[2:])
        feats = self.final(torch.cat([self.bot_fine(low), up], 1))
        return upsample(self.classifier(feats), x.shape[2:]), feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


@register_model("deeplabv3plus")
def deeplabv3plus(**kwargs) -> DeepLabV3Plus:
    return DeepLabV3Plus(**kwargs)
