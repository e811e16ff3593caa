"""Per-pixel scores from a segmenter's logits. One place per score; higher always means more anomalous.

All functions take logits (B, C, H, W) and return (B, H, W) float32 maps unless stated.

SynBoost's uncertainty maps, as the official code computes them (``synboost_entropy`` / ``synboost_distance``):
entropy E = -sum_c p_c ln p_c, then per image (E - min E) / max E (the divisor is the max, not max - min);
distance d = p1 - p2 of the softmax, then per image 1 - (d - min d) / max d. The official p * log(p) gives NaN
where a probability underflows to 0; ``safe=True`` (default) uses log-softmax so that never happens, and equals
the official value wherever the official one is finite.

The methods of segmenters re-trained with outlier data (void class, outlier head, Dirichlet) are in
:data:`OUTLIER_SCORES`; they read all outputs of such a model, not only its class logits.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

EPS = 1e-12


def softmax_entropy(logits: torch.Tensor, safe: bool = True) -> torch.Tensor:
    """Shannon entropy (nats) of the softmax over the class axis."""
    logits = logits.float()
    if safe:
        logp = F.log_softmax(logits, dim=1)
        return -(logp.exp() * logp).sum(1)
    p = F.softmax(logits, dim=1)
    return -(p * torch.log(p)).sum(1)  # the official form: NaN where p underflows to 0


def softmax_distance(logits: torch.Tensor) -> torch.Tensor:
    """p1 - p2: the gap between the two largest softmax probabilities (small = uncertain)."""
    top2 = F.softmax(logits.float(), dim=1).topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def _per_image(x: torch.Tensor, fn) -> torch.Tensor:
    flat = x.flatten(1)
    return fn(flat).view_as(x)


def synboost_entropy(logits: torch.Tensor, safe: bool = True) -> torch.Tensor:
    """The official entropy map: (E - min E) / max E per image."""
    e = softmax_entropy(logits, safe)
    return _per_image(e, lambda f: (f - f.min(1, keepdim=True).values) / f.max(1, keepdim=True).values.clamp_min(EPS))


def synboost_distance(logits: torch.Tensor) -> torch.Tensor:
    """The official distance map: 1 - (d - min d) / max d per image (high = uncertain)."""
    d = softmax_distance(logits)
    return _per_image(d, lambda f: 1 - (f - f.min(1, keepdim=True).values)
                      / f.max(1, keepdim=True).values.clamp_min(EPS))


def msp(logits: torch.Tensor) -> torch.Tensor:
    """1 - max softmax probability (Hendrycks & Gimpel)."""
    return 1.0 - F.softmax(logits.float(), dim=1).amax(1)


def max_logit(logits: torch.Tensor) -> torch.Tensor:
    """- max logit (Hendrycks et al., "Scaling OOD detection")."""
    return -logits.float().amax(1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Softmax entropy normalised by ln C (in [0, 1])."""
    return softmax_entropy(logits) / torch.log(torch.tensor(float(logits.shape[1])))


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Free energy -T logsumexp(z / T) (Liu et al. 2020): high for anomalies."""
    return -temperature * torch.logsumexp(logits.float() / temperature, dim=1)


# ------------------------------------------------------------------------------------ standardized max logit


def sml_stats_update(acc: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Accumulate per predicted class (count, sum, sum of squares) of the max logit; ``acc`` is (C, 3) float64."""
    mx, pred = logits.float().max(1)
    c = logits.shape[1]
    pred, mx = pred.flatten(), mx.flatten().double()
    acc[:, 0] += torch.bincount(pred, minlength=c).double()
    acc[:, 1] += torch.zeros(c, dtype=torch.float64, device=mx.device).index_add_(0, pred, mx)
    acc[:, 2] += torch.zeros(c, dtype=torch.float64, device=mx.device).index_add_(0, pred, mx * mx)
    return acc


