"""PEBAL's training losses (Tian et al., ECCV 2022), as the official code computes them.

Notation per pixel: logits z_1..z_K of the K inlier classes and z_{K+1}, the abstention class; p = softmax over
all K + 1; the free energy of the inliers E = -T logsumexp(z_1..z_K / T) (high = anomalous). Labels: 0..K-1 the
classes, ``OUTLIER`` (254) the pasted outlier pixels, ``IGNORE`` (255) void.

* :func:`abstention_payoff`  a = GaussBlur_{7x7, sigma 1}(E^2), per image, not detached;
* :func:`pal_loss`          the pixel-wise abstention (gambler) loss, one sub-batch at a time:
  inliers  -mean log(p_y + p_a / a);  outliers  -0.1 mean_{pixel, k} log(max(p_k + p_a / a, 1e-7));
* :func:`energy_margin_loss` the energy hinge  mean ReLU(E_in - m_in)^2  (+ mean ReLU(m_out - E_out)^2, halved);
* :func:`smoothness` / :func:`sparsity`  the regularisers on the energy map;
* :func:`pebal_loss`        the total: PAL on the images without outliers + PAL on the images with outliers
  + 0.1 x (energy margin + regularisers), and its parts for logging.

Where the official code departs from the paper, the default (``form="code"``) follows the code:

* the regulariser weights (3e-6 smoothness, 5e-4 sparsity) sit inside the 0.1-weighted energy term, so their
  effective weights are 3e-7 and 5e-5; the sparsity term is the L2 norm of the vector of outlier energies; the
  smoothness term is a *sum* of squared down/right differences over every pixel of the batch (void included),
  halved.
* ``form="paper"`` applies the two weights to the total directly and uses the L1 norm (sum of |E|) of the outlier
  energies as the sparsity term. This form is written from the design notes' recollection of the paper, which was
  not checked against the PDF here; treat it as an option for ablations, not as the reference.

The official code has two more traps that are fixed here: a batch made only of outlier images (or only of clean
ones) made one of its two PAL terms the mean of an empty tensor (NaN); here an empty part contributes 0. The
payoff falls back to the constant 4.5 only for an empty sub-batch, as in the code.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from synboost.data.labels import IGNORE
from synboost.scores import energy as free_energy
from synboost.scores import gaussian_blur

OUTLIER = 254  #: label of pasted outlier pixels (AnomalyMix)


@dataclass
class PebalWeights:
    """The constants of the official code (see the module docstring for ``form``)."""

    m_in: float = -12.0  #: inlier energies are pushed below this margin
    m_out: float = -6.0  #: outlier energies are pushed above this margin
    temperature: float = 1.0
    ood_reg: float = 0.1  #: weight of the outlier term of the PAL loss
    energy_weight: float = 0.1  #: weight of the energy term (margin + regularisers) in the total
    smooth_weight: float = 3e-6
    sparsity_weight: float = 5e-4
    blur_kernel: int = 7
    blur_sigma: float = 1.0
    fallback_payoff: float = 4.5
    form: str = "code"  #: code | paper


def inlier_energy(logits: torch.Tensor, num_classes: int, temperature: float = 1.0) -> torch.Tensor:
    """(B, H, W) free energy of the first ``num_classes`` logits: -T logsumexp(z / T)."""
    return free_energy(logits[:, :num_classes], temperature)


def abstention_payoff(logits: torch.Tensor, num_classes: int, w: PebalWeights = PebalWeights()) -> torch.Tensor:
    """a = blurred E^2 (B, H, W), where E uses temperature 1 as in the code; gradients flow through it."""
    e2 = torch.logsumexp(logits[:, :num_classes].float(), dim=1).pow(2)
    if e2.numel() == 0:
        return torch.full_like(e2, w.fallback_payoff)
    return gaussian_blur(e2, w.blur_kernel, w.blur_sigma)


def pal_loss(logits: torch.Tensor, target: torch.Tensor, with_outliers: bool,
             w: PebalWeights = PebalWeights()) -> torch.Tensor:
    """The pixel-wise abstention loss of one sub-batch (``logits`` (B, K+1, H, W), ``target`` (B, H, W)).

    ``with_outliers=False``: the images hold no outlier pixel; -mean over non-void pixels of log(p_y + p_a / a).
    ``with_outliers=True``: the inlier term over pixels that are neither void nor outlier, plus ``ood_reg`` times
    the mean over (outlier pixel, inlier class) pairs of log(max(p_k + p_a / a, 1e-7)), negated. Means are pooled
    over the pixels of the whole sub-batch. An empty sub-batch or part gives 0.
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    k = logits.shape[1] - 1
    p = F.softmax(logits.float(), dim=1)
    boost = p[:, k] / abstention_payoff(logits, k, w)  # p_a / a
    outlier = target == OUTLIER
    inlier = (target != IGNORE) & ~outlier
    y = torch.where(inlier, target, torch.zeros_like(target)).long()
    p_y = p[:, :k].gather(1, y.unsqueeze(1)).squeeze(1)
    loss = -_mean_or_zero(torch.log(p_y + boost)[inlier])
    if with_outliers and outlier.any():
        out = (p[:, :k] + boost.unsqueeze(1)).permute(0, 2, 3, 1)[outlier]  # (n_out, K)
        loss = loss - w.ood_reg * out.clamp_min(1e-7).log().mean()
    return loss


