"""Confusion-matrix segmentation metrics against a direct per-class computation."""
from __future__ import annotations

import numpy as np
import pytest

from synboost.errors import ConfigError, DataError
from synboost.metrics.segmentation import ConfusionMatrix


def _direct(preds, targets, num_classes):
    """Per-class IoU by explicit masks over the pooled pixels with a target in 0..C-1."""
    p = np.concatenate([x.ravel() for x in preds])
    t = np.concatenate([x.ravel() for x in targets])
    keep = t < num_classes
    p, t = p[keep], t[keep]
    iou = []
    for c in range(num_classes):
        inter = np.sum((p == c) & (t == c))
        union = np.sum((p == c) | (t == c))
        iou.append(inter / union if union else np.nan)
    return np.array(iou), np.sum(p == t) / t.size


def test_matches_direct_computation_with_ignore_and_absent_classes():
    rng = np.random.default_rng(0)
    c = 19
    preds, targets = [], []
    for _ in range(5):
        t = rng.integers(0, c, size=(40, 60)).astype(np.uint8)
        t[t == 3] = 4  # class 3 never in the ground truth, class 17 never anywhere
        t[t == 17] = 18
        p = np.where(rng.random(t.shape) < 0.7, t, rng.integers(0, c, size=t.shape)).astype(np.uint8)
        p[p == 17] = 16
        t[rng.random(t.shape) < 0.1] = 255
        t[rng.random(t.shape) < 0.02] = 250  # another id outside 0..C-1: skipped as well
        p[t == 255] = 17  # predictions on ignored pixels never count
        preds.append(p)
        targets.append(t)
    cm = ConfusionMatrix(c)
    for p, t in zip(preds, targets):
        cm.update(p, t)
    r = cm.compute()
    iou, acc = _direct(preds, targets, c)
    np.testing.assert_allclose(r.iou, iou, rtol=0, atol=1e-15)
    assert np.isnan(r.iou[17]) and r.iou[3] == 0.0  # absent in both -> nan; predicted but never true -> 0
    assert r.miou == pytest.approx(np.nanmean(iou), abs=1e-15)
    assert r.pixel_accuracy == pytest.approx(acc, abs=1e-15)


def test_hand_computed_and_merge():
    # target [0 0 1 1 | 255], prediction [0 1 1 1 | 0]: class 0: TP 1, FN 1 -> 1/2; class 1: TP 2, FP 1 -> 2/3;
    # class 2 absent -> nan. mIoU = (1/2 + 2/3) / 2 = 7/12, accuracy 3/4.
    a = ConfusionMatrix(3, ["road", "obstacle", "sky"])
    a.update(np.array([0, 1, 1]), np.array([0, 0, 1]))
    b = ConfusionMatrix(3, ["road", "obstacle", "sky"])
    b.update(np.array([[1, 0]]), np.array([[1, 255]]))
    r = a.merge(b).compute()
    assert r.iou[:2] == (0.5, pytest.approx(2 / 3)) and np.isnan(r.iou[2])
    assert r.miou == pytest.approx(7 / 12) and r.pixel_accuracy == 0.75
    d = r.as_dict()
    assert d["iou"]["obstacle"] == pytest.approx(2 / 3) and set(d) == {"miou", "pixel_accuracy", "iou"}
    np.testing.assert_array_equal(a.matrix, [[1, 1, 0], [0, 2, 0], [0, 0, 0]])


def test_empty_and_errors():
    r = ConfusionMatrix(4).compute()
    assert np.isnan(r.miou) and np.isnan(r.pixel_accuracy) and r.class_names == ("0", "1", "2", "3")
    cm = ConfusionMatrix(4)
    with pytest.raises(DataError):
        cm.update(np.zeros((2, 2), np.int64), np.zeros((2, 3), np.int64))
    with pytest.raises(DataError):
        cm.update(np.array([4]), np.array([1]))  # prediction outside 0..C-1 on a counted pixel
    with pytest.raises(DataError):
        cm.update(np.array([0.5]), np.array([1]))
    cm.update(np.array([9]), np.array([255]))  # ignored pixel: its prediction is not checked
    with pytest.raises(ConfigError):
        ConfusionMatrix(3, ["a", "b"])
    with pytest.raises(ConfigError):
        cm.merge(ConfusionMatrix(5))
