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

:class:`synboost.metrics.streaming.StreamingPixelMetrics` is the single-pass alternative: a fine histogram, with
rigorous bounds on the error.
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
    """Exact :class:`PixelCurve` of in-memory data: two arrays of any (equal) shape, or two lists of per-image
    arrays."""
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
