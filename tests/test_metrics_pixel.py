"""Pixel metrics: exact AP / AUROC / FPR95 against scikit-learn and hand-computed values, the FPR95 rules against
small independent references, the two-pass and streaming paths, and the streaming error bounds."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from synboost.errors import ConfigError, DataError
from synboost.metrics import pixel, streaming
from synboost.metrics.pixel import (
    FPR_RULES,
    pixel_curve,
    pixel_metrics,
    pixel_metrics_two_pass,
)
from synboost.metrics.streaming import StreamingPixelMetrics

RULES = list(FPR_RULES)
TOL = 1e-9


# --- independent references built on sklearn's full ROC -------------------------------------------------------------


def _closest_reference(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Hendrycks' rule, rebuilt from the ROC: for each recall level its largest FPR (full recall: its first point),
    then the level nearest 0.95 in float arithmetic, the higher one on ties."""
    best = None
    for level in np.unique(tpr):
        at = np.flatnonzero(tpr == level)
        f = fpr[at[0]] if level == 1.0 else fpr[at[-1]]
        key = (abs(level - 0.95), -level)
        if best is None or key < best[0]:
            best = (key, f)
    return float(best[1])


def reference(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """sklearn on the valid pixels, scores cast to float32 like bdlb."""
    valid = (labels == 0) | (labels == 1)
    y = labels[valid] == 1
    s = scores[valid].astype(np.float32)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    thin_fpr, thin_tpr, _ = roc_curve(y, s)
    interp = float(np.interp(0.95, tpr, fpr))
    assert interp == pytest.approx(float(np.interp(0.95, thin_tpr, thin_fpr)), abs=1e-12)  # ood_metrics thins
    return {
        "ap": average_precision_score(y, s),
        "auroc": roc_auc_score(y, s),
        "first_ge": float(fpr[np.argmax(tpr >= 0.95)]),
        "first_gt": float(fpr[np.argmax(tpr > 0.95)]),
        "closest": _closest_reference(fpr, tpr),
        "interp": interp,
    }


def assert_matches(scores, labels, ref: dict[str, float] | None = None) -> None:
    ref = ref or reference(np.concatenate([np.ravel(s) for s in scores]) if isinstance(scores, list) else scores,
                           np.concatenate([np.ravel(v) for v in labels]) if isinstance(labels, list) else labels)
    for rule in RULES:
        m = pixel_metrics(scores, labels, fpr_rule=rule)
        assert m.ap == pytest.approx(ref["ap"], abs=TOL)
        assert m.auroc == pytest.approx(ref["auroc"], abs=TOL)
        assert m.fpr95 == pytest.approx(ref[rule], abs=TOL), rule


def _data(rng: np.random.Generator, n: int, pos: float = 0.1, void: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    labels = (rng.random(n) < pos).astype(np.uint8)
    scores = rng.normal(1.2 * labels, 1.0)
    labels[rng.random(n) < void] = 255
    return scores, labels


# --- exact metrics vs sklearn --------------------------------------------------------------------------------------


def test_random_continuous_matches_sklearn():
    rng = np.random.default_rng(0)
    scores, labels = _data(rng, 50_000)
    assert_matches(scores.reshape(100, 500), labels.reshape(100, 500))


@pytest.mark.parametrize("levels", [2, 3, 7, 40])
def test_heavily_tied_matches_sklearn(levels):
    rng = np.random.default_rng(levels)
    scores, labels = _data(rng, 30_000, pos=0.3)
    quantised = np.round(scores * levels / 4) / levels  # few distinct values, shared by both classes
    assert np.unique(quantised).size < 20 * levels
    assert_matches(quantised, labels)


def test_float16_quantised_and_float64_dtype():
    rng = np.random.default_rng(1)
    scores, labels = _data(rng, 40_000)
    half = scores.astype(np.float16)
    assert_matches(half, labels)
    # float64 scores that collide in float32: the default cast ties them (bdlb), dtype=np.float64 keeps them apart
    base = rng.random(2000)
    s64 = np.concatenate([base, base + 1e-12])
    lab = np.concatenate([np.zeros(2000, np.uint8), np.ones(2000, np.uint8)])
    assert pixel_metrics(s64, lab).auroc == pytest.approx(0.5, abs=1e-3)
    exact64 = pixel_metrics(s64, lab, dtype=np.float64)
    assert exact64.auroc == pytest.approx(roc_auc_score(lab, s64), abs=TOL)
    assert exact64.ap == pytest.approx(average_precision_score(lab, s64), abs=TOL)


def test_many_images_pooled_with_all_negative_and_all_positive_images():
    rng = np.random.default_rng(2)
    scores, labels = [], []
    for i in range(40):
        shape = (int(rng.integers(5, 40)), int(rng.integers(5, 40)))
        s = np.round(rng.normal(size=shape) * 8) / 8
        if i % 5 == 0:
            lab = np.zeros(shape, np.uint8)  # anomaly-free image
        elif i % 7 == 0:
            lab = np.ones(shape, np.uint8)  # all-anomaly image
            s += 1.0
        else:
            lab = (rng.random(shape) < 0.2).astype(np.uint8)
            s += lab
            lab[rng.random(shape) < 0.1] = 255
        scores.append(s)
        labels.append(lab)
    assert_matches(scores, labels)


def test_void_and_unknown_labels_are_ignored():
    rng = np.random.default_rng(3)
    scores, labels = _data(rng, 20_000, void=0.0)
    noisy_scores = scores.copy()
    noisy_labels = labels.copy()
    ignored = rng.random(labels.size) < 0.3
    noisy_labels[ignored] = rng.choice([2, 7, 254, 255], size=int(ignored.sum()))
    noisy_scores[ignored] = 100.0  # would dominate every metric if counted
    keep = ~ignored
    assert pixel_metrics(noisy_scores, noisy_labels) == pixel_metrics(scores[keep], labels[keep])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.sampled_from([0, 0, 1, 255])), min_size=1, max_size=60),
)
def test_property_tiny_tied_data_matches_sklearn(pixels):
    scores = np.array([p[0] for p in pixels], dtype=np.float32) / 3
    labels = np.array([p[1] for p in pixels], dtype=np.uint8)
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    if n_pos == 0 or n_neg == 0:
        m = pixel_metrics(scores, labels)
        assert np.isnan(m.auroc) and np.isnan(m.fpr95)
        assert np.isnan(m.ap) if n_pos == 0 else m.ap == 1.0
        return
    assert_matches(scores, labels)


