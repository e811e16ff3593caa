"""VGG feature pyramids (torchvision's VGG ``features`` layout, sliced).

- ``VGG19Pyramid``: slices ending at relu1_1 [0:2], relu2_1 [2:7], relu3_1 [7:12], relu4_1 [12:21],
  relu5_1 [21:30]; modules ``slice1..slice5`` keep torchvision's indices (``slice2.2.weight`` = ``features.2``), as
  pix2pixHD's / SPADE's ``VGG19`` and SynBoost's ``VGG19_difference``. For the perceptual loss and difference.
- ``VGG16Encoder``: SynBoost's dissimilarity ``vgg_encoder`` (``VGGFeatures('vgg16')``): layer1 = [0:4],
  layer2 = [4:9], layer3 = [9:16], layer4 = [16:23], renumbered inside each layer (``layer2.1.weight`` =
  ``features.5``) exactly as the official checkpoint keys.

The modules are built with random weights (torchvision's ``make_layers`` + torchvision's VGG init, without the
102M-parameter classifier); ``load_imagenet_vgg`` maps torchvision's ImageNet file (``features.N.*``) onto them
through ``synboost.hub`` from a local file only. The same path takes a ``.safetensors`` file in that layout, such
as the trunks ``synboost train backbone`` pretrains on a world without ImageNet weights (``vgg16-world.safetensors``):
``full_features`` / ``stage_outputs`` / ``torchvision_feature_keys`` describe the whole ``features`` it trains.
"""
from __future__ import annotations

import os

import torch
from torch import nn
from torchvision.models import VGG16_Weights, VGG19_Weights
from torchvision.models.vgg import cfgs, make_layers

from synboost.errors import CheckpointError
from synboost.hub.checkpoint import load_foreign, load_into
from synboost.hub.pretrained import find_weights

VGG19_SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))
VGG16_LAYERS = ((0, 4), (4, 9), (9, 16), (16, 23))
_CFG = {16: "D", 19: "E"}
_WEIGHTS = {16: VGG16_Weights.IMAGENET1K_V1, 19: VGG19_Weights.IMAGENET1K_V1}
#: the metadata kind of a trunk file written by `synboost train backbone` (torchvision's ``features.N.*`` keys)
TRUNK_KIND = "vgg_trunk"


def vgg_features(depth: int, end: int, width: float = 1.0) -> nn.Sequential:
    """torchvision's VGG{depth} ``features[:end]`` (no BN), initialised as torchvision's ``VGG`` does; ``width``
    scales every conv's channels (1.0 = VGG; smaller only for training from scratch on a CPU)."""
    cfg = [v if v == "M" else max(1, int(round(v * width))) for v in cfgs[_CFG[depth]]]
    feats = make_layers(cfg, batch_norm=False)[:end]
    for m in feats.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(m.bias, 0)
    return feats


def full_features(depth: int) -> nn.Sequential:
    """The whole of torchvision's ``vgg{depth}().features`` (13 / 16 convs, last max-pool included), initialised
    as torchvision does; its ``state_dict`` with the prefix ``features.`` is torchvision's key layout."""
    return vgg_features(depth, len(make_layers(cfgs[_CFG[depth]], batch_norm=False)))


def stage_outputs(depth: int) -> tuple[int, ...]:
    """Indices into ``full_features(depth)`` of the last ReLU of each of the five blocks (relu1_2, relu2_2,
    relu3_3 / 3_4, relu4_3 / 4_4, relu5_3 / 5_4; strides 1 .. 16): the outputs a head reads so that every conv
    gets a gradient."""
    out, i = [], 0
    for v in cfgs[_CFG[depth]]:
        if v == "M":
            out.append(i - 1)
            i += 1
        else:
            i += 2  # conv, relu
    return tuple(out)


def torchvision_feature_keys(depth: int) -> dict[str, tuple[int, ...]]:
    """key -> shape of torchvision's ``vgg{depth}().features`` state dict, with the ``features.`` prefix."""
    return {f"features.{k}": tuple(v.shape) for k, v in full_features(depth).state_dict().items()}


