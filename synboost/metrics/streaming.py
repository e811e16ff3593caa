"""Single-pass pixel metrics: a fine histogram, accumulated image by image (and mergeable across processes),
with rigorous bounds around the exact values of :mod:`synboost.metrics.pixel`.

Within one bin the order of positives and negatives is unknown, so the metrics are computed under the two extreme
within-bin orderings; the exact value provably lies between them (see the functions' docstrings).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from synboost.errors import ConfigError, DataError
from synboost.metrics.pixel import (
    TPR_LEVEL,
    Curves,
    FprRule,
    PixelCurve,
    PixelMetrics,
    _check_dtype,
    _check_rule,
    _flat_pair,
)


@dataclass(frozen=True)
class BoundedPixelMetrics(PixelMetrics):
    """Histogram estimates plus intervals that provably contain the exact values (up to float rounding, ~1e-15).

    The estimates are the exact metrics of the bin-quantised scores (each bin one tied score level).
    """

    ap_bounds: tuple[float, float]
    auroc_bounds: tuple[float, float]
    fpr95_bounds: tuple[float, float]
    num_bins: int


_H_SMALL = 64
_H_TABLE = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, _H_SMALL + 1))])  # H(0) .. H(64), exact sums
_EULER_GAMMA = 0.5772156649015329


def _harmonic(n: np.ndarray) -> np.ndarray:
    """Harmonic numbers H(n) for integer-valued float64 ``n >= 0``: table below 65, else the asymptotic series
    (truncation error < 1/(240 n^8))."""
    out = np.empty(n.shape)
    small = n <= _H_SMALL
    out[small] = _H_TABLE[n[small].astype(np.int64)]
    x = n[~small]
    inv2 = 1.0 / (x * x)
    out[~small] = np.log(x) + _EULER_GAMMA + 0.5 / x - inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 / 252))
    return out


def _harmonic_diff(k: np.ndarray, c: np.ndarray) -> np.ndarray:
    """H(k + c) - H(k) = sum_{i=1..c} 1/(k + i): the difference of the asymptotic series term by term (no
    cancellation) for ``k > 64`` (error < 1/(240 k^8)), the table otherwise."""
    n = k + c
    out = np.empty(k.shape)
    big = k > _H_SMALL
    kb, cb, nb = k[big], c[big], n[big]
    out[big] = (
        np.log1p(cb / kb)
        - cb / (2 * nb * kb)
        + cb * (nb + kb) / (12 * nb**2 * kb**2)
        - cb * (nb + kb) * (nb**2 + kb**2) / (120 * nb**4 * kb**4)
        + cb * (nb + kb) * (nb**2 + nb * kb + kb**2) * (nb**2 - nb * kb + kb**2) / (252 * nb**6 * kb**6)
    )
    out[~big] = _harmonic(n[~big]) - _H_TABLE[k[~big].astype(np.int64)]
    return out


def _float_keys(s: np.ndarray) -> np.ndarray:
    """Order-preserving unsigned-integer keys of float32/float64 values (-0.0 must already be +0.0)."""
    bits = s.dtype.itemsize * 8
    u = s.view(np.uint32 if bits == 32 else np.uint64)
    top = 1 << (bits - 1)
    return u ^ ((u >> (bits - 1)) * (top - 1) | top)


def _keys_to_float(keys: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`_float_keys`."""
    top = 1 << (dtype.itemsize * 8 - 1)
    return np.where(keys < top, ~keys, keys ^ top).view(dtype)