# --- hand-computed cases -------------------------------------------------------------------------------------------


def _case_b() -> tuple[np.ndarray, np.ndarray]:
    """20 positives (18 @ .9, 1 @ .6, 1 @ .3) and 10 negatives (2 @ .8, 1 @ .6, 3 @ .5, 1 @ .3, 3 @ .1)."""
    pos = [0.9] * 18 + [0.6, 0.3]
    neg = [0.8] * 2 + [0.6] + [0.5] * 3 + [0.3] + [0.1] * 3
    return np.array(pos + neg), np.array([1] * 20 + [0] * 10)


def test_hand_computed_rules_differ():
    # Thresholds high to low as (TP, FP): .9 (18, 0), .8 (18, 2), .6 (19, 3), .5 (19, 6), .3 (20, 7), .1 (20, 10).
    # AP: recall grows at .9 (to .9, precision 1), .6 (+.05, 19/22), .3 (+.05, 20/27).
    # AUROC: 18 positives beat all 10 negatives (180); the .6 positive beats 7, ties 1 (7.5); the .3 one beats 3,
    #   ties 1 (3.5): 191 / 200.
    # first_ge: TPR reaches .95 exactly at .6 -> FP 3. first_gt: TPR > .95 first at .3 -> FP 7 (the tie counts).
    # closest: level .95 is hit exactly; its lowest threshold is .5 -> FP 6. interp: the ROC point (.6, .95) is the
    #   last one with TPR <= .95 and lies on .95 -> .6.
    scores, labels = _case_b()
    expected = {"first_ge": 0.3, "first_gt": 0.7, "closest": 0.6, "interp": 0.6}
    for rule, fpr in expected.items():
        m = pixel_metrics(scores, labels, fpr_rule=rule)
        assert m.ap == pytest.approx(0.9 + 0.05 * 19 / 22 + 0.05 * 20 / 27, abs=1e-15)
        assert m.auroc == pytest.approx(191 / 200, abs=1e-15)
        assert m.fpr95 == pytest.approx(fpr, abs=1e-15), rule
        assert (m.n_pos, m.n_neg) == (20, 10)
    assert_matches(scores, labels)


