"""SynBoost's detector: segmenter -> resynthesis -> perceptual difference -> dissimilarity network -> fusion.

:func:`dissimilarity_inputs` computes what the dissimilarity network takes; training and inference share it.
"""
from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import Callable, ContextManager, Mapping, Sequence

import torch
import torch.nn.functional as F

from synboost import scores
from synboost.detectors.components import OUTLIER_METHODS
from synboost.detectors.posthoc import POSTHOC_METHODS, PosthocDetector
from synboost.models.density import DENSITY_METHODS
from synboost.tensors import imagenet_denormalize01, imagenet_normalize01, resize_maps


def dissimilarity_inputs(image01: torch.Tensor, labels: torch.Tensor, generator, vgg19, entropy=None,
                         distance=None, priors: Sequence[str] = ("entropy", "perceptual", "distance"),
                         regions: Mapping[str, Callable[[], ContextManager]] | None = None,
                         perceptual: bool = False) -> dict:
    """Everything the dissimilarity network takes, at the size of ``image01`` (B, 3, H, W) in [0, 1]:
    the resynthesis of ``labels`` (B, H, W train ids; the generator's style comes from the image), both images
    ImageNet-normalised, the one-hot label map, and the prior maps in the order of ``priors`` (entropy and
    distance given by the caller, the perceptual difference computed here). Shared by training and inference.
    ``regions``: the context (an autocast region) each of ``generator`` and ``vgg`` runs in; what leaves a
    region is float32. ``perceptual``: compute the perceptual difference (returned as ``perceptual``) even when
    ``priors`` lacks it (a fusion that sums it)."""
    from synboost.detectors.perceptual import perceptual_difference
    from synboost.models.generator import labels_to_onehot, resynthesize

    regions = regions or {}
    size = tuple(image01.shape[-2:])
    with regions.get("generator", nullcontext)():
        syn01 = resynthesize(generator, labels, image01)
    syn01 = syn01.float() if regions else syn01
    if tuple(syn01.shape[-2:]) != size:
        syn01 = F.interpolate(syn01, size=size, mode="bilinear", align_corners=False)
    img_n, syn_n = imagenet_normalize01(image01), imagenet_normalize01(syn01)
    maps = {"entropy": entropy, "distance": distance}
    if "perceptual" in priors or perceptual:
        with regions.get("vgg", nullcontext)():
            maps["perceptual"] = perceptual_difference(vgg19, img_n, syn_n)
    pri = torch.stack([maps[p] for p in priors], 1).float() if priors else None
    onehot = labels_to_onehot(labels.long(), 19).to(image01.dtype)
    return {"image": img_n, "synthesis": syn_n, "onehot": onehot, "priors": pri, "synthesis01": syn01,
            "perceptual": maps.get("perceptual")}


class SynBoostDetector(PosthocDetector):
    """SynBoost: segmenter -> (label map, entropy, distance) -> resynthesis -> perceptual difference ->
    dissimilarity network -> fused with the entropy (``ensemble``; ``ensemble_weights``: two weights, of the
    dissimilarity softmax and the entropy as the official code sums them, or four, adding the softmax distance and
    the perceptual difference as its weight search ranges over them) -> anomaly map at the input size. The
    post-hoc scores of the same segmenter pass come for free (``score_all``). A generator that cannot take the
    style from the image (no style encoder) is said once, on stderr, when the detector is built."""

    EXTRA = ("synboost", "dissimilarity")

    def __init__(self, segmenter, generator, dissim, vgg19, size, sml_stats=None, ensemble: bool = True,
                 ensemble_weights=(0.75, 0.25), method: str = "synboost", **kw):
        compile, freeze = kw.pop("compile", False), kw.pop("freeze", False)
        super().__init__(segmenter, "entropy", sml_stats, **kw)
        self._check(method, POSTHOC_METHODS + OUTLIER_METHODS + DENSITY_METHODS + self.EXTRA)
        self.method = method
        self.generator, self.dissim, self.vgg19 = generator, dissim, vgg19
        self.size, self.ensemble, self.weights = tuple(size), ensemble, tuple(float(w) for w in ensemble_weights)
        if len(self.weights) not in (2, 4) or min(self.weights) < 0 or not sum(self.weights) > 0:
            from synboost.errors import ConfigError

            raise ConfigError(f"score.ensemble_weights {list(ensemble_weights)}: give 2 weights (dissimilarity, "
                              "entropy) or 4 (dissimilarity, entropy, distance, perceptual), none negative, not all 0")
        self.set_channels_last(self.channels_last)
        if freeze:
            self.freeze()
        if compile:
            self.set_compile()
        from synboost.models.generator import style_encoder_missing

        why = style_encoder_missing(generator) if generator is not None else None
        if why:
            print(f"warning: SynBoost resynthesises each image in its own style, but the generator "
                  f"({type(generator).__name__}) cannot: {why}", file=sys.stderr)

    def _networks(self) -> list[torch.nn.Module]:
        return super()._networks() + [m for m in (getattr(self, "generator", None), getattr(self, "dissim", None),
                                                   getattr(self, "vgg19", None)) if m is not None]

    def _network_groups(self) -> dict[str, list[torch.nn.Module]]:
        groups = super()._network_groups()
        for name, attr in (("generator", "generator"), ("vgg", "vgg19"), ("dissimilarity", "dissim")):
            net = getattr(self, attr, None)
            groups[name] = [net] if isinstance(net, torch.nn.Module) else []
        return groups

    @property
    def methods(self) -> tuple[str, ...]:
        return super().methods + self.EXTRA

    def _maps(self, logits, methods, batch, pebal_logits=None, outputs=None):
        out = super()._maps(logits, [m for m in methods if m not in self.EXTRA], batch, pebal_logits, outputs)
        if not any(m in self.EXTRA for m in methods):
            return out
        image01 = imagenet_denormalize01(batch)
        ent, dist = scores.synboost_entropy(logits), scores.synboost_distance(logits)
        labels, ent, dist, image01 = resize_maps(self.size, logits.argmax(1), (ent, dist), image01)
        regions = {n: (lambda n=n: self._region(n)) for n in ("generator", "vgg")}
        w = self.weights + (0.0,) * (4 - len(self.weights))
        fuse = self.ensemble and "synboost" in methods
        inp = dissimilarity_inputs(image01, labels, self.generator, self.vgg19, ent, dist, self.dissim.priors,
                                   regions, perceptual=fuse and w[3] > 0)
        with self._region("dissimilarity"):
            out_d = self.dissim(inp["image"], inp["synthesis"], inp["onehot"], inp["priors"])
        p = F.softmax(out_d.float(), 1)[:, 1]
        out["dissimilarity"] = p
        if fuse:
            fused = w[0] * p + w[1] * ent
            if w[2]:
                fused = fused + w[2] * dist
            if w[3]:
                fused = fused + w[3] * inp["perceptual"].float()
            out["synboost"] = fused
        else:
            out["synboost"] = p
        return out