class _Pyramid(nn.Module):
    depth: int
    names: tuple[str, ...]

    def set_trainable(self, trainable: bool) -> "_Pyramid":
        for p in self.parameters():
            p.requires_grad_(trainable)
        return self

    def torchvision_keys(self) -> dict[str, str]:
        """own state_dict key -> the torchvision ``features.N.*`` key it comes from."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for name in self.names:
            x = getattr(self, name)(x)
            out.append(x)
        return out


class VGG19Pyramid(_Pyramid):
    """VGG19 relu1_1 .. relu5_1 (channels 64, 128, 256, 512, 512 at strides 1, 2, 4, 8, 16). Frozen by default."""

    depth = 19
    names = ("slice1", "slice2", "slice3", "slice4", "slice5")
    channels = (64, 128, 256, 512, 512)

    def __init__(self, frozen: bool = True):
        super().__init__()
        feats = vgg_features(19, VGG19_SLICES[-1][1])
        for name, (a, b) in zip(self.names, VGG19_SLICES):
            s = nn.Sequential()
            for i in range(a, b):
                s.add_module(str(i), feats[i])
            self.add_module(name, s)
        self.set_trainable(not frozen)

    def torchvision_keys(self) -> dict[str, str]:
        return {k: "features." + k.split(".", 1)[1] for k in self.state_dict()}


class VGG16Encoder(_Pyramid):
    """SynBoost's dissimilarity VGG16 encoder (relu1_2, relu2_2, relu3_3, relu4_3; strides 1, 2, 4, 8).
    Trainable by default: the official code fine-tunes it at the same learning rate as the rest."""

    depth = 16
    names = ("layer1", "layer2", "layer3", "layer4")
    channels = (64, 128, 256, 512)

    def __init__(self, frozen: bool = False, width: float = 1.0):
        super().__init__()
        self.channels = tuple(max(1, int(round(c * width))) for c in VGG16Encoder.channels)
        feats = vgg_features(16, VGG16_LAYERS[-1][1], width)
        for name, (a, b) in zip(self.names, VGG16_LAYERS):
            self.add_module(name, nn.Sequential(*feats[a:b]))
        self.set_trainable(not frozen)

    def torchvision_keys(self) -> dict[str, str]:
        starts = dict(zip(self.names, (a for a, _ in VGG16_LAYERS)))
        out = {}
        for k in self.state_dict():
            layer, idx, param = k.split(".", 2)
            out[k] = f"features.{starts[layer] + int(idx)}.{param}"
        return out


def load_imagenet_vgg(module: _Pyramid, depth: int | None = None, path: str | os.PathLike | None = None,
                      disable_hint: str = "model.pretrained=false") -> _Pyramid:
    """Load torchvision's ImageNet VGG{16,19} file into a pyramid (keys ``features.N.*`` -> the slices).

    ``path``: the file, or a folder holding it; otherwise ``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth`` /
    ``vgg19-dcbb9e9d.pth``. Never downloads: an absent file is a one-line ``CheckpointError`` naming it.
    Keeps the module's trainable/frozen state."""
    depth = depth or module.depth
    if depth != module.depth:
        raise ValueError(f"{type(module).__name__} is a VGG{module.depth} pyramid, not VGG{depth}")
    file = find_weights(_WEIGHTS[depth].url, path, f"ImageNet VGG{depth} weights", disable_hint)
    _check_trunk_meta(file, depth)
    sd = load_foreign(file)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    mapping = module.torchvision_keys()
    missing = [src for src in mapping.values() if src not in sd]
    if missing:
        raise CheckpointError(f"{file}: lacks {len(missing)} VGG{depth} feature keys (e.g. {missing[:3]}); give "
                              f"torchvision's {_tv_file(depth)} or a vgg{depth}-*.safetensors of `synboost train "
                              "backbone`")
    load_into(module, {own: sd[src] for own, src in mapping.items()}, str(file))
    return module


def _check_trunk_meta(file, depth: int) -> None:
    """A synboost checkpoint given as a VGG file must be a VGG{depth} trunk (one line naming what it is instead);
    other files (torchvision's ``.pth``, foreign safetensors) are judged by their keys."""
    if str(file).endswith(".safetensors"):
        from synboost.hub.checkpoint import read_meta

        try:
            meta = read_meta(file)
        except CheckpointError:  # a safetensors file without our metadata: its keys decide
            return
        if meta.get("kind") != TRUNK_KIND or int(meta.get("depth", 0)) != depth:
            what = (f"a VGG{meta.get('depth')} trunk" if meta.get("kind") == TRUNK_KIND
                    else f"a '{meta.get('kind')}' checkpoint")
            raise CheckpointError(f"{file}: is {what}, not VGG{depth} weights; give a vgg{depth}-*.safetensors of "
                                  f"`synboost train backbone` or torchvision's {_tv_file(depth)}")


def _tv_file(depth: int) -> str:
    return _WEIGHTS[depth].url.rsplit("/", 1)[-1]