def test_hand_computed_interpolation_and_float_tie():
    # 10 positives (9 @ .9, 1 @ .2), 4 negatives (1 @ .5, 1 @ .2, 2 @ .1).
    # ROC: (0,0) (0,.9) (.25,.9) (.5,1) (1,1). interp: halfway up the segment (.25,.9)-(.5,1) -> .375.
    # first_ge / first_gt: TPR 1 at .2 -> FP 2/4 = .5.
    # closest: |.9 - .95| = 0.04999999999999993 < |1 - .95| = 0.050000000000000044 in float64, so level .9 wins
    #   (as in the reference code) and its lowest threshold .5 has FP 1 -> .25.
    # AP = .9 * 1 + .1 * 10/12. AUROC: 9 * 4 + (2 + 0.5) = 38.5 of 40.
    scores = np.array([0.9] * 9 + [0.2] + [0.5, 0.2, 0.1, 0.1])
    labels = np.array([1] * 10 + [0] * 4)
    expected = {"first_ge": 0.5, "first_gt": 0.5, "closest": 0.25, "interp": 0.375}
    for rule, fpr in expected.items():
        m = pixel_metrics(scores, labels, fpr_rule=rule)
        assert m.fpr95 == pytest.approx(fpr, abs=1e-15), rule
        assert m.ap == pytest.approx(0.9 + 0.1 * 10 / 12, abs=1e-15)
        assert m.auroc == pytest.approx(38.5 / 40, abs=1e-15)
    assert_matches(scores, labels)


def test_degenerate_data():
    s = np.array([0.3, 0.2, 0.9])
    none_pos = pixel_metrics(s, np.array([0, 0, 255]))
    assert np.isnan(none_pos.ap) and np.isnan(none_pos.auroc) and np.isnan(none_pos.fpr95)
    assert (none_pos.n_pos, none_pos.n_neg) == (0, 2)
    none_neg = pixel_metrics(s, np.array([1, 1, 255]))
    assert none_neg.ap == 1.0 and np.isnan(none_neg.auroc) and np.isnan(none_neg.fpr95)
    all_void = pixel_metrics(s, np.array([255, 255, 255]))
    assert (all_void.n_pos, all_void.n_neg) == (0, 0) and np.isnan(all_void.ap)
    assert pixel_metrics([], []).n_pos == 0


def test_bad_input_raises():
    with pytest.raises(DataError):
        pixel_metrics(np.zeros((2, 3)), np.zeros((3, 2), np.uint8))
    with pytest.raises(DataError):
        pixel_metrics([np.zeros(3)], [np.zeros(3), np.zeros(3)])
    with pytest.raises(DataError, match="NaN"):
        pixel_metrics(np.array([0.1, np.nan]), np.array([1, 0]))
    with pytest.raises(DataError, match="NaN"):
        pixel_metrics(np.array([np.nan, 0.1]), np.array([1, 0]))
    assert pixel_metrics(np.array([np.nan, 0.1, 0.2]), np.array([255, 1, 0])).n_pos == 1  # NaN on void is fine
    with pytest.raises(ConfigError):
        pixel_metrics(np.zeros(3), np.zeros(3), fpr_rule="nearest")
    with pytest.raises(ConfigError):
        pixel_metrics(np.zeros(3), np.zeros(3), dtype=np.int32)


