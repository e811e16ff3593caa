"""Scores against independent NumPy computations of their formulas."""
import numpy as np
import pytest
import torch

from synboost import scores


def _np_softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 19, 9, 13, generator=g, dtype=torch.float64) * 4


def test_entropy_and_distance_match_numpy(logits):
    z = logits.numpy()
    p = _np_softmax(z)
    ent = -(p * np.log(p)).sum(1)
    srt = np.sort(p, axis=1)
    dist = srt[:, -1] - srt[:, -2]
    np.testing.assert_allclose(scores.softmax_entropy(logits).numpy(), ent, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.softmax_distance(logits).numpy(), dist, rtol=1e-5, atol=1e-6)
    # the official per-image normalisations: (E - min) / max and 1 - (d - min) / max
    for b in range(3):
        e_norm = (ent[b] - ent[b].min()) / ent[b].max()
        d_norm = 1 - (dist[b] - dist[b].min()) / dist[b].max()
        np.testing.assert_allclose(scores.synboost_entropy(logits)[b].numpy(), e_norm, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(scores.synboost_distance(logits)[b].numpy(), d_norm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.msp(logits).numpy(), 1 - p.max(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.max_logit(logits).numpy(), -z.max(1), rtol=1e-6)
    lse = z.max(1) + np.log(np.exp(z - z.max(1, keepdims=True)).sum(1))
    np.testing.assert_allclose(scores.energy(logits).numpy(), -lse, rtol=1e-5)
    np.testing.assert_allclose(scores.entropy(logits).numpy(), ent / np.log(19), rtol=1e-5, atol=1e-6)


def test_safe_entropy_has_no_nan_on_saturated_softmax():
    z = torch.zeros(1, 19, 2, 2)
    z[:, 3] = 200.0  # every other probability underflows to exactly 0 in float32
    assert torch.isnan(scores.softmax_entropy(z, safe=False)).any()  # the official p*log(p) form
    safe = scores.softmax_entropy(z)
    assert torch.isfinite(safe).all() and safe.abs().max() < 1e-6
    assert torch.isfinite(scores.synboost_entropy(z)).all()


def test_sml_statistics_and_standardisation(logits):
    acc = torch.zeros(19, 3, dtype=torch.float64)
    scores.sml_stats_update(acc, logits[:2])
    scores.sml_stats_update(acc, logits[2:])
    mean, std = scores.sml_stats_finalize(acc)
    z = logits.numpy()
    mx, pred = z.max(1), z.argmax(1)
    for c in np.unique(pred):
        v = mx[pred == c]
        if v.size > 1:
            assert mean[c].item() == pytest.approx(v.mean(), rel=1e-5)
            assert std[c].item() == pytest.approx(v.std(), rel=1e-4)
    raw = scores.sml(logits, mean, std, suppress=False, smooth=False).numpy()
    np.testing.assert_allclose(raw, -(mx - mean.numpy()[pred]) / std.numpy()[pred], rtol=1e-4, atol=1e-5)


def test_boundary_suppression_only_touches_boundaries():
    pred = torch.zeros(1, 20, 20, dtype=torch.long)
    pred[:, :, 10:] = 1
    score = torch.rand(1, 20, 20)
    out = scores.boundary_suppression(score, pred, width=4, iterations=4)
    b = scores.label_boundaries(pred)[0]
    assert b[:, 9:11].all() and not b[:, :5].any()
    far = torch.zeros(20, 20, dtype=torch.bool)
    far[:, :5] = True
    far[:, 15:] = True
    assert torch.equal(out[0][far], score[0][far])  # away from the class border nothing changes
    assert not torch.equal(out[0][:, 9:11], score[0][:, 9:11])


def test_dilated_smoothing_keeps_constants_and_mass():
    x = torch.full((1, 30, 40), 2.5)
    assert torch.allclose(scores.dilated_smoothing(x), x)
    spike = torch.zeros(1, 61, 61)
    spike[0, 30, 30] = 1.0
    y = scores.dilated_smoothing(spike)
    assert y.sum().item() == pytest.approx(1.0, rel=1e-5)
    assert y[0, 30, 36] > 0 and y[0, 30, 33] == 0  # taps every 6 pixels


def test_mc_dropout_is_entropy_of_mean_softmax():
    outs = [torch.randn(1, 19, 4, 4) for _ in range(3)]
    it = iter(outs)
    got = scores.mc_dropout(lambda x: next(it), torch.zeros(1), samples=3)
    p = np.mean([_np_softmax(o.numpy()) for o in outs], axis=0)
    np.testing.assert_allclose(got.numpy(), -(p * np.log(p)).sum(1), rtol=1e-5)


def test_gaussian_blur_and_pebal_score_match_scipy():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    z = torch.tensor(rng.normal(0, 2, (2, 19, 20, 24)), dtype=torch.float32)
    e = scores.energy(z).numpy()
    ref = np.stack([gaussian_filter(m, sigma=1.0, mode="mirror", truncate=3.0) for m in e])  # torch "reflect"
    np.testing.assert_allclose(scores.gaussian_blur(torch.tensor(e)).numpy(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores.pebal(z).numpy(), ref, rtol=1e-5, atol=1e-5)