class StreamingPixelMetrics:
    """Single-pass pooled metrics from a fine two-class histogram, with rigorous error bounds.

    Binning is either uniform over ``score_range=(lo, hi)`` (scores outside are clipped into the end bins, which
    keeps the bounds valid but loosens them), or -- with no range, for energies and logits -- by the top
    ``log2(num_bins)`` bits of the order-preserving integer key of the ``dtype``-cast score (``num_bins`` must then
    be a power of two; resolution is relative: 2**20 bins on float32 give ~11 mantissa bits per binade).

    Memory: two int64 counts per bin (16 MB at 2**20). ``merge`` adds another accumulator of the same configuration
    (sharded or multi-process runs). ``compute`` returns the exact metrics of the bin-quantised scores plus bounds:
    within a bin the order of positives and negatives is unknown, so each metric is also computed for the two extreme
    within-bin arrangements, and every real arrangement (ties included) lies between them:

    * AP upper: the bin's positives tied, above its negatives; AP lower: its negatives first, then its positives at
      distinct scores (each positive's precision is bounded by these two; the sum uses harmonic numbers).
    * AUROC: within-bin positive/negative pairs all counted 1 (upper) or 0 (lower).
    * FPR95 ``first_ge`` / ``first_gt`` / ``interp``: positives-first (lower) and negatives-first (upper) ROCs, which
      bound every ROC path inside each bin's box. ``closest``: the chosen recall level can only move between the
      two bin-boundary levels around 0.95, which bounds the FPR by the negatives counts around those bins.
    """

    def __init__(
        self,
        num_bins: int = 1 << 20,
        score_range: tuple[float, float] | None = None,
        *,
        fpr_rule: FprRule = "first_ge",
        dtype: DTypeLike = np.float32,
    ) -> None:
        _check_rule(fpr_rule)
        self.dtype = _check_dtype(dtype)
        if num_bins < 1:
            raise ConfigError(f"num_bins must be >= 1, got {num_bins}")
        if score_range is None:
            width = self.dtype.itemsize * 8
            self._shift = width - (num_bins.bit_length() - 1)
            if num_bins & (num_bins - 1) or self._shift < 0:
                raise ConfigError(f"without score_range, num_bins must be a power of two <= 2**{width}")
        else:
            lo, hi = (float(v) for v in score_range)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ConfigError(f"score_range must be finite with lo < hi, got {score_range}")
            score_range = (lo, hi)
        self.num_bins = int(num_bins)
        self.score_range = score_range
        self.fpr_rule: FprRule = fpr_rule
        self._counts = np.zeros(2 * self.num_bins, dtype=np.int64)  # [2b] negatives, [2b + 1] positives of bin b

    def _bins(self, s: np.ndarray) -> np.ndarray:
        """Bin index of each score: a non-decreasing function of the ``dtype`` value."""
        if self.score_range is None:
            return (_float_keys(s) >> self._shift).astype(np.intp)
        lo, hi = self.score_range
        scaled = (s.astype(np.float64) - lo) * (self.num_bins / (hi - lo))
        return np.clip(np.floor(scaled), 0, self.num_bins - 1).astype(np.intp)

    def update(self, scores: ArrayLike, labels: ArrayLike) -> None:
        """Add one image (or any batch) of scores and labels (same shape; labels 0/1 count, others are void)."""
        s, lab = _flat_pair(scores, labels)
        positive = lab == 1
        valid = positive | (lab == 0)
        s = s[valid].astype(self.dtype) + self.dtype.type(0)  # the +0 turns -0.0 into +0.0 (they compare equal)
        if np.isnan(s).any():
            raise DataError("scores contain NaN at labelled pixels; fix the score maps")
        index = 2 * self._bins(s) + positive[valid]
        if 16 * index.size < self._counts.size:  # small input: skip the full-size bincount temporary
            np.add.at(self._counts, index, 1)
        else:
            self._counts += np.bincount(index, minlength=2 * self.num_bins)

    def merge(self, other: StreamingPixelMetrics) -> StreamingPixelMetrics:
        """Add the counts of ``other`` (same bins, range and dtype) into this accumulator; returns ``self``."""
        same = (other.num_bins, other.score_range, other.dtype) == (self.num_bins, self.score_range, self.dtype)
        if not same:
            raise ConfigError("cannot merge StreamingPixelMetrics with different num_bins, score_range or dtype")
        self._counts += other._counts
        return self

    def _bin_lower_edges(self, bins: np.ndarray) -> np.ndarray:
        if self.score_range is None:
            keys = bins.astype(np.uint64 if self.dtype.itemsize == 8 else np.uint32)
            return _keys_to_float(keys << self._shift, self.dtype)
        lo, hi = self.score_range
        return (lo + bins * ((hi - lo) / self.num_bins)).astype(self.dtype)

    def _per_bin(self) -> tuple[np.ndarray, ...]:
        """For the bins holding positives, highest first: bin index, positives in the bin, positives above,
        negatives above (``> bin``) and negatives at or above (``>= bin``)."""
        neg = self._counts[0::2][::-1]
        pos = self._counts[1::2][::-1]
        neg_ge = np.cumsum(neg)
        pos_ge = np.cumsum(pos)
        has = np.flatnonzero(pos)
        bins = self.num_bins - 1 - has
        return bins, pos[has], pos_ge[has] - pos[has], neg_ge[has] - neg[has], neg_ge[has]

    def curve(self) -> PixelCurve:
        """The exact curve of the bin-quantised scores; thresholds are bin lower edges (exact in key mode)."""
        bins, count, pos_above, neg_gt, neg_ge = self._per_bin()
        n_pos, n_neg = int(self._counts[1::2].sum()), int(self._counts[0::2].sum())
        return PixelCurve(self._bin_lower_edges(bins), pos_above + count, neg_ge, neg_gt, n_pos, n_neg)

    def curves(self, max_points: int = 2000) -> Curves:
        """Thinned PR and ROC curves of the bin-quantised scores (for plotting)."""
        return self.curve().curves(max_points)

    def compute(self) -> BoundedPixelMetrics:
        """Estimates (exact metrics of the quantised scores) and bounds on the exact metrics of the real scores."""
        tied = self.curve()
        _, count, pos_above, neg_gt, neg_ge = self._per_bin()
        n_pos, n_neg = tied.n_pos, tied.n_neg
        pos_first = dataclasses.replace(tied, fp_ge=neg_gt)
        neg_first = dataclasses.replace(tied, fp_gt=neg_ge)
        nan2 = (float("nan"), float("nan"))
        if n_pos == 0:
            ap_bounds = auroc_bounds = fpr_bounds = nan2
        else:
            ap_bounds = (_ap_negatives_first(count, pos_above, neg_ge, n_pos), pos_first.ap())
            auroc_bounds = (neg_first.auroc(), pos_first.auroc())
            if n_neg == 0:
                fpr_bounds = nan2
            elif self.fpr_rule == "closest":
                fpr_bounds = _closest_fpr_bounds(tied.tp, neg_gt, neg_ge, n_pos, n_neg)
            else:
                fpr_bounds = (pos_first.fpr95(self.fpr_rule), neg_first.fpr95(self.fpr_rule))
        m = tied.metrics(self.fpr_rule)
        return BoundedPixelMetrics(
            m.ap, m.auroc, m.fpr95, n_pos, n_neg, self.fpr_rule, ap_bounds, auroc_bounds, fpr_bounds, self.num_bins
        )


