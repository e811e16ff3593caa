"""Trunks for DeepLabV3+: each returns (low-level features, high-level features at stride 8 or 16).

The low-level features are at stride 4 (``low_stride``), except for ``wrn38`` whose skip comes from ``mod2`` at
stride 2, as in NVIDIA's DeepWV3Plus.

* ``resnet50`` / ``resnet101``: torchvision ResNets with dilation for output stride 8 or 16.
* ``mobilenet_v3_large``: torchvision's, dilated last stage (stride 16).
* ``wrn38``: NVIDIA's WideResNet38-A2, the trunk of the official SynBoost / PEBAL segmenter, with the module
  names of the official checkpoint (``mod1`` .. ``mod7``; ``pool2``/``pool3`` carry no parameters), so the
  importer (``synboost.importers.official``) is a prefix renaming.
* ``tiny``: a small residual net (~0.3 M parameters) for CPU training on the synthetic world and for tests.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision import models as tvm


class Trunk(nn.Module):
    """Interface: ``forward(x) -> (low, high)``; attributes ``low_channels``, ``out_channels``, ``output_stride``."""

    low_channels: int
    out_channels: int
    output_stride: int
    #: stride of the low-level features
    low_stride: int = 4

    #: the torchvision weights enum entry for ImageNet initialisation (None: no pretrained weights exist)
    imagenet_weights = None


class ResNetTrunk(Trunk):
    """torchvision's ResNet-50 / 101 as a dilated trunk (output stride 8 or 16): low-level and high-level features."""
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
    """torchvision's MobileNetV3-Large as a trunk at output stride 16."""
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


def _bn_relu(c: int) -> nn.Sequential:
    # a Sequential, so that the BatchNorm parameters are named ``<name>.0.*`` as in the official checkpoint
    return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))


