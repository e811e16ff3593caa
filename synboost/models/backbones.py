"""Trunks for DeepLabV3+: each returns (low-level features at stride 4, high-level features at stride 8 or 16).

* ``resnet50`` / ``resnet101``: torchvision ResNets with dilation for output stride 8 or 16.
* ``mobilenet_v3_large``: torchvision's, dilated last stage (stride 16).
* ``tiny``: a small residual net (~0.3 M parameters) for CPU training on the synthetic world and for tests.

The NVIDIA WideResNet38 trunk of the official SynBoost / PEBAL segmenter plugs in here with the same interface;
its module names (``mod1`` .. ``mod7``, ``pool2``, ``pool3``) are those of the official checkpoint, so that the
importer is a renaming table (see the official-checkpoints issue).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision import models as tvm


class Trunk(nn.Module):
    """Interface: ``forward(x) -> (low, high)``; attributes ``low_channels``, ``out_channels``, ``output_stride``."""

    low_channels: int
    out_channels: int
    output_stride: int

    #: the torchvision weights enum entry for ImageNet initialisation (None: no pretrained weights exist)
    imagenet_weights = None


class ResNetTrunk(Trunk):
    def __init__(self, depth: int = 50, output_stride: int = 16):
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError("output_stride must be 8 or 16")
        dil = [False, output_stride == 8, True]
        ctor, weights = {50: (tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V1),
                         101: (tvm.resnet101, tvm.ResNet101_Weights.IMAGENET1K_V1)}[depth]
        net = ctor(weights=None, replace_stride_with_dilation=dil)
        self.imagenet_weights = weights
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.low_channels, self.out_channels, self.output_stride = 256, 2048, output_stride

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        return low, self.layer4(self.layer3(self.layer2(low)))


class MobileNetV3Trunk(Trunk):
    def __init__(self, output_stride: int = 16):
        super().__init__()
        if output_stride != 16:
            raise ValueError("mobilenet_v3_large supports output_stride 16")
        net = tvm.mobilenet_v3_large(weights=None, dilated=True)
        self.imagenet_weights = tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V1
        self.features = net.features
        self.low_idx = 3  # last block at stride 4 (24 channels)
        self.low_channels, self.out_channels, self.output_stride = 24, 960, 16

    def forward(self, x):
        low = None
        for i, block in enumerate(self.features):
            x = block(x)
            if i == self.low_idx:
                low = x
        return low, x


def _conv_bn(cin, cout, stride=1, dilation=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Res(nn.Module):
    def __init__(self, c, dilation=1):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(c, c, dilation=dilation),
                                  nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation, bias=False),
                                  nn.BatchNorm2d(c))

    def forward(self, x):
        return torch.relu(x + self.body(x))


class TinyTrunk(Trunk):
    """Stem to stride 4 (low, ``width`` ch), then stride 8 and 16 (``4 * width`` ch), residual blocks."""

    def __init__(self, width: int = 16, output_stride: int = 16):
        super().__init__()
        w = width
        s16 = 2 if output_stride == 16 else 1
        self.stem = nn.Sequential(_conv_bn(3, w, 2), _conv_bn(w, w, 2), _Res(w))
        self.stage2 = nn.Sequential(_conv_bn(w, 2 * w, 2), _Res(2 * w))
        self.stage3 = nn.Sequential(_conv_bn(2 * w, 4 * w, s16, dilation=1), _Res(4 * w, dilation=1 if s16 == 2 else 2),
                                    _Res(4 * w, dilation=2))
        self.low_channels, self.out_channels, self.output_stride = w, 4 * w, output_stride

    def forward(self, x):
        low = self.stem(x)
        return low, self.stage3(self.stage2(low))


def build_trunk(name: str, output_stride: int = 16, width: int = 16) -> Trunk:
    if name == "resnet50":
        return ResNetTrunk(50, output_stride)
    if name == "resnet101":
        return ResNetTrunk(101, output_stride)
    if name == "mobilenet_v3_large":
        return MobileNetV3Trunk(output_stride)
    if name == "tiny":
        return TinyTrunk(width, output_stride)
    raise ValueError(f"unknown backbone '{name}'; known: resnet50, resnet101, mobilenet_v3_large, tiny")


BACKBONES = ("resnet50", "resnet101", "mobilenet_v3_large", "tiny")
