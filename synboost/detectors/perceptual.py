"""Perceptual-difference maps between an image and its re-synthesis.

``perceptual_difference``: SynBoost's prior (design note sec. 1 step 11; official ``VGG19_difference`` and
``data_preparation/mean_absolute_features.py``). Both ImageNet-normalised images go through the same frozen VGG19
(relu1_1 .. relu5_1); per level the channel mean of |f(x) - f(y)|; each map upsampled bicubic to the input size;
weighted 1/32, 1/16, 1/8, 1/4, 1; then per-image min-max to [0, 1].

Upsampling: the official code uses ``nn.Upsample(scale_factor=1|2|4|8|16, mode='bicubic')`` (align_corners unset,
which is False). We call ``F.interpolate(size=input size, mode='bicubic', align_corners=False)``: the same
numbers whenever H and W are multiples of 16 (256x512: checked to float precision), and unlike the official code it
also works when they are not (the official sum then fails on mismatched sizes). The official module ``unsqueeze``s
the maps to (1, B, H, W) and the estimator normalises with the tensor's global min/max, so it is only right for
batch 1; here every image is normalised on its own. An all-equal map (image == re-synthesis) gives 0, not NaN.

``lpips_map``: the spatial LPIPS distance (Zhang et al., CVPR 2018; the ``lpips`` package) as an alternative prior.
"""
from __future__ import annotations

import functools
import os
import re
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from synboost.errors import CheckpointError

PERCEPTUAL_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


def minmax_per_image(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(B, ...) -> (v - min) / (max - min) per image; a constant image gives zeros."""
    flat = v.flatten(1)
    lo = flat.min(1).values.view(-1, *([1] * (v.dim() - 1)))
    hi = flat.max(1).values.view(-1, *([1] * (v.dim() - 1)))
    return (v - lo) / (hi - lo).clamp_min(eps)


def perceptual_difference(vgg19_pyramid: nn.Module, x: torch.Tensor, y: torch.Tensor, normalize: bool = True,
                          weights: Sequence[float] = PERCEPTUAL_WEIGHTS) -> torch.Tensor:
    """(B, 3, H, W) x (B, 3, H, W), ImageNet-normalised -> (B, H, W) float32 map; in [0, 1] per image when
    ``normalize``, the raw weighted sum otherwise. ``vgg19_pyramid``: a ``VGG19Pyramid`` (or any module returning
    one feature map per weight). Both images go through the network in one batch."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"x and y must be (B, 3, H, W) of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    b, size = x.shape[0], x.shape[2:]
    feats = vgg19_pyramid(torch.cat([x, y]))
    if len(feats) != len(weights):
        raise ValueError(f"{len(feats)} feature levels for {len(weights)} weights")
    total = x.new_zeros((b, 1, *size), dtype=torch.float32)
    for w, f in zip(weights, feats):
        m = (f[:b] - f[b:]).abs().float().mean(1, keepdim=True)
        total = total + w * F.interpolate(m, size=size, mode="bicubic", align_corners=False)
    total = total[:, 0]
    return minmax_per_image(total) if normalize else total


# ---------------------------------------------------------------------------------------------------- LPIPS
_LPIPS_URLS = {  # torchvision's ImageNet files of the LPIPS trunks (lpips 0.1.4 builds them with pretrained=True)
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "squeeze": "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
}
_SLICE_KEY = re.compile(r"^slice\d+\.(\d+\..+)$")  # lpips keeps torchvision's feature indices


def build_lpips(net: str = "vgg", pnet_rand: bool = False, pretrained: bool = True,
                path: str | os.PathLike | None = None, linear: bool = True) -> nn.Module:
    """An ``lpips.LPIPS(net, spatial=True)`` built offline, in eval mode, frozen.

    ``pretrained``: the calibrated linear layers shipped inside the ``lpips`` package (no download).
    The trunk: ``lpips`` itself would call torchvision with ``pretrained=True`` and download when the file is not
    cached; so the trunk is always built random here and, unless ``pnet_rand=True`` (an explicit choice), filled
    from torchvision's ImageNet file found at ``path`` or in ``$TORCH_HOME/hub/checkpoints`` (one-line error if
    absent). ``path`` may also be a ``.safetensors`` trunk in torchvision's layout, e.g. ``vgg16-world.safetensors``
    of ``synboost train backbone``; lpips' linear layers were calibrated on the channels of ImageNet VGG16, which
    such a trunk does not share, so give it ``linear=False``: lpips' baseline, every channel weighted alike."""
    from synboost.hub.checkpoint import load_foreign
    from synboost.hub.pretrained import find_weights, hub_dir, weights_file

    if net not in _LPIPS_URLS:
        raise ValueError(f"LPIPS net must be one of {sorted(_LPIPS_URLS)}, got '{net}'")
    file = None
    if not pnet_rand:
        url = _LPIPS_URLS[net]
        try:
            file = find_weights(url, path)
        except CheckpointError:
            raise CheckpointError(
                f"LPIPS '{net}' trunk weights not found: put {weights_file(url)} (from {url}) at "
                f"{(path if path else hub_dir())}/{weights_file(url)}, or pass pnet_rand=True for a random trunk"
            ) from None
    import lpips  # slow to import (~3 s): only when needed

    with warnings.catch_warnings():  # torchvision's 'pretrained is deprecated' from inside lpips
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, spatial=True, pnet_rand=True, pretrained=pretrained, lpips=linear,
                            verbose=False)
    if file is not None:
        sd = load_foreign(file)
        own = model.net.state_dict()
        src = {k: "features." + _SLICE_KEY.match(k).group(1) for k in own}
        missing = [v for v in src.values() if v not in sd]
        if missing:
            raise CheckpointError(f"{file}: lacks {len(missing)} trunk keys for LPIPS '{net}' (e.g. {missing[:3]})")
        model.net.load_state_dict({k: sd[v] for k, v in src.items()}, strict=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


@functools.lru_cache(maxsize=4)
def _cached_lpips(net: str, pnet_rand: bool, pretrained: bool, path: str | None, linear: bool) -> nn.Module:
    return build_lpips(net, pnet_rand, pretrained, path, linear)


def lpips_map(x: torch.Tensor, y: torch.Tensor, net: str | nn.Module = "vgg", pnet_rand: bool = False,
              pretrained: bool = True, path: str | os.PathLike | None = None, linear: bool = True) -> torch.Tensor:
    """Spatial LPIPS distance: (B, 3, H, W) RGB in [0, 1] twice -> (B, H, W) (not normalised).

    ``net``: 'vgg' | 'alex' | 'squeeze' (a model is built once per setting and cached) or a model from
    ``build_lpips``; ``linear``: see :func:`build_lpips`."""
    model = net if isinstance(net, nn.Module) else _cached_lpips(net, pnet_rand, pretrained,
                                                                  str(path) if path else None, linear)
    model = model.to(x.device)
    return model(x, y, normalize=True)[:, 0]  # normalize: [0, 1] -> [-1, 1], LPIPS' input range
