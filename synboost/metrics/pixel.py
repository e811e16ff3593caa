"""Pooled pixel-level anomaly metrics: average precision, AUROC and FPR at 95 % TPR.

Definitions (Fishyscapes ``bdlb.calculate_metrics_perpixAP``, identical to scikit-learn):

* Only pixels labelled 0 (inlier, negative) or 1 (anomaly, positive) count; 255 and every other label are void.
* A higher score means "more anomalous"; a pixel is predicted positive at threshold ``t`` when ``score >= t``.
* Scores are cast to ``float32`` first, like bdlb (pass ``dtype=np.float64`` to keep full precision). The cast can
  create ties; ties between positives and negatives are handled exactly (one operating point per distinct score).
* **AP** = sum_k (R_k - R_{k-1}) P_k over the distinct thresholds, high to low (no interpolation) -- the value of
  ``sklearn.metrics.average_precision_score`` and of bdlb.
* **AUROC** = trapezoidal area under the full ROC starting at (0, 0) -- ``sklearn.metrics.roc_auc_score``.
* **FPR95** = the false-positive rate where the TPR reaches 95 %; codes disagree on the rule (see :data:`FPR_RULES`).

Degenerate data: with no positive pixel AP, AUROC and FPR95 are ``nan``. With no negative pixel AP = 1.0 (every
threshold has precision 1, as in scikit-learn and bdlb) while AUROC and FPR95 are ``nan`` (no FPR exists).

Algorithm (the architecture note): every metric above only needs the curve at the distinct *positive* scores
u_1 > u_2 > ... > u_m, namely TP_j (positives >= u_j), FP_j (negatives >= u_j) and FP'_j (negatives > u_j, the ROC
point just before u_j). The positives are collected and sorted; the negatives are streamed in large chunks, each
chunk sorted (numpy's vectorised sort) and counted against the sorted positives with ``np.searchsorted``. Memory grows
with the positives only; the negatives are never held all at once. (Counting an unsorted chunk with
``searchsorted`` + ``bincount`` gives the same counts but is ~8x slower: random lookups into a multi-megabyte array
miss the cache.)

:class:`StreamingPixelMetrics` is the single-pass alternative: a fine histogram, with rigorous bounds on the error.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from synboost.errors import ConfigError, DataError

FprRule = Literal["first_ge", "first_gt", "closest", "interp"]

#: The FPR95 rules, and the code that uses each. All are evaluated on the full (unthinned) ROC.
FPR_RULES: dict[str, str] = {
    "first_ge": "FPR at the first threshold (scanning from high to low) whose TPR >= 0.95. Fishyscapes bdlb, "
    "SMIYC, SynBoost, EAM/UNO.",
    "first_gt": "FPR at the first threshold whose TPR > 0.95 (strictly), i.e. `fpr[tpr > 0.95][0]`. RbA, "
    "DenseHybrid (they index sklearn's thinned roc_curve, which can only differ when ties make ROC points collinear).",
    "closest": "Hendrycks `fpr_and_fdr_at_recall`: the recall level closest to 0.95 (ties -> the higher recall), "
    "at its lowest threshold (the largest FPR with that recall). PEBAL.",
    "interp": "`ood_metrics.fpr_at_95_tpr`: `np.interp(0.95, tpr, fpr)` on the ROC, i.e. linear interpolation "
    "of the curve at TPR = 0.95 (the right end if a segment lies exactly at 0.95). SML, Mask2Anomaly.",
}

TPR_LEVEL = 0.95
#: Default number of negatives sorted and counted at once (float32: 128 MB); grows with many distinct positives.
CHUNK = 1 << 25

ScoreLabelPairs = Iterable[tuple[ArrayLike, ArrayLike]]
Source = Callable[[], ScoreLabelPairs]
ArraysOrLists = Union[ArrayLike, Sequence[ArrayLike]]


@dataclass(frozen=True)
class PixelMetrics:
    """Pooled pixel metrics. ``fpr95`` follows ``fpr_rule`` (see :data:`FPR_RULES`)."""

    ap: float
    auroc: float
    fpr95: float
    n_pos: int
    n_neg: int
    fpr_rule: str

    def as_dict(self) -> dict[str, object]:
        """Plain-Python dict (floats, ints, strings, lists), ready for JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class BoundedPixelMetrics(PixelMetrics):
    """Histogram estimates plus intervals that provably contain the exact values (up to float rounding, ~1e-15).

    The estimates are the exact metrics of the bin-quantised scores (each bin one tied score level).
    """

    ap_bounds: tuple[float, float]
    auroc_bounds: tuple[float, float]
    fpr95_bounds: tuple[float, float]
    num_bins: int