def smoothness(energy: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of squared forward differences of the energy map down and right (the last row and
    column differ by 0), halved."""
    dy = energy[:, 1:, :] - energy[:, :-1, :]
    dx = energy[:, :, 1:] - energy[:, :, :-1]
    return (dy.pow(2).sum() + dx.pow(2).sum()) / 2


def sparsity(outlier_energy: torch.Tensor, form: str = "code") -> torch.Tensor:
    """The code's L2 norm of the outlier energies, or (``form="paper"``) their L1 norm."""
    return outlier_energy.abs().sum() if form == "paper" else torch.linalg.vector_norm(outlier_energy)


def energy_margin_loss(energy: torch.Tensor, target: torch.Tensor, w: PebalWeights = PebalWeights()) -> torch.Tensor:
    """Squared hinges on the energy: mean ReLU(E_in - m_in)^2 over inlier pixels; with outlier pixels in the
    batch, the average of that and mean ReLU(m_out - E_out)^2 over outlier pixels."""
    outlier = target == OUTLIER
    inlier = (target != IGNORE) & ~outlier
    e_in = F.relu(energy[inlier] - w.m_in).pow(2)
    if not outlier.any():
        return _mean_or_zero(e_in)
    e_out = F.relu(w.m_out - energy[outlier]).pow(2)
    return 0.5 * (_mean_or_zero(e_in) + e_out.mean())


def pebal_loss(logits: torch.Tensor, target: torch.Tensor,
               w: PebalWeights = PebalWeights()) -> tuple[torch.Tensor, dict]:
    """(total, parts) for a batch: logits (B, K+1, H, W) with the abstention class last, target (B, H, W).

    Images with at least one outlier pixel go to the outlier form of the PAL loss, the others to the inlier
    form; the energy terms see the whole batch."""
    k = logits.shape[1] - 1
    has_out = (target == OUTLIER).flatten(1).any(1)
    pal_in = pal_loss(logits[~has_out], target[~has_out], False, w)
    pal_mix = pal_loss(logits[has_out], target[has_out], True, w)
    energy = inlier_energy(logits, k, w.temperature)
    margin = energy_margin_loss(energy, target, w)
    e_out = energy[target == OUTLIER]
    smooth, sparse = smoothness(energy), (sparsity(e_out, w.form) if e_out.numel() else energy.sum() * 0.0)
    if w.form == "paper":
        total = pal_in + pal_mix + w.energy_weight * margin + w.smooth_weight * smooth + w.sparsity_weight * sparse
    else:
        total = pal_in + pal_mix + w.energy_weight * (margin + w.smooth_weight * smooth + w.sparsity_weight * sparse)
    parts = {"pal_in": pal_in.detach(), "pal_mix": pal_mix.detach(), "energy_margin": margin.detach(),
             "smoothness": smooth.detach(), "sparsity": sparse.detach()}
    return total, parts


def _mean_or_zero(x: torch.Tensor) -> torch.Tensor:
    return x.mean() if x.numel() else x.sum() * 0.0
