"""Losses of the segmenters re-trained with outlier data (``synboost train outlier``).

Labels as everywhere: 0..K-1 the classes, ``OUTLIER`` (254) the outlier pixels (pasted objects, and void pixels
where the data marks them so), ``IGNORE`` (255) void. Every loss returns (total, parts for logging); a part over
no pixels (a batch without outliers) contributes 0, never NaN.

* :func:`void_loss` (OoD training with a void class): cross-entropy over all K + 1 outputs, outlier pixels
  labelled K (the extra class), one mean over every labelled pixel.
* :func:`outlier_head_loss` (Bevandic et al. 2019): the segmentation cross-entropy over the inlier pixels (outlier
  pixels ignored there) + ``head_weight`` x the binary cross-entropy of the head's logit over every labelled pixel
  (target 1 on outliers, 0 on inliers).
* :func:`dirichlet_loss` (prior network, Malinin & Gales 2018): alpha = exp(z);
  mean KL(target || Dir(alpha)) over inlier pixels + ``outlier_weight`` x the mean over outlier pixels. Inlier
  target: precision alpha_0 = ``precision``, mean ``smoothing`` on every other class and 1 - (K - 1) x
  ``smoothing`` on the labelled one (K = 19, 100, 0.01: alpha = 1 on the other classes, 82 on the labelled one);
  outlier target: the flat Dirichlet, alpha = 1 everywhere. This is the forward KL of the 2018 paper (the 2019
  reverse-KL variant is not implemented).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from synboost.data.anomalies import OUTLIER
from synboost.data.labels import IGNORE
from synboost.scores import MAX_LOG_ALPHA


def _mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x[mask].mean() if mask.any() else x.sum() * 0.0


def void_loss(outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """``outputs`` (B, K+1, H, W) with the void class last, ``target`` (B, H, W)."""
    k = outputs.shape[1] - 1
    t = torch.where(target == OUTLIER, torch.full_like(target, k), target)
    loss = F.cross_entropy(outputs.float(), t, ignore_index=IGNORE)
    return loss, {"ce": float(loss.detach())}


def outlier_head_loss(outputs: torch.Tensor, target: torch.Tensor, head_weight: float = 1.0
                      ) -> tuple[torch.Tensor, dict]:
    """``outputs`` (B, K+1, H, W): K class logits and the head's logit last; ``target`` (B, H, W)."""
    outputs = outputs.float()
    logits, head = outputs[:, :-1], outputs[:, -1]
    out = target == OUTLIER
    valid = target != IGNORE
    seg_t = torch.where(out, torch.full_like(target, IGNORE), target)
    ce = F.cross_entropy(logits, seg_t, ignore_index=IGNORE) if (valid & ~out).any() else logits.sum() * 0.0
    bce = _mean(F.binary_cross_entropy_with_logits(head, out.float(), reduction="none"), valid)
    return ce + head_weight * bce, {"ce": float(ce.detach()), "bce": float(bce.detach())}


def dirichlet_kl(target_alpha: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(Dir(target_alpha) || Dir(exp(logits))) per pixel: (B, K, H, W) each -> (B, H, W).

    KL = ln G(a_0) - sum ln G(a_c) - ln G(b_0) + sum ln G(b_c) + sum (a_c - b_c)(psi(a_c) - psi(a_0)),
    a = target, b = exp(z). ln G(b) is computed as ln G(b + 1) - ln b, so that a tiny b (very negative z)
    neither loses precision nor gives NaN gradients; logits are clamped above at ``MAX_LOG_ALPHA``."""
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    z = z.clamp(max=MAX_LOG_ALPHA)
    a = target_alpha.to(z.dtype)
    b = z.exp()
    log_b0 = torch.logsumexp(z, dim=1)
    lg_b = torch.lgamma(b + 1) - z
    lg_b0 = torch.lgamma(log_b0.exp() + 1) - log_b0
    a0 = a.sum(1)
    dig = torch.digamma(a) - torch.digamma(a0).unsqueeze(1)
    return (torch.lgamma(a0) - torch.lgamma(a).sum(1) - lg_b0 + lg_b.sum(1) + ((a - b) * dig).sum(1))


def dirichlet_targets(target: torch.Tensor, num_classes: int, precision: float = 100.0, smoothing: float = 0.01
                      ) -> torch.Tensor:
    """Target concentrations (B, K, H, W) for labels (B, H, W): inlier pixels precision x smoothed one-hot,
    outlier (and ignored) pixels all ones (the flat Dirichlet; ignored pixels are masked out by the loss)."""
    if not 0 <= smoothing * (num_classes - 1) < 1:
        raise ValueError(f"smoothing {smoothing} leaves no mass for the labelled class with {num_classes} classes")
    inlier = (target >= 0) & (target < num_classes)
    idx = torch.where(inlier, target, torch.zeros_like(target))
    mean = torch.full((target.shape[0], num_classes, *target.shape[1:]), smoothing, dtype=torch.float32,
                      device=target.device)
    mean.scatter_(1, idx.unsqueeze(1), 1.0 - (num_classes - 1) * smoothing)
    return torch.where(inlier.unsqueeze(1), precision * mean, torch.ones_like(mean))


def dirichlet_loss(logits: torch.Tensor, target: torch.Tensor, precision: float = 100.0, smoothing: float = 0.01,
                   outlier_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """``logits`` (B, K, H, W) (alpha = exp), ``target`` (B, H, W): mean KL of the inlier pixels +
    ``outlier_weight`` x mean KL of the outlier pixels."""
    k = logits.shape[1]
    kl = dirichlet_kl(dirichlet_targets(target, k, precision, smoothing).to(logits.device), logits)
    inl = (target >= 0) & (target < k)
    out = target == OUTLIER
    kl_in, kl_out = _mean(kl, inl), _mean(kl, out)
    return kl_in + outlier_weight * kl_out, {"kl_in": float(kl_in.detach()), "kl_out": float(kl_out.detach())}
