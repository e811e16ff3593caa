"""Inference rewrites of a detector's own networks (``defaults.freeze``, on for every detector a pipeline file
builds): what a runtime such as OpenVINO or inductor's freezing does to a graph, done to the eager modules.

* :func:`fold_spectral_norm_`: every spectral norm (hook or parametrization) folded into its weight. In eval mode
  the norm divides the weight by the sigma of its stored vectors without a power iteration, so the folded network
  computes the same numbers, once instead of at every call (the SPADE generator's 1024-channel convolutions spent
  ~15 % of its time there).
* :func:`fold_batchnorm_`: every eval-mode BatchNorm that directly follows a convolution folded into it
  (``torch.nn.utils.fusion.fuse_conv_bn_eval``): consecutive children of an ``nn.Sequential`` (also a conv followed
  by a Sequential that starts with the BatchNorm, as in the WideResNet-38's blocks) and the named pairs of
  torchvision's ResNet blocks. The BatchNorm becomes an ``nn.Identity``. Modules with hooks are left as they are
  (a density tap keeps its layer). On the CPU in bf16 the 1024- and 2048-channel BatchNorms of a ResNet-101 were a
  third of the segmenter's time.
* :class:`WeightCast`: bf16 copies of the weights of the convolutions and linear layers of a bf16 network, swapped in
  while the network runs in its autocast region, so autocast does not cast them at every call (~7 % of the bf16
  pipeline's time). Autocast casts exactly these weights to bf16 for these ops, so the numbers are those of
  autocast; outside the region the network holds its float32 weights.

All three change a module in place, which is why only a detector that owns its networks (``freeze=True``: built by
:func:`~synboost.detectors.detector.build_detector`) applies them; a detector given a caller's networks does not.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

#: the module types whose weights a bf16 network keeps in bf16 (autocast runs them in bf16)
CAST_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)


def fold_spectral_norm_(net: nn.Module) -> int:
    """Fold every spectral norm of ``net`` (``torch.nn.utils.spectral_norm``'s hook or the parametrization) into
    its weight, in place; returns how many there were. ``net`` should be in eval mode (no power iteration)."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.spectral_norm import SpectralNorm, remove_spectral_norm

    n = 0
    for mod in net.modules():
        for hook in list(mod._forward_pre_hooks.values()):
            if isinstance(hook, SpectralNorm):
                remove_spectral_norm(mod, hook.name)
                n += 1
        if parametrize.is_parametrized(mod):
            for name in list(mod.parametrizations):
                parametrize.remove_parametrizations(mod, name, leave_parametrized=True)
                n += 1
    return n


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                or getattr(m, "_forward_hooks_with_kwargs", None))


def _named_pairs(mod: nn.Module) -> list[tuple[nn.Module, str, nn.Module, str]]:
    """(conv parent, conv name, bn parent, bn name) of the conv -> BN pairs whose BN reads only the conv."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    from synboost.models.backbones import ResNetTrunk

    pairs = []
    if isinstance(mod, nn.Sequential):
        ch = list(mod._modules.items())
        for (a, ca), (b, cb) in zip(ch, ch[1:]):
            if not isinstance(ca, nn.Conv2d):
                continue
            if isinstance(cb, nn.BatchNorm2d):
                pairs.append((mod, a, mod, b))
            elif type(cb) is nn.Sequential and len(cb) and isinstance(cb[0], nn.BatchNorm2d):
                pairs.append((mod, a, cb, "0"))
    elif type(mod) in (Bottleneck, BasicBlock, ResNetTrunk):  # their forward: bn_i(conv_i(x)) for each i
        for i in (1, 2, 3):
            if isinstance(getattr(mod, f"conv{i}", None), nn.Conv2d) and isinstance(getattr(mod, f"bn{i}", None),
                                                                                   nn.BatchNorm2d):
                pairs.append((mod, f"conv{i}", mod, f"bn{i}"))
    return pairs


def fold_batchnorm_(net: nn.Module) -> int:
    """Fold each eval-mode BatchNorm2d with running statistics that directly follows a Conv2d (see the module
    docstring for which pairs) into the conv, in place; returns how many were folded."""
    n = 0
    for mod in list(net.modules()):
        for pc, c, pb, b in _named_pairs(mod):
            conv, bn = pc._modules[c], pb._modules[b]
            if (bn.training or conv.training or not bn.track_running_stats or bn.running_mean is None
                    or _hooked(conv) or _hooked(bn) or conv.weight.dtype != torch.float32):
                continue
            fused = fuse_conv_bn_eval(conv, bn)
            fused.weight.requires_grad_(False)
            fused.bias.requires_grad_(False)
            pc._modules[c] = fused
            pb._modules[b] = nn.Identity()
            n += 1
    return n


class WeightCast:
    """bf16 copies of the conv / linear weights (:data:`CAST_TYPES`) of the networks that run bf16, swapped in only
    while a network runs in its precision region (:meth:`swapped`): outside it the network is exactly the float32
    module it was (its ``state_dict``, a direct call, an export). The swap assigns ``param.data``, no copy."""

    def __init__(self):
        self._copies: dict[str, list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]]] = {}

    def set(self, name: str, nets, bf16: bool) -> None:
        """Keep bf16 copies of the weights of ``nets`` under ``name`` (``bf16``), or drop them."""
        self._copies.pop(name, None)
        if not bf16:
            return
        rows = []
        for net in nets:
            for m in net.modules():
                if isinstance(m, CAST_TYPES):
                    rows += [(p, p.data, p.data.to(torch.bfloat16)) for p in m.parameters(recurse=False)
                             if p.dtype == torch.float32]
        self._copies[name] = rows

    def __contains__(self, name: str) -> bool:
        return bool(self._copies.get(name))

    def __len__(self) -> int:
        return sum(len(v) for v in self._copies.values())

    @contextmanager
    def swapped(self, name: str):
        """The bf16 copies of ``name``'s weights in place of the float32 ones, for the ``with`` block."""
        rows = self._copies.get(name, ())
        for p, _, low in rows:
            p.data = low
        try:
            yield
        finally:
            for p, full, _ in rows:
                p.data = full