def test_as_dict():
    d = pixel_metrics(*_case_b()).as_dict()
    assert d["n_pos"] == 20 and d["fpr_rule"] == "first_ge" and isinstance(d["ap"], float)


# --- two-pass and chunking ------------------------------------------------------------------------------------------


def test_two_pass_equals_in_memory_across_many_chunks(monkeypatch):
    rng = np.random.default_rng(4)
    images = [_data(rng, 3000, pos=0.15) for _ in range(12)]
    images = [(np.round(s * 10) / 10, lab) for s, lab in images]  # ties across chunks and images
    whole = pixel_curve(np.concatenate([s for s, _ in images]), np.concatenate([lab for _, lab in images]))
    monkeypatch.setattr(pixel, "CHUNK", 1000)  # many chunks and buffer flushes
    calls = []

    def source():
        calls.append(1)
        return iter(images)

    curve = pixel.pixel_curve_two_pass(source)
    assert len(calls) == 2
    for name in ("thresholds", "tp", "fp_ge", "fp_gt"):
        np.testing.assert_array_equal(getattr(curve, name), getattr(whole, name))
    assert (curve.n_pos, curve.n_neg) == (whole.n_pos, whole.n_neg)
    for rule in RULES:
        assert pixel_metrics_two_pass(source, fpr_rule=rule) == whole.metrics(rule)


def test_curves_are_thinned_and_monotone():
    rng = np.random.default_rng(5)
    scores, labels = _data(rng, 60_000, pos=0.2)
    curve = pixel_curve(scores, labels)
    c = curve.curves(max_points=2000)
    assert 100 < c.recall.size <= 2000 and c.fpr.size <= 2000
    assert np.all(np.diff(c.recall) >= 0) and np.all(np.diff(c.fpr) >= 0) and np.all(np.diff(c.tpr) >= 0)
    assert (c.fpr[0], c.tpr[0], c.fpr[-1], c.tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert c.recall[-1] == 1.0
    assert np.trapezoid(c.tpr, c.fpr) == pytest.approx(curve.auroc(), abs=2e-3)
    small = pixel_curve(*_case_b()).curves()
    assert small.recall.size == 3  # fewer points than the limit: all kept


def test_best_f1_threshold_is_brute_force_optimum():
    rng = np.random.default_rng(6)
    scores, labels = _data(rng, 5000, pos=0.2)
    scores = np.round(scores * 6) / 6
    curve = pixel_curve(scores, labels)
    threshold, f1 = curve.best_f1_threshold()
    valid = labels != 255
    s, y = scores[valid].astype(np.float32), labels[valid] == 1

    def f1_of(pred):
        tp = np.sum(pred & y)
        return 2 * tp / (2 * tp + np.sum(pred & ~y) + np.sum(~pred & y))

    brute = max(f1_of(s >= t) for t in np.unique(s))
    assert f1 == pytest.approx(brute, abs=1e-12)
    assert f1_of(s > np.float32(threshold)) == pytest.approx(f1, abs=1e-12)  # threshold is for ">"


# --- streaming histogram ---------------------------------------------------------------------------------------------


def _inside(bounds: tuple[float, float], value: float, slack: float = 1e-12) -> bool:
    return bounds[0] - slack <= value <= bounds[1] + slack


def _stream(scores, labels, *, images: int = 4, **kwargs) -> StreamingPixelMetrics:
    acc = StreamingPixelMetrics(**kwargs)
    for s, lab in zip(np.array_split(scores, images), np.array_split(labels, images)):
        acc.update(s, lab)
    return acc


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize(
    "kind, kwargs",
    [
        ("continuous", {"num_bins": 64, "score_range": (-3.0, 4.0)}),
        ("continuous", {"num_bins": 4096, "score_range": (-1.0, 1.0)}),  # many scores clipped into end bins
        ("continuous", {"num_bins": 2**10}),
        ("tied", {"num_bins": 16, "score_range": (-3.0, 4.0)}),
        ("tied", {"num_bins": 2**8}),
        ("energy", {"num_bins": 2**12}),
    ],
)
def test_streaming_bounds_contain_exact(rule, kind, kwargs):
    rng = np.random.default_rng([RULES.index(rule), kwargs["num_bins"], len(kind)])
    scores, labels = _data(rng, 40_000, pos=0.2)
    if kind == "tied":
        scores = np.round(scores * 5) / 5
    if kind == "energy":
        scores = -np.exp(3 * scores) * 1e3 + 50  # wide range, both signs
    exact = pixel_metrics(scores, labels, fpr_rule=rule)
    est = _stream(scores, labels, fpr_rule=rule, **kwargs).compute()
    assert (est.n_pos, est.n_neg, est.fpr_rule) == (exact.n_pos, exact.n_neg, rule)
    assert _inside(est.ap_bounds, exact.ap) and _inside(est.ap_bounds, est.ap)
    assert _inside(est.auroc_bounds, exact.auroc) and _inside(est.auroc_bounds, est.auroc)
    assert _inside(est.fpr95_bounds, exact.fpr95) and _inside(est.fpr95_bounds, est.fpr95)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.sampled_from([0, 1, 1, 255])), min_size=2, max_size=80),
    st.sampled_from(RULES),
    st.sampled_from([1, 2, 3, 8]),
)
def test_property_streaming_bounds_contain_exact(pixels, rule, num_bins):
    # few bins and many ties: each bin holds several distinct scores, the worst case for the bounds
    scores = np.array([p[0] for p in pixels], dtype=np.float32) / 40
    labels = np.array([p[1] for p in pixels], dtype=np.uint8)
    exact = pixel_metrics(scores, labels, fpr_rule=rule)
    est = _stream(scores, labels, images=1, num_bins=num_bins, score_range=(0.0, 1.0), fpr_rule=rule).compute()
    if exact.n_pos == 0 or exact.n_neg == 0:
        return
    assert _inside(est.ap_bounds, exact.ap)
    assert _inside(est.auroc_bounds, exact.auroc)
    assert _inside(est.fpr95_bounds, exact.fpr95)


