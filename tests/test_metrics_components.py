"""SMIYC component metrics: hand-built masks with hand-computed sIoU / PPV / F1, and random blobs against an
independent loop implementation (scipy.ndimage, written after the reference ``segment_metrics``)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from synboost.errors import ConfigError, DataError
from synboost.metrics import pixel_curve
from synboost.metrics.components import TAUS, ComponentMetrics, component_scores


def _run(scores: np.ndarray, labels: np.ndarray, **kwargs):
    acc = ComponentMetrics(0.5, **kwargs)
    acc.update(scores, labels)
    return acc.compute()


def test_taus_are_the_reference_values():
    assert TAUS.size == 11 and TAUS[0] == 0.25 and TAUS[5] == 0.5 and TAUS[10] == 0.75


def test_gt_square_half_covered():
    # GT 10x10 = 100 px; prediction = its left half, 50 px, all on GT.
    # sIoU = 50 / (50 + 100 - 50) = 0.5; PPV = 50/50 = 1. TP for the 6 tau <= 0.5, FN for the 5 above; no FP.
    # F1 = 1 at tau <= 0.5 and 0 above: mean 6/11.
    labels = np.zeros((30, 30), np.uint8)
    labels[5:15, 5:15] = 1
    scores = np.zeros((30, 30))
    scores[5:15, 5:10] = 1.0
    r = _run(scores, labels, min_pred_size=1, min_gt_size=1)
    assert (r.siou_gt, r.ppv, r.n_gt, r.n_pred) == (0.5, 1.0, 1, 1)
    assert r.tp == (1,) * 6 + (0,) * 5 and r.fn == (0,) * 6 + (1,) * 5 and r.fp == (0,) * 11
    assert (r.f1_25, r.f1_50, r.f1_75) == (1.0, 1.0, 0.0)
    assert r.f1_mean == pytest.approx(6 / 11)


def test_prediction_spanning_two_gt_components():
    # GT A = rows 0-9 x cols 0-9, GT B = rows 0-9 x cols 20-29 (100 px each). One prediction, rows 0-9 x cols 5-24
    # (200 px): 50 px on A, 100 px between, 50 px on B.
    # sIoU(A) = |A ∩ P| / (|A ∪ P| - |P ∩ B|) = 50 / (250 - 50) = 0.25 (plain IoU would be 0.2); same for B.
    # PPV(P) = 100 / 200 = 0.5.
    # tau = 0.25: TP 2, FN 0, FP 0 -> F1 1. tau 0.30..0.50: TP 0, FN 2, FP 0 -> 0. tau > 0.5: FP 1 -> 0. Mean 1/11.
    labels = np.zeros((12, 32), np.uint8)
    labels[0:10, 0:10] = 1
    labels[0:10, 20:30] = 1
    scores = np.zeros((12, 32))
    scores[0:10, 5:25] = 1.0
    siou, ppv = component_scores(scores > 0.5, labels, 1, 1)
    np.testing.assert_array_equal(siou, [0.25, 0.25])
    np.testing.assert_array_equal(ppv, [0.5])
    r = _run(scores, labels, min_pred_size=1, min_gt_size=1)
    assert r.tp[0] == 2 and r.fn[0] == 0 and r.fp == (0,) * 6 + (1,) * 5
    assert r.f1_mean == pytest.approx(1 / 11) and r.f1_25 == 1.0 and r.f1_50 == 0.0


def test_small_prediction_removed_by_size_filter():
    # GT 20x20 predicted exactly, plus a separate 5x5 = 25 px false blob. Obstacle preset: predicted components
    # below 50 px are removed -> sIoU 1, PPV 1, F1 1 at every tau. Without the filter the blob is an FP (PPV 0):
    # F1 = 2 / (2 + 0 + 1) = 2/3 at every tau.
    labels = np.zeros((40, 40), np.uint8)
    labels[2:22, 2:22] = 1
    scores = (labels == 1).astype(np.float64)
    scores[30:35, 30:35] = 0.9
    filtered = _run(scores, labels, preset="obstacle")
    assert (filtered.siou_gt, filtered.ppv, filtered.f1_mean, filtered.n_pred) == (1.0, 1.0, 1.0, 1)
    unfiltered = _run(scores, labels, preset="obstacle", min_pred_size=1)
    assert unfiltered.n_pred == 2 and unfiltered.ppv == 0.5
    assert unfiltered.f1_mean == pytest.approx(2 / 3)


def test_gt_below_size_becomes_void():
    # Obstacle preset (GT >= 10 px). Big GT 20x20 predicted exactly; small GT 3x3 = 9 px -> void. A 6x10 = 60 px
    # prediction contains the small GT: after voiding, 51 px remain in the ROI, none on GT -> PPV 0, an FP.
    # GT components: only the big one (sIoU 1). F1 = 2 / (2 + 0 + 1) at every tau (the FP has PPV 0 < tau).
    # A second prediction lying exactly on another small GT (3x3, min_pred_size lowered to 5) vanishes entirely.
    labels = np.zeros((60, 60), np.uint8)
    labels[0:20, 0:20] = 1
    labels[40:43, 40:43] = 1
    labels[30:33, 5:8] = 1
    scores = (labels == 1).astype(np.float64)
    scores[38:44, 38:48] = 1.0
    r = _run(scores, labels, preset="obstacle")
    assert (r.n_gt, r.n_pred, r.siou_gt, r.ppv) == (1, 2, 1.0, 0.5)
    siou, ppv = component_scores(scores > 0.5, labels, 5, 10)
    np.testing.assert_array_equal(siou, [1.0])
    np.testing.assert_array_equal(np.sort(ppv), [0.0, 1.0])  # the 3x3 prediction on the voided GT is gone
    assert r.f1_mean == pytest.approx(2 / 3)
    # without voiding the small GT: sIoU = 9 / (60 + 9 - 9) = 0.15, PPV = 9 / 60 = 0.15
    siou, ppv = component_scores(scores > 0.5, labels, 50, 1)
    assert 0.15 in siou.round(12) and 0.15 in ppv.round(12)


def test_void_zeroes_predictions_and_eight_connectivity():
    labels = np.zeros((10, 10), np.uint8)
    labels[0, 0] = labels[1, 1] = 1  # diagonal neighbours: one 8-connected GT component of 2 px
    labels[5:, :] = 255
    scores = np.zeros((10, 10))
    scores[0, 0] = 1.0
    scores[5:, :] = 1.0  # everything predicted on void is dropped
    siou, ppv = component_scores(scores > 0.5, labels, 1, 1)
    np.testing.assert_array_equal(siou, [0.5])
    np.testing.assert_array_equal(ppv, [1.0])


def test_threshold_is_strict_and_from_best_f1():
    labels = np.zeros((20, 20), np.uint8)
    labels[5:15, 5:15] = 1
    scores = np.where(labels == 1, 0.8, 0.2).astype(np.float32)
    assert _run(scores, labels, min_pred_size=1, min_gt_size=1).n_pred == 1
    acc = ComponentMetrics(0.8, min_pred_size=1, min_gt_size=1)  # score > 0.8 is false everywhere
    acc.update(scores, labels)
    assert acc.compute().n_pred == 0
    threshold, f1 = pixel_curve(scores, labels).best_f1_threshold()
    assert f1 == 1.0
    best = ComponentMetrics(threshold, min_pred_size=1, min_gt_size=1)
    best.update(scores, labels)
    assert best.compute().f1_mean == 1.0


# --- independent reference ------------------------------------------------------------------------------------------


def _reference(scores, labels, threshold, min_pred, min_gt):
    """Loop implementation after SMIYC ``default_instancer`` + ``segment_metrics`` (scipy labelling)."""
    structure = np.ones((3, 3), dtype=int)
    gt_inst, n_gt = ndimage.label(labels == 1, structure)
    pred_mask = (scores > threshold) & (labels != 255)
    pred_inst, n_pred = ndimage.label(pred_mask, structure)
    for comp in range(1, n_pred + 1):
        if np.sum(pred_inst == comp) < min_pred:
            pred_inst[pred_inst == comp] = 0
    labels = labels.copy()
    for comp in range(1, n_gt + 1):
        if np.sum(gt_inst == comp) < min_gt:
            labels[gt_inst == comp] = 255
    roi = labels < 255
    g, p = gt_inst[roi], pred_inst[roi]
    siou = []
    for i in np.unique(g[g > 0]):
        touching = np.unique(p[(g == i) & (p > 0)])
        in_touching = np.isin(p, touching)
        inter = np.sum((g == i) & in_touching)
        adjustment = np.sum(~np.isin(g, [0, i]) & in_touching)
        siou.append(inter / (np.sum(in_touching) + np.sum(g == i) - inter - adjustment))
    ppv = [np.sum((p == j) & (g > 0)) / np.sum(p == j) for j in np.unique(p[p > 0])]
    return np.sort(siou), np.sort(ppv)


def _blobs(rng: np.random.Generator, shape=(64, 96)):
    gt = ndimage.gaussian_filter(rng.normal(size=shape), 3) > 0.12
    labels = gt.astype(np.uint8)
    labels[ndimage.gaussian_filter(rng.normal(size=shape), 4) > 0.15] = 255  # void, cutting through components
    labels[gt & (rng.random(shape) < 0.02)] = 255
    noise = ndimage.gaussian_filter(rng.normal(size=shape), 2)
    scores = 0.6 * gt + noise * 4
    return scores, labels


@pytest.mark.parametrize("seed", range(12))
def test_random_blobs_match_reference(seed):
    rng = np.random.default_rng(seed)
    min_pred, min_gt = [(50, 10), (20, 5), (1, 1)][seed % 3]
    acc = ComponentMetrics(0.4, min_pred_size=min_pred, min_gt_size=min_gt)
    all_siou, all_ppv = [], []
    for _ in range(3):
        scores, labels = _blobs(rng)
        siou, ppv = component_scores(scores.astype(np.float32) > 0.4, labels, min_pred, min_gt)
        ref_siou, ref_ppv = _reference(scores.astype(np.float32), labels, 0.4, min_pred, min_gt)
        np.testing.assert_allclose(np.sort(siou), ref_siou, rtol=0, atol=1e-15)
        np.testing.assert_allclose(np.sort(ppv), ref_ppv, rtol=0, atol=1e-15)
        acc.update(scores, labels)
        all_siou.append(ref_siou)
        all_ppv.append(ref_ppv)
    siou, ppv = np.concatenate(all_siou), np.concatenate(all_ppv)
    r = acc.compute()
    assert r.n_gt == siou.size and r.n_pred == ppv.size and r.n_gt > 0
    assert r.siou_gt == pytest.approx(siou.mean(), abs=1e-15)
    f1 = []
    for t in TAUS:
        tp, fn, fp = np.sum(siou >= t), np.sum(siou < t), np.sum(ppv < t)
        f1.append(2 * tp / (2 * tp + fn + fp))
    assert r.f1 == pytest.approx(tuple(f1), abs=1e-15)
    assert r.f1_mean == pytest.approx(np.mean(f1), abs=1e-15)


def test_merge_empty_and_errors():
    rng = np.random.default_rng(99)
    images = [_blobs(rng) for _ in range(4)]
    one = ComponentMetrics(0.4, "obstacle")
    a, b = ComponentMetrics(0.4, "obstacle"), ComponentMetrics(0.4, "obstacle")
    for i, (s, lab) in enumerate(images):
        one.update(s, lab)
        (a if i < 2 else b).update(s, lab)
    assert a.merge(b).compute() == one.compute()
    empty = ComponentMetrics(0.5).compute()
    assert empty.n_gt == 0 and np.isnan(empty.siou_gt) and np.isnan(empty.f1_mean)
    assert isinstance(one.compute().as_dict()["f1"], list)
    with pytest.raises(ConfigError):
        a.merge(ComponentMetrics(0.3, "obstacle"))
    with pytest.raises(ConfigError):
        ComponentMetrics(0.5, preset="lane")
    with pytest.raises(ConfigError):
        ComponentMetrics(float("nan"))
    with pytest.raises(DataError):
        ComponentMetrics(0.5).update(np.zeros((4, 4)), np.zeros((4, 5), np.uint8))
    with pytest.raises(DataError):
        ComponentMetrics(0.5).update(np.zeros((2, 4, 4)), np.zeros((2, 4, 4), np.uint8))
