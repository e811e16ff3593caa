"""DeepLabV3+ over the 19 Cityscapes train classes.

The head follows NVIDIA's ``DeepWV3Plus`` (the segmenter of SynBoost and PEBAL) layer for layer and name for name:
ASPP with image pooling first (``aspp.img_pooling``, ``aspp.img_conv``, ``aspp.features``), ``bot_aspp`` (1x1 to
256), ``bot_fine`` (1x1 of the stride-4 features to 48), ``final`` (two 3x3 conv-BN-ReLU + 1x1 classifier), logits
upsampled bilinearly to the input size (``align_corners=True`` as in the official code). So an official
checkpoint maps onto ``head.*`` by a renaming table once the WideResNet38 trunk is added.

``forward`` returns the logits of the ``num_classes`` classes; ``forward_features`` also returns the decoder
features (for the density baselines). With ``abstention=True`` the classifier has one more output, PEBAL's
abstention class (the official ``final.6`` of shape 20x256): ``forward(x, all_outputs=True)`` returns all of
them, while ``forward(x)`` still returns the inlier logits only, so every score, mIoU and pipeline works on a PEBAL
model unchanged.

``decoder_input`` / ``head`` split the forward pass where PEBAL's trainable part begins: two models that share
everything below ``final`` (a PEBAL fine-tune with a frozen trunk and its base) can run the trunk once.

``outlier_training`` says what the segmenter was re-trained for with outlier data (``synboost train outlier``)
and builds what that needs; "" (default) changes nothing:

* ``void``: one more classifier output, the void / outlier class (the Fishyscapes "void classifier"); like the
  abstention output it is dropped by ``forward(x)`` and kept by ``forward(x, all_outputs=True)``;
* ``outlier_head``: a binary outlier head (``outlier_head``: 3x3 conv-BN-ReLU + 1x1 conv with bias) on the
  decoder features, beside the classifier (Bevandic et al. 2019); ``forward(x, all_outputs=True)`` appends its
  logit as the last channel, :meth:`forward_outlier` gives (logits, outlier logit map) at the input size;
* ``dirichlet``: no change of architecture: the logits parameterise a Dirichlet, alpha = exp(z) (prior
  networks); recorded so that a loader knows which scores the outputs support.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synboost.models.backbones import build_trunk
from synboost.models.registry import register_model


def upsample(x: torch.Tensor, size, align_corners: bool = True) -> torch.Tensor:
    """Bilinear resize of a (B, C, H, W) tensor to ``size``."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3 convolutions and image pooling, concatenated."""
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
        # eager: the global average as a full-size average pool, the same mean as AdaptiveAvgPool2d(1) (img_pooling,
        # kept for the official names) but ~20x faster on a bf16 NHWC CPU tensor, where the adaptive pool takes a
        # slow path; traced, compiled or exported: the adaptive pool, whose size follows the input (dynamic shapes)
        eager = not (torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())
        pooled = F.avg_pool2d(x, x.shape[2:]) if eager and isinstance(self.img_pooling, nn.AdaptiveAvgPool2d) \
            and self.img_pooling.output_size in (1, (1, 1)) else self.img_pooling(x)
        img = upsample(self.img_conv(pooled), x.shape[2:])
        return torch.cat([img] + [f(x) for f in self.features], 1)