def test_streaming_bounds_are_attained():
    # One bin holding 2 positives and 2 negatives: AP ranges from [negatives first, positives at distinct scores]
    # (1/3 + 2/4) / 2 = 5/12 to [positives tied above negatives] 1; AUROC from 0 to 1; first_ge FPR95 from 0 to 1.
    est = _stream(np.array([0.1, 0.2, 0.3, 0.4]), np.array([1, 0, 1, 0]), images=1, num_bins=1,
                  score_range=(0.0, 1.0)).compute()
    assert est.ap_bounds == pytest.approx((5 / 12, 1.0), abs=1e-15)
    assert est.auroc_bounds == (0.0, 1.0) and est.fpr95_bounds == (0.0, 1.0)
    assert est.ap == pytest.approx(0.5) and est.auroc == 0.5  # everything tied


def test_streaming_is_tight_with_fine_bins():
    rng = np.random.default_rng(7)
    labels = (rng.random(1_000_000) < 0.05).astype(np.uint8)
    scores = 1 / (1 + np.exp(-rng.normal(2.0 * labels - 1.0, 1.0)))
    exact = pixel_metrics(scores, labels)
    est = _stream(scores, labels, num_bins=2**20, score_range=(0.0, 1.0)).compute()
    assert abs(est.ap - exact.ap) < 1e-4
    assert est.ap_bounds[1] - est.ap_bounds[0] < 1e-4
    assert est.auroc_bounds[1] - est.auroc_bounds[0] < 1e-5
    assert est.fpr95_bounds[1] - est.fpr95_bounds[0] < 1e-4
    keyed = _stream(scores, labels, num_bins=2**20).compute()  # no range: float32 key bits
    assert abs(keyed.ap - exact.ap) < 2e-3 and _inside(keyed.ap_bounds, exact.ap)