class WideResBlock(nn.Module):
    """Pre-activation residual block of WideResNet-A2 (NVIDIA's ``IdentityResidualBlock``).

    ``bn1`` (BN + ReLU) on the input feeds the residual branch ``convs`` and, when the block changes the
    channel count or the stride, a 1x1 ``proj_conv`` shortcut; otherwise the shortcut is the raw input.
    Two channel counts: 3x3 conv, BN-ReLU, 3x3 conv. Three: 1x1 conv (with the stride), BN-ReLU, 3x3 conv,
    BN-ReLU, [Dropout2d], 1x1 conv. Dilation applies to the 3x3 convs.
    """

    def __init__(self, cin: int, channels: tuple[int, ...], stride: int = 1, dilation: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        self.bn1 = _bn_relu(cin)
        d = dilation
        if len(channels) == 2:
            c1, c2 = channels
            layers = [("conv1", nn.Conv2d(cin, c1, 3, stride, padding=d, dilation=d, bias=False)),
                      ("bn2", _bn_relu(c1)),
                      ("conv2", nn.Conv2d(c1, c2, 3, 1, padding=d, dilation=d, bias=False))]
        else:
            c1, c2, c3 = channels
            layers = [("conv1", nn.Conv2d(cin, c1, 1, stride, bias=False)),
                      ("bn2", _bn_relu(c1)),
                      ("conv2", nn.Conv2d(c1, c2, 3, 1, padding=d, dilation=d, bias=False)),
                      ("bn3", _bn_relu(c2))]
            if dropout:
                layers.append(("dropout", nn.Dropout2d(dropout)))
            layers.append(("conv3", nn.Conv2d(c2, c3, 1, bias=False)))
        self.convs = nn.Sequential(OrderedDict(layers))
        if stride != 1 or cin != channels[-1]:
            self.proj_conv = nn.Conv2d(cin, channels[-1], 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.bn1(x)
        shortcut = self.proj_conv(pre) if hasattr(self, "proj_conv") else x
        return self.convs(pre) + shortcut


class WideResNet38Trunk(Trunk):
    """NVIDIA's WideResNet38-A2 as used by ``DeepWV3Plus`` (SynBoost's and PEBAL's segmenter), 105.06 M parameters
    (137.10 M with the DeepLabV3+ head of 19 classes, the same count as the official network).

    ``mod1``: 3x3 conv 3->64 at full resolution; ``pool2`` (3x3 max-pool, stride 2); ``mod2``: 3 blocks
    (128, 128) -> the low-level features, 128 channels at stride 2; ``pool3``; ``mod3``: 3 blocks (256, 256) at
    stride 4; ``mod4``: 6 blocks (512, 512), the first with stride 2; ``mod5``: 3 blocks (512, 1024);
    ``mod6``: 1 bottleneck (512, 1024, 2048) with Dropout2d(0.3); ``mod7``: 1 bottleneck (1024, 2048, 4096)
    with Dropout2d(0.5) -> the high-level features, 4096 channels. Output stride 8 (the official setting):
    dilation 2 in ``mod5``, 4 in ``mod6``/``mod7``. Output stride 16 (our extension, same parameters): ``mod5``
    starts with stride 2, dilation 2 in ``mod6``/``mod7``. Like DeepWV3Plus, the ImageNet net's final BN-ReLU
    (``bn_out``) and classifier are not part of the trunk: ``mod7`` feeds the ASPP directly.

    Normalisation is plain ``BatchNorm2d`` (the official ``mynn.Norm2d`` resolves to it at inference; apex's
    SyncBatchNorm, its training-time option, has the same parameters and buffers). ``imagenet_weights`` is None:
    torchvision has no WideResNet38, and NVIDIA's ImageNet file (``wider_resnet38.pth.tar``) is not imported
    here; this trunk is meant for the official Cityscapes checkpoints (``synboost.importers.official``).
    """

    STRUCTURE = (3, 3, 6, 3, 1, 1)
    CHANNELS = ((128, 128), (256, 256), (512, 512), (512, 1024), (512, 1024, 2048), (1024, 2048, 4096))
    DROPOUT = (0.0, 0.0, 0.0, 0.0, 0.3, 0.5)

    def __init__(self, output_stride: int = 8):
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError("wrn38 supports output_stride 8 or 16")
        # per module mod2..mod7: (stride of the first block, dilation)
        plan = ([(1, 1), (1, 1), (2, 1), (1, 2), (1, 4), (1, 4)] if output_stride == 8 else
                [(1, 1), (1, 1), (2, 1), (2, 1), (1, 2), (1, 2)])
        self.mod1 = nn.Sequential(OrderedDict([("conv1", nn.Conv2d(3, 64, 3, 1, padding=1, bias=False))]))
        self.pool2 = nn.MaxPool2d(3, stride=2, padding=1)
        self.pool3 = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        for i, (n, ch, (stride, dil), drop) in enumerate(zip(self.STRUCTURE, self.CHANNELS, plan, self.DROPOUT)):
            blocks = []
            for b in range(n):
                blocks.append((f"block{b + 1}", WideResBlock(cin, ch, stride if b == 0 else 1, dil, drop)))
                cin = ch[-1]
            self.add_module(f"mod{i + 2}", nn.Sequential(OrderedDict(blocks)))
        self.low_channels, self.out_channels, self.output_stride, self.low_stride = 128, 4096, output_stride, 2

    def forward(self, x):
        low = self.mod2(self.pool2(self.mod1(x)))
        x = self.mod3(self.pool3(low))
        for mod in (self.mod4, self.mod5, self.mod6, self.mod7):
            x = mod(x)
        return low, x


def build_trunk(name: str, output_stride: int = 16, width: int = 16) -> Trunk:
    """The trunk called ``name`` (resnet50, resnet101, mobilenet_v3_large, wrn38, tiny)."""
    if name == "resnet50":
        return ResNetTrunk(50, output_stride)
    if name == "resnet101":
        return ResNetTrunk(101, output_stride)
    if name == "mobilenet_v3_large":
        return MobileNetV3Trunk(output_stride)
    if name == "wrn38":
        return WideResNet38Trunk(output_stride)
    if name == "tiny":
        return TinyTrunk(width, output_stride)
    raise ValueError(f"unknown backbone '{name}'; known: {', '.join(BACKBONES)}")


BACKBONES = ("resnet50", "resnet101", "mobilenet_v3_large", "wrn38", "tiny")