class DeepLabV3Plus(nn.Module):
    #: the modules PEBAL fine-tunes (the official "final" block, whose last conv is our ``classifier``)
    """DeepLabV3+ over the 19 Cityscapes train classes, with optional PEBAL abstention and outlier outputs."""
    HEAD = ("final", "classifier")
    #: the values of ``outlier_training`` ("" = a plain segmenter)
    OUTLIER_TRAININGS = ("", "void", "outlier_head", "dirichlet")

    def __init__(self, backbone: str = "resnet50", num_classes: int = 19, output_stride: int = 16,
                 aspp_dim: int = 256, decoder_dim: int = 256, head_dropout: float = 0.1, width: int = 16,
                 abstention: bool = False, outlier_training: str = ""):
        super().__init__()
        if outlier_training not in self.OUTLIER_TRAININGS:
            raise ValueError(f"outlier_training must be one of {self.OUTLIER_TRAININGS}, got '{outlier_training}'")
        if abstention and outlier_training in ("void", "outlier_head"):
            raise ValueError("a segmenter has either PEBAL's abstention output or an outlier output, not both")
        self.abstention = abstention
        self.outlier_training = outlier_training
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
        self.classifier = nn.Conv2d(decoder_dim, num_classes + int(abstention or outlier_training == "void"), 1,
                                    bias=False)
        self.feature_dim = decoder_dim
        self.outlier_head = _outlier_head(decoder_dim) if outlier_training == "outlier_head" else None

    def decoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """Everything below ``final``: the concatenated skip and ASPP features at stride 4. Computed without
        gradients when the model is frozen below the head (PEBAL), which is most of the work saved."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self._below_head_frozen):
            low, high = self.trunk(x)
            up = upsample(self.bot_aspp(self.aspp(high)), low.shape[2:])
            return torch.cat([self.bot_fine(low), up], 1)

    def head(self, dec: torch.Tensor, size, inliers_only: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits at ``size``, decoder features) from :meth:`decoder_input`; the abstention / void logit is
        dropped unless ``inliers_only=False`` (it is dropped before upsampling, so it costs nothing), which also
        appends the outlier head's logit (if there is a head)."""
        feats = self.final(dec)
        logits = self.classifier(feats)
        if inliers_only:
            if logits.shape[1] > self.num_classes:
                logits = logits[:, :self.num_classes]
        elif self.outlier_head is not None:
            logits = torch.cat([logits, self.outlier_head(feats)], 1)
        return upsample(logits, size), feats

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inlier logits at input size, decoder features at stride 4)."""
        return self.head(self.decoder_input(x), x.shape[2:])

    def forward(self, x: torch.Tensor, all_outputs: bool = False) -> torch.Tensor:
        """Inlier logits at the input size; ``all_outputs=True`` appends the abstention / void logit or the
        outlier head's logit if there is one (a keyword, so that it also passes through DistributedDataParallel)."""
        return self.head(self.decoder_input(x), x.shape[2:], inliers_only=not all_outputs)[0]

    def forward_outlier(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inlier logits (B, K, H, W), outlier head logit (B, H, W)), both at the input size, from one pass."""
        if self.outlier_head is None:
            raise RuntimeError("this segmenter has no outlier head (outlier_training='outlier_head')")
        out = self(x, all_outputs=True)
        return out[:, :self.num_classes], out[:, self.num_classes]

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
        if self.outlier_training in ("void", "outlier_head"):
            raise ValueError(f"this segmenter was re-trained with an outlier output ({self.outlier_training}); "
                             "PEBAL starts from a plain segmenter")
        self.classifier, self.abstention = self._grown_classifier(), True
        return self

    def _grown_classifier(self) -> nn.Conv2d:
        """The classifier with one more output: a Kaiming-normal filter after the trained class filters."""
        old = self.classifier
        new = nn.Conv2d(old.in_channels, self.num_classes + 1, 1, bias=False).to(old.weight.device, old.weight.dtype)
        nn.init.kaiming_normal_(new.weight)
        with torch.no_grad():
            new.weight[:self.num_classes] = old.weight
        return new

    # --------------------------------------------------------------------------- re-training with outlier data

    def set_outlier_training(self, kind: str) -> "DeepLabV3Plus":
        """Turn a trained plain segmenter into one to re-train for ``kind`` (see the module notes): ``void``
        grows the classifier by one output (Kaiming-normal, the class filters kept, as :meth:`add_abstention`),
        ``outlier_head`` adds a freshly initialised head, ``dirichlet`` only records the kind. Returns ``self``."""
        if kind not in self.OUTLIER_TRAININGS:
            raise ValueError(f"outlier_training must be one of {self.OUTLIER_TRAININGS}, got '{kind}'")
        if kind == self.outlier_training:
            return self
        if self.abstention or self.outlier_training:
            raise ValueError("only a plain segmenter (no abstention output, no outlier training) can be turned "
                             f"into one for '{kind}'")
        if kind == "void":
            self.classifier = self._grown_classifier()
        elif kind == "outlier_head":
            w = self.classifier.weight
            self.outlier_head = _outlier_head(self.classifier.in_channels).to(w.device, w.dtype)
            self.outlier_head.train(self.training)
        self.outlier_training = kind
        return self


def _outlier_head(channels: int) -> nn.Sequential:
    """The binary outlier head on the decoder features: 3x3 conv-BN-ReLU, then a 1x1 conv to one logit."""
    mid = max(channels // 2, 8)
    return nn.Sequential(nn.Conv2d(channels, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, 1, 1, bias=True))


@register_model("deeplabv3plus")
def deeplabv3plus(**kwargs) -> DeepLabV3Plus:
    """Registered builder of :class:`DeepLabV3Plus`."""
    return DeepLabV3Plus(**kwargs)