@dataclass(frozen=True)
class Curves:
    """Thinned curves for plotting: PR points (ascending recall) and ROC points (from (0,0) to (1,1))."""

    recall: np.ndarray
    precision: np.ndarray
    fpr: np.ndarray
    tpr: np.ndarray


def _check_rule(rule: str) -> None:
    if rule not in FPR_RULES:
        raise ConfigError(f"unknown fpr_rule {rule!r}; choose one of {', '.join(FPR_RULES)}")


def _check_dtype(dtype: DTypeLike) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise ConfigError(f"score dtype must be a floating type, got {dt}")
    return dt


@dataclass(frozen=True, eq=False)
class PixelCurve:
    """The operating points at each distinct positive score, highest first -- all the metrics need.

    ``thresholds[j]`` is the j-th highest distinct positive score; ``tp[j]`` / ``fp_ge[j]`` count the positives /
    negatives with ``score >= thresholds[j]`` and ``fp_gt[j]`` the negatives with ``score > thresholds[j]``.
    The full ROC is (0,0), then (fp_gt[j], tp[j-1]) and (fp_ge[j], tp[j]) for each j, then (n_neg, n_pos), scaled.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp_ge: np.ndarray
    fp_gt: np.ndarray
    n_pos: int
    n_neg: int

    def ap(self) -> float:
        """Average precision, sum_k (R_k - R_{k-1}) P_k (= sklearn ``average_precision_score``, bdlb)."""
        if self.n_pos == 0:
            return float("nan")
        precision = self.tp / (self.tp + self.fp_ge)
        recall = self.tp / self.n_pos
        return float(np.sum(np.diff(recall, prepend=0.0) * precision))

    def auroc(self) -> float:
        """Area under the ROC (trapezoid = Mann-Whitney with ties counted 1/2; = sklearn ``roc_auc_score``)."""
        if self.n_pos == 0 or self.n_neg == 0:
            return float("nan")
        count = np.diff(self.tp, prepend=0).astype(np.float64)
        pairs = 2.0 * self.n_neg - self.fp_ge.astype(np.float64) - self.fp_gt.astype(np.float64)
        return float(np.dot(count, pairs) / (2.0 * self.n_pos * self.n_neg))

    def fpr95(self, rule: FprRule = "first_ge") -> float:
        """FPR at 95 % TPR under ``rule`` (see :data:`FPR_RULES`)."""
        _check_rule(rule)
        if self.n_pos == 0 or self.n_neg == 0:
            return float("nan")
        tpr = self.tp / self.n_pos
        if rule == "first_ge":
            return float(self.fp_ge[np.searchsorted(tpr, TPR_LEVEL, side="left")] / self.n_neg)
        if rule == "first_gt":
            return float(self.fp_ge[np.searchsorted(tpr, TPR_LEVEL, side="right")] / self.n_neg)
        if rule == "closest":
            # largest FP at each recall level: just before the next positive score; at full recall the first point
            fp_level = np.append(self.fp_gt[1:], self.fp_ge[-1])
            distance = np.abs(tpr - TPR_LEVEL)
            j = tpr.size - 1 - int(np.argmin(distance[::-1]))  # argmin keeps the first: the higher recall on ties
            return float(fp_level[j] / self.n_neg)
        # interp: segment from the last ROC point with TPR <= 0.95, (fp_gt[j], tp[j-1]), to (fp_ge[j], tp[j])
        j = int(np.searchsorted(tpr, TPR_LEVEL, side="right"))
        x0 = tpr[j - 1] if j > 0 else 0.0
        y0 = self.fp_gt[j] / self.n_neg
        if x0 == TPR_LEVEL:
            return float(y0)
        slope = (self.fp_ge[j] / self.n_neg - y0) / (tpr[j] - x0)
        return float(slope * (TPR_LEVEL - x0) + y0)

    def metrics(self, fpr_rule: FprRule = "first_ge") -> PixelMetrics:
        """AP, AUROC and FPR95 (``fpr_rule``) of this curve."""
        return PixelMetrics(self.ap(), self.auroc(), self.fpr95(fpr_rule), self.n_pos, self.n_neg, fpr_rule)

    def best_f1_threshold(self) -> tuple[float, float]:
        """The pixel-level best-F1 operating point, as ``(threshold, f1)`` with prediction rule ``score > threshold``.

        F1 = 2TP / (2TP + FP + FN) is maximal at one of the distinct positive scores u (ties: the highest); the
        returned threshold is the next representable value below u in the score dtype, so ``score > threshold``
        selects exactly ``score >= u`` (the SMIYC component metrics binarise with ``>``). ``(nan, nan)`` if no
        positives.
        """
        if self.n_pos == 0:
            return float("nan"), float("nan")
        f1 = 2.0 * self.tp / (self.tp + self.fp_ge + self.n_pos)
        j = int(np.argmax(f1))
        u = self.thresholds[j]
        return float(np.nextafter(u, np.array(-np.inf, dtype=u.dtype))), float(f1[j])

    def curves(self, max_points: int = 2000) -> Curves:
        """PR and ROC curves thinned to at most ``max_points`` points each (grid in both axes + uniform in index)."""
        if self.n_pos == 0:
            empty = np.empty(0)
            return Curves(empty, empty, empty, empty)
        recall = self.tp / self.n_pos
        precision = self.tp / (self.tp + self.fp_ge)
        keep = _thin([recall], recall.size, max_points)
        n_neg = max(self.n_neg, 1)
        fp = np.concatenate([[0], np.stack([self.fp_gt, self.fp_ge], 1).ravel(), [self.n_neg]]) / n_neg
        tp = np.concatenate([[0], np.stack([np.append(0, self.tp[:-1]), self.tp], 1).ravel(), [self.n_pos]])
        tp = tp / self.n_pos
        roc = _thin([fp, tp], fp.size, max_points)
        return Curves(recall[keep], precision[keep], fp[roc], tp[roc])


def _thin(monotone: list[np.ndarray], n: int, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` points: where each non-decreasing array crosses a regular grid, a uniform
    sample of the indices, and both ends."""
    if n <= max_points:
        return np.arange(n)
    per = max(2, (max_points - 2) // (len(monotone) + 1))
    parts = [np.linspace(0, n - 1, per).astype(np.int64), np.array([0, n - 1])]
    for a in monotone:
        lo, hi = a[0], a[-1]
        grid = np.linspace(lo, hi, per)
        parts.append(np.minimum(np.searchsorted(a, grid), n - 1))
    return np.unique(np.concatenate(parts))


# ---------------------------------------------------------------------------------------------------------------------
# exact computation


def _flat_pair(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores)
    lab = np.asarray(labels)
    if s.shape != lab.shape:
        raise DataError(f"scores shape {s.shape} differs from labels shape {lab.shape}")
    if s.dtype.kind not in "fiub":
        raise DataError(f"scores must be numeric, got dtype {s.dtype}")
    return s.reshape(-1), lab.reshape(-1)


def _chunks(pairs: ScoreLabelPairs) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Flat ``(scores, labels)`` slices of at most ``CHUNK`` pixels (views where possible)."""
    for scores, labels in pairs:
        s, lab = _flat_pair(scores, labels)
        for i in range(0, s.size, CHUNK):
            yield s[i : i + CHUNK], lab[i : i + CHUNK]


def _as_pairs(scores: ArraysOrLists, labels: ArraysOrLists) -> list[tuple[ArrayLike, ArrayLike]]:
    """One pair for two arrays, or the zipped per-image pairs for two sequences of arrays."""
    if isinstance(scores, (list, tuple)) or isinstance(labels, (list, tuple)):
        if not isinstance(scores, (list, tuple)) or not isinstance(labels, (list, tuple)):
            raise DataError("pass scores and labels both as arrays or both as lists of per-image arrays")
        if len(scores) != len(labels):
            raise DataError(f"{len(scores)} score maps but {len(labels)} label maps")
        return list(zip(scores, labels))
    return [(scores, labels)]


def _no_nan(sorted_values: np.ndarray, what: str) -> None:
    if sorted_values.size and np.isnan(sorted_values[-1]):  # sort and unique put NaN last
        raise DataError(f"{what} scores contain NaN at labelled pixels; fix the score maps")


class _NegativeCounter:
    """Counts streamed negatives against sorted distinct positive scores ``u`` (ascending).

    ``ge[i]`` / ``gt[i]`` = number of negatives ``>= u[i]`` / ``> u[i]``. Negatives are buffered to ``flush_size``,
    then sorted and located with one ``searchsorted`` of ``u`` (plus one more for the few exact ties).
    """

    def __init__(self, u: np.ndarray) -> None:
        self.u = u
        self.ge = np.zeros(u.size, dtype=np.int64)
        self.gt = np.zeros(u.size, dtype=np.int64)
        self.n = 0
        self.flush_size = int(np.clip(4 * u.size, CHUNK // 2, 2 * CHUNK))
        self._buffer: list[np.ndarray] = []
        self._buffered = 0

    def add(self, negatives: np.ndarray) -> None:
        self._buffer.append(negatives)
        self._buffered += negatives.size
        if self._buffered >= self.flush_size:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        x = self._buffer[0] if len(self._buffer) == 1 else np.concatenate(self._buffer)
        self._buffer, self._buffered = [], 0
        x.sort()
        _no_nan(x, "negative")
        n = x.size
        self.n += n
        if self.u.size == 0 or n == 0:
            return
        left = np.searchsorted(x, self.u, side="left")
        self.ge += n - left
        tied = left < n
        tied[tied] = x[left[tied]] == self.u[tied]
        above = n - left
        if tied.any():
            above[tied] = n - np.searchsorted(x, self.u[tied], side="right")
        self.gt += above


def _negatives(s: np.ndarray, lab: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The negatives of a chunk as a fresh array of ``dtype`` (safe to sort in place)."""
    neg = s[lab == 0]
    return neg.astype(dtype, copy=neg.dtype != dtype)


def pixel_curve_two_pass(source: Source, *, dtype: DTypeLike = np.float32) -> PixelCurve:
    """Exact :class:`PixelCurve` from ``source()``, a callable returning a fresh iterable of ``(scores, labels)``.

    ``source`` is called twice: pass 1 keeps the positives' scores, pass 2 streams the negatives. Memory grows with
    the number of positive pixels only, so this works over folders of saved score maps of any size.
    """
    dt = _check_dtype(dtype)
    positives = [s[lab == 1].astype(dt) for s, lab in _chunks(source())]
    all_pos = np.concatenate(positives) if positives else np.empty(0, dtype=dt)
    del positives
    u, counts = np.unique(all_pos, return_counts=True)
    del all_pos
    _no_nan(u, "positive")
    counter = _NegativeCounter(u)
    for s, lab in _chunks(source()):
        counter.add(_negatives(s, lab, dt))
    counter.flush()
    tp = np.cumsum(counts[::-1], dtype=np.int64)
    n_pos = int(tp[-1]) if tp.size else 0
    return PixelCurve(u[::-1].copy(), tp, counter.ge[::-1].copy(), counter.gt[::-1].copy(), n_pos, counter.n)


def pixel_curve(scores: ArraysOrLists, labels: ArraysOrLists, *, dtype: DTypeLike = np.float32) -> PixelCurve:
    """Exact :class:`PixelCurve` of in-memory data: two arrays of any (equal) shape, or two lists of per-image arrays."""
    pairs = _as_pairs(scores, labels)
    return pixel_curve_two_pass(lambda: pairs, dtype=dtype)


def pixel_metrics(
    scores: ArraysOrLists,
    labels: ArraysOrLists,
    *,
    fpr_rule: FprRule = "first_ge",
    dtype: DTypeLike = np.float32,
) -> PixelMetrics:
    """Exact pooled AP, AUROC and FPR95 of in-memory data (arrays of any shape, or lists of per-image arrays).

    Equal to bdlb / scikit-learn on the same (``dtype``-cast) scores; see the module docstring for definitions.
    """
    _check_rule(fpr_rule)
    return pixel_curve(scores, labels, dtype=dtype).metrics(fpr_rule)


def pixel_metrics_two_pass(
    source: Source, *, fpr_rule: FprRule = "first_ge", dtype: DTypeLike = np.float32
) -> PixelMetrics:
    """Exact pooled metrics over ``source()`` (called twice; see :func:`pixel_curve_two_pass`)."""
    _check_rule(fpr_rule)
    return pixel_curve_two_pass(source, dtype=dtype).metrics(fpr_rule)


# ---------------------------------------------------------------------------------------------------------------------
# streaming histogram with bounds

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