def _ap_negatives_first(count: np.ndarray, pos_above: np.ndarray, neg_ge: np.ndarray, n_pos: int) -> float:
    """AP lower bound: in each bin the negatives come first, then the positives at distinct scores, so the i-th
    positive of a bin has precision (A + i) / (A + i + D) with A positives above the bin and D negatives at or above
    it. sum_{i=1..c} (A+i)/(A+i+D) = c - D (H(A+D+c) - H(A+D))."""
    c = count.astype(np.float64)
    d = neg_ge.astype(np.float64)
    k = pos_above.astype(np.float64) + d
    per_bin = c - d * _harmonic_diff(k, c)
    return float(per_bin.sum() / n_pos)


def _closest_fpr_bounds(
    tp: np.ndarray, neg_gt: np.ndarray, neg_ge: np.ndarray, n_pos: int, n_neg: int
) -> tuple[float, float]:
    """Bounds for the ``closest`` rule. With boundary recall levels L_a < 0.95 <= L_b (the positives above bin b, and
    at or above it), the chosen level lies in [L_a, L_b]: at L_a or inside bin b the FPR is within bin b's
    negatives range; at L_b (only if it is at least as close as L_a) within the next positive bin's range, or within
    bin b's if L_b is full recall (then the rule takes the first point reaching it)."""
    tpr = tp / n_pos
    b = int(np.searchsorted(tpr, TPR_LEVEL, side="left"))
    nxt = min(b + 1, tpr.size - 1)
    low_level = tpr[b - 1] if b > 0 else 0.0
    if tpr[b] == TPR_LEVEL:
        lo, hi = neg_gt[nxt], neg_ge[nxt]
    elif abs(tpr[b] - TPR_LEVEL) <= abs(low_level - TPR_LEVEL):
        lo, hi = neg_gt[b], neg_ge[nxt]
    else:
        lo, hi = neg_gt[b], neg_ge[b]
    return float(lo / n_neg), float(hi / n_neg)