def test_streaming_estimate_is_exact_metric_of_quantised_scores():
    rng = np.random.default_rng(8)
    labels = (rng.random(20_000) < 0.3).astype(np.uint8)
    levels = np.clip(np.round(rng.normal(3 * labels + 6, 2.0)), 0, 15)  # integer scores 0..15
    est = _stream(levels, labels, num_bins=16, score_range=(0.0, 16.0), fpr_rule="interp").compute()
    exact = pixel_metrics(levels, labels, fpr_rule="interp")
    assert (est.ap, est.auroc, est.fpr95) == pytest.approx((exact.ap, exact.auroc, exact.fpr95), abs=1e-12)
    keyed = _stream(levels, labels, num_bins=2**16, fpr_rule="interp").compute()  # small integers: own key bins
    assert (keyed.ap, keyed.auroc, keyed.fpr95) == pytest.approx((exact.ap, exact.auroc, exact.fpr95), abs=1e-12)


def test_streaming_merge_equals_single_accumulator():
    rng = np.random.default_rng(9)
    scores, labels = _data(rng, 30_000)
    one = _stream(scores, labels, num_bins=2**12)
    a = StreamingPixelMetrics(2**12)
    b = StreamingPixelMetrics(2**12)
    a.update(scores[:10_000], labels[:10_000])
    b.update(scores[10_000:], labels[10_000:])
    assert a.merge(b).compute() == one.compute()
    with pytest.raises(ConfigError):
        a.merge(StreamingPixelMetrics(2**12, (0.0, 1.0)))


def test_streaming_signed_zero_and_curves():
    # -0.0 and +0.0 are one tied score: key binning must not split them
    s = np.array([-0.0, 0.0, 0.0, -0.0, 1.0], dtype=np.float32)
    lab = np.array([1, 0, 1, 0, 1])
    exact = pixel_metrics(s, lab)
    est = _stream(s, lab, images=1, num_bins=2**16).compute()
    assert est.ap == pytest.approx(exact.ap) and _inside(est.ap_bounds, exact.ap)
    assert est.auroc == exact.auroc
    c = _stream(*_data(np.random.default_rng(10), 50_000), num_bins=2**16).curves(500)
    assert c.recall.size <= 500 and c.tpr[-1] == 1.0


def test_streaming_degenerate_and_config_errors():
    acc = StreamingPixelMetrics(256, (0.0, 1.0))
    acc.update(np.array([0.2, 0.4]), np.array([0, 255]))
    m = acc.compute()
    assert np.isnan(m.ap) and np.isnan(m.ap_bounds[0]) and m.n_neg == 1
    acc.update(np.array([0.9]), np.array([1]))
    m = acc.compute()
    assert m.ap == 1.0 and m.auroc == 1.0 and m.fpr95 == 0.0
    with pytest.raises(DataError, match="NaN"):
        acc.update(np.array([np.nan]), np.array([0]))
    with pytest.raises(ConfigError):
        StreamingPixelMetrics(1000)  # key binning needs a power of two
    with pytest.raises(ConfigError):
        StreamingPixelMetrics(2**33)
    with pytest.raises(ConfigError):
        StreamingPixelMetrics(16, (1.0, 1.0))
    as_dict = m.as_dict()
    assert as_dict["num_bins"] == 256 and isinstance(as_dict["ap_bounds"], list)


def test_harmonic_difference_matches_direct_sums():
    rng = np.random.default_rng(11)
    k = np.concatenate([np.arange(0, 80), rng.integers(60, 10**6, 200)]).astype(np.float64)
    c = np.concatenate([rng.integers(1, 200, 80), rng.integers(1, 2000, 200)]).astype(np.float64)
    direct = np.array([np.sum(1.0 / np.arange(ki + 1, ki + ci + 1)) for ki, ci in zip(k, c)])
    np.testing.assert_allclose(streaming._harmonic_diff(k, c), direct, rtol=1e-13, atol=0)