def sml_stats_finalize(acc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class mean and standard deviation of the max logit (classes never predicted: mean 0, std 1)."""
    n = acc[:, 0].clamp_min(1)
    mean = acc[:, 1] / n
    var = (acc[:, 2] / n - mean**2).clamp_min(0)
    std = torch.where(acc[:, 0] > 1, var.sqrt().clamp_min(1e-6), torch.ones_like(var))
    return mean.float(), std.float()


def label_boundaries(pred: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool: pixels where a 3x3 cross dilation of the label map differs from its 3x3 box erosion."""
    p = F.pad(pred.float().unsqueeze(1), (1, 1, 1, 1), mode="replicate")
    c = p[..., 1:-1, 1:-1]
    dil = torch.stack([c, p[..., :-2, 1:-1], p[..., 2:, 1:-1], p[..., 1:-1, :-2], p[..., 1:-1, 2:]]).amax(0)
    ero = -F.max_pool2d(-p, 3, 1)
    return (dil != ero).squeeze(1)


def boundary_suppression(score: torch.Tensor, pred: torch.Tensor, width: int = 4, iterations: int = 4) -> torch.Tensor:
    """SML's iterative boundary suppression. The class boundaries, widened by a box dilation of radius
    width - 1, width - 2, ... (the last iteration uses the bare boundaries), have each pixel replaced by the mean
    of the non-boundary values in its 3x3 neighbourhood (replicate padding; unchanged where there are none).
    Written from the SML paper and a description of its code, not checked line by line against it."""
    b0 = label_boundaries(pred).unsqueeze(1)
    s = score.unsqueeze(1).float()
    step = max(width // max(iterations, 1), 1)
    for i in range(iterations):
        r = width - step * i - 1
        b = F.max_pool2d(b0.float(), 2 * r + 1, 1, r) > 0 if (i < iterations - 1 and r > 0) else b0
        if not b.any():
            continue
        keep = (~b).float()
        num = F.avg_pool2d(F.pad(s * keep, (1, 1, 1, 1), mode="replicate"), 3, 1)
        den = F.avg_pool2d(F.pad(keep, (1, 1, 1, 1), mode="replicate"), 3, 1)
        s = torch.where(b & (den > 0), num / den.clamp_min(1e-12), s)
    return s.squeeze(1)


def dilated_smoothing(score: torch.Tensor, size: int = 7, sigma: float = 1.0, dilation: int = 6) -> torch.Tensor:
    """Gaussian smoothing with a dilated kernel (SML: 7x7, sigma 1, dilation 6), replicate padding."""
    ax = torch.arange(size, dtype=torch.float32, device=score.device) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    k = (g[:, None] * g[None, :])
    k = (k / k.sum()).view(1, 1, size, size)
    pad = dilation * (size - 1) // 2
    x = F.pad(score.unsqueeze(1), (pad, pad, pad, pad), mode="replicate")
    return F.conv2d(x, k, dilation=dilation).squeeze(1)


def sml(logits: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, suppress: bool = True,
        smooth: bool = True) -> torch.Tensor:
    """Standardized max logit (Jung et al., ICCV 2021): -(max z - mu_c) / sigma_c for the predicted class c,
    then boundary suppression and dilated smoothing (parameters of the paper's code)."""
    mx, pred = logits.float().max(1)
    s = (mx - mean.to(mx.device)[pred]) / std.to(mx.device)[pred]
    if suppress:
        s = boundary_suppression(s, pred)
    if smooth:
        s = dilated_smoothing(s)
    return -s


# ---------------------------------------------------------------------------------------------------- others


def mc_dropout(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, samples: int = 8) -> torch.Tensor:
    """Entropy of the mean softmax over ``samples`` stochastic passes (dropout active) (Gal & Ghahramani)."""
    p = None
    for _ in range(samples):
        q = F.softmax(forward(x).float(), dim=1)
        p = q if p is None else p + q
    p = p / samples
    return -(torch.xlogy(p, p)).sum(1)


def gaussian_blur(score: torch.Tensor, size: int = 7, sigma: float = 1.0) -> torch.Tensor:
    """Gaussian blur of (B, H, W) maps, each image on its own, reflect padding: torchvision's ``GaussianBlur``,
    which PEBAL uses for its abstention payoff and its test-time score."""
    from torchvision.transforms.functional import gaussian_blur as tv_blur

    return tv_blur(score.float().unsqueeze(1), [size, size], [sigma, sigma]).squeeze(1)


def pebal(logits: torch.Tensor, size: int = 7, sigma: float = 1.0) -> torch.Tensor:
    """PEBAL's anomaly score: the free energy of the inlier logits, Gaussian-blurred (7x7, sigma 1). The
    abstention output is not used at test time (a PEBAL model's ``forward`` returns the inlier logits only)."""
    return gaussian_blur(energy(logits), size, sigma)


# ------------------------------------------------------------------------- segmenters re-trained with outliers
# These read all outputs of a segmenter trained by `synboost train outlier` (``model(x, all_outputs=True)``):
# K class logits, plus the void logit or the outlier head's logit as the last channel where there is one.

#: alpha = exp(z) is computed from logits clamped to this (exp(60) ~ 1e26: no overflow in float32)
MAX_LOG_ALPHA = 60.0


def void_probability(outputs: torch.Tensor) -> torch.Tensor:
    """OoD training with a void class: the softmax probability of the extra (last) class over all K + 1 outputs."""
    return F.softmax(outputs.float(), dim=1)[:, -1]


def outlier_head_probability(outputs: torch.Tensor) -> torch.Tensor:
    """Discriminative outlier head (Bevandic et al. 2019): sigmoid of the head's logit (the last channel)."""
    return torch.sigmoid(outputs.float()[:, -1])


def dirichlet_mutual_information(logits: torch.Tensor) -> torch.Tensor:
    """Dirichlet DeepLab (prior network, Malinin & Gales 2018), alpha = exp(z): the mutual information between
    the label and the categorical, i.e. the distributional uncertainty
    MI = -sum_c p_c [ln p_c - psi(alpha_c + 1) + psi(alpha_0 + 1)], p = alpha / alpha_0 (= softmax(z)).

    Not -ln alpha_0 (the other "distributional" measure, low precision): that is -logsumexp(z), exactly the
    free energy of the logits, already the method ``energy``. MI is what the prior network's flat outlier target
    (alpha = 1) makes large, while a confident pixel (high precision) has MI ~ (K - 1) / (2 alpha_0) whatever
    its entropy, so class boundaries (high entropy, high precision) stay low."""
    z = logits.float().clamp(max=MAX_LOG_ALPHA)
    logp = F.log_softmax(z, dim=1)
    alpha = z.exp()
    alpha0 = torch.logsumexp(z, dim=1, keepdim=True).exp()
    mi = -(logp.exp() * (logp - torch.digamma(alpha + 1) + torch.digamma(alpha0 + 1))).sum(1)
    return mi.clamp_min(0.0)  # >= 0 in exact arithmetic; float32 rounding can give -1e-7 at high precision


#: the scores of segmenters re-trained with outlier data, by method name (= the segmenter's outlier_training),
#: each a function of all outputs ``model(x, all_outputs=True)``
OUTLIER_SCORES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "void": void_probability,
    "outlier_head": outlier_head_probability,
    "dirichlet": dirichlet_mutual_information,
}


#: the post-hoc scores computed from logits alone, by name
LOGIT_SCORES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "msp": msp,
    "maxlogit": max_logit,
    "entropy": entropy,
    "energy": energy,
}
