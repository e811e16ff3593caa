"""DeepLabV3+ over the 19 Cityscapes train classes.

The head follows NVIDIA's ``DeepWV3Plus`` (the segmenter of SynBoost and PEBAL) layer for layer and name for name:
ASPP with image pooling first (``aspp.img_pooling``, ``aspp.img_conv``, ``aspp.features``), ``bot_aspp`` (1x1 to
256), ``bot_fine`` (1x1 of the stride-4 features to 48), ``final`` (two 3x3 conv-BN-ReLU + 1x1 classifier), logits
upsampled bilinearly to the input size (``align_corners=True`` as in the official code). So an official
checkpoint maps onto ``head.*`` by a renaming table once the WideResNet38 trunk is added.

``forward`` returns the logits of the ``num_classes`` classes; ``forward_features`` also returns the decoder
features (for the density baselines). With ``abstention=True`` the classifier has one more output, PEBAL's
abstention class (the official ``final.6`` of shape 20x256): ``forward(x, all_outputs=True)`` returns all of
them, while ``forward(x)`` still returns the inlier logits only, so every score, mIoU and pipeline works on a PEBAL model unchanged.

``decoder_input`` / ``head`` split the forward pass where PEBAL's trainable part begins: two models that share
everything below ``final`` (a PEBAL fine-tune with a frozen trunk and its base) can run the trunk once.
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
    #: the modules PEBAL fine-tunes (the official "final" block, whose last conv is our ``classifier``)
    HEAD = ("final", "classifier")

    def __init__(self, backbone: str = "resnet50", num_classes: int = 19, output_stride: int = 16,
                 aspp_dim: int = 256, decoder_dim: int = 256, head_dropout: float = 0.1, width: int = 16,
                 abstention: bool = False):
        super().__init__()
        self.abstention = abstention
        self._below_head_frozen = False  # set by freeze_below_head: no gradients below the head
        self._eval_modules: tuple[str, ...] = ()  # top-level modules kept in eval mode (frozen BN statistics)
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
        self.classifier = nn.Conv2d(decoder_dim, num_classes + int(abstention), 1, bias=False)
        self.feature_dim = decoder_dim

    def decoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """Everything below ``final``: the concatenated skip and ASPP features at stride 4. Computed without
        gradients when the model is frozen below the head (PEBAL), which is most of the work saved."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self._below_head_frozen):
            low, high = self.trunk(x)
            up = upsample(self.bot_aspp(self.aspp(high)), low.shape[2:])
            return torch.cat([self.bot_fine(low), up], 1)

    def head(self, dec: torch.Tensor, size, inliers_only: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits at ``size``, decoder features) from :meth:`decoder_input`; the abstention logit is dropped
        unless ``inliers_only=False`` (it is dropped before upsampling, so it costs nothing)."""
        feats = self.final(dec)
        logits = self.classifier(feats)
        if inliers_only and self.abstention:
            logits = logits[:, :self.num_classes]
        return upsample(logits, size), feats

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inlier logits at input size, decoder features at stride 4)."""
        return self.head(self.decoder_input(x), x.shape[2:])

    def forward(self, x: torch.Tensor, all_outputs: bool = False) -> torch.Tensor:
        """Inlier logits at the input size; ``all_outputs=True`` appends the abstention logit if there is one
        (a keyword, so that it also passes through DistributedDataParallel)."""
        return self.head(self.decoder_input(x), x.shape[2:], inliers_only=not all_outputs)[0]

    # ------------------------------------------------------------------------------------ head-only training

    def freeze_below_head(self, freeze_bn: bool = True) -> list[nn.Parameter]:
        """Train only :attr:`HEAD` (PEBAL): every other parameter stops requiring gradients and, with
        ``freeze_bn`` (default), every module outside the head stays in eval mode even under ``train()``, so its
        BatchNorm running statistics do not move. ``freeze_bn=False`` reproduces the official PEBAL code, which
        puts the whole network in train mode: the frozen trunk then normalises with batch statistics and its
        running statistics drift towards the fine-tuning crops. Returns the trainable parameters."""
        trainable = []
        for name, p in self.named_parameters():
            p.requires_grad_(name.split(".")[0] in self.HEAD)
            if p.requires_grad:
                trainable.append(p)
        self._below_head_frozen = True
        self._eval_modules = tuple(n for n, _ in self.named_children() if n not in self.HEAD) if freeze_bn else ()
        self.train(self.training)
        return trainable

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self._eval_modules:
            getattr(self, name).eval()
        return self

    def add_abstention(self) -> "DeepLabV3Plus":
        """Grow the classifier by PEBAL's abstention output, as the official weight surgery does: the new
        filter is Kaiming-normal, the trained class filters are kept. Returns ``self``."""
        if self.abstention:
            return self
        old = self.classifier
        new = nn.Conv2d(old.in_channels, self.num_classes + 1, 1, bias=False).to(old.weight.device, old.weight.dtype)
        nn.init.kaiming_normal_(new.weight)
        with torch.no_grad():
            new.weight[:self.num_classes] = old.weight
        self.classifier, self.abstention = new, True
        return self


@register_model("deeplabv3plus")
def deeplabv3plus(**kwargs) -> DeepLabV3Plus:
    return DeepLabV3Plus(**kwargs)
