"""The embedding-density blocks against references: scipy's Gaussian log-density, a brute-force nearest-neighbour
search, scikit-learn's own logistic-regression prediction."""
import numpy as np
import pytest
import torch

from synboost.models.density import (
    DENSITY_METHODS,
    DensityScorer,
    FeatureTap,
    GaussianDensity,
    KNNBank,
    fit_logistic,
    pixels,
    resize_mask,
)


def _data(n=3000, d=12, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d))
    return (rng.standard_normal((n, d)) @ a + 5 * rng.standard_normal(d)).astype(np.float64)


def test_gaussian_nll_equals_scipy_and_streaming_equals_one_shot():
    from scipy.stats import multivariate_normal

    x = _data()
    streamed, whole = GaussianDensity(x.shape[1]), GaussianDensity(x.shape[1])
    for chunk in np.array_split(x, 7):
        streamed.update(torch.from_numpy(chunk).float())
    whole.update(torch.from_numpy(x).float())
    assert streamed.count == whole.count == len(x)
    m1, c1 = streamed.covariance()
    m2, c2 = whole.covariance()
    torch.testing.assert_close(m1, m2, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(c1, c2, rtol=1e-9, atol=1e-9)
    xf = torch.from_numpy(x).float().double().numpy()  # what the model saw
    np.testing.assert_allclose(c1.numpy(), np.cov(xf, rowvar=False, bias=True), rtol=1e-8, atol=1e-8)

    ridge = 1e-4
    streamed.fit(ridge)
    cov = np.cov(xf, rowvar=False, bias=True)
    cov_r = cov + ridge * np.diag(cov).mean() * np.eye(len(cov))
    q = _data(200, seed=1)
    ref = -multivariate_normal(xf.mean(0), cov_r).logpdf(q)
    ours = streamed.nll(torch.from_numpy(q).float()).numpy()
    np.testing.assert_allclose(ours, ref, rtol=2e-4, atol=2e-3)
    # the map form is the same function per pixel; buffers survive a state-dict round trip
    feat = torch.from_numpy(q[:24]).float().T.reshape(1, -1, 4, 6)
    back = GaussianDensity(x.shape[1])
    back.load_state_dict(streamed.state_dict())
    assert set(streamed.state_dict()) == {"mean", "whiten", "log_det"}
    np.testing.assert_allclose(back(feat).numpy().ravel(), ours[:24], rtol=1e-6)


def test_gaussian_ridge_makes_dead_channels_finite():
    x = _data(500, 6)
    x[:, 2] = 0  # a dead ReLU channel
    g = GaussianDensity(6)
    g.update(torch.from_numpy(x).float())
    g.fit(1e-4)
    inl = g.nll(torch.from_numpy(x[:10]).float())
    out = x[:10].copy()
    out[:, 2] = 1.0
    assert torch.isfinite(inl).all() and (g.nll(torch.from_numpy(out).float()) > inl + 100).all()


@pytest.mark.parametrize("backend", ["faiss", "torch"])
@pytest.mark.parametrize("reduce", ["mean", "kth"])
def test_knn_distances_equal_brute_force(backend, reduce):
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((700, 16)).astype(np.float32)
    q = rng.standard_normal((90, 16)).astype(np.float32)
    kb = KNNBank(16, capacity=10_000, k=4, reduce=reduce, backend=backend)
    for chunk in np.array_split(bank, 3):
        kb.add(torch.from_numpy(chunk))
    kb.finish()
    assert torch.equal(kb.bank, torch.from_numpy(bank))  # under the capacity every row is kept, in order
    d = np.sqrt(((q[:, None] - bank[None]) ** 2).sum(-1))
    near = np.sort(d, 1)[:, :4]
    ref = near.mean(1) if reduce == "mean" else near[:, -1]
    np.testing.assert_allclose(kb.score(torch.from_numpy(q)).numpy(), ref, rtol=1e-4, atol=1e-4)
    # map form; and a reload gives the same scores (the faiss index is rebuilt lazily)
    back = KNNBank(16, 10_000, 4, reduce, backend=backend, size=700)
    back.load_state_dict(kb.state_dict())
    fmap = torch.from_numpy(q[:12]).T.reshape(1, 16, 3, 4)
    np.testing.assert_allclose(back(fmap).numpy().ravel(), ref[:12], rtol=1e-4, atol=1e-4)


def test_knn_bank_is_bounded_uniform_and_deterministic():
    rows = torch.arange(20_000, dtype=torch.float32)[:, None].repeat(1, 8)

    def build(seed):
        kb = KNNBank(8, capacity=500, k=1, seed=seed)
        for chunk in rows.split(64):
            kb.add(chunk)
            assert kb.nbytes <= 500 * 8 * 4  # never more than the capacity, also while building
        kb.finish()
        return kb

    a, b, c = build(0), build(0), build(1)
    assert a.bank.shape == (500, 8) and a.nbytes == 500 * 8 * 4
    assert torch.equal(a.bank, b.bank) and not torch.equal(a.bank, c.bank)
    ids = a.bank[:, 0].numpy()
    assert len(np.unique(ids)) == 500
    # a uniform sample of all 20000 rows, not the first 500: mean id near 10000
    assert abs(ids.mean() - 10_000) < 4 * 5773 / np.sqrt(500)


def test_logistic_regression_log_odds_equal_sklearn():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 3)).astype(np.float32)
    y = (x @ np.array([1.5, -0.5, 0.3]) + 0.3 * rng.standard_normal(600) > 1.0).astype(np.uint8)
    coef, bias, lr = fit_logistic(x, y, c=0.5)
    scorer = DensityScorer(["a", "b", "c"], {"a": 2, "b": 2, "c": 2}, "a", "a", k=1, bank_size=1)
    scorer.logreg_coef.copy_(coef)
    scorer.logreg_bias.copy_(bias)
    z = torch.from_numpy(x).T.reshape(1, 3, 20, 30)
    ours = ((z * scorer.logreg_coef.view(1, -1, 1, 1)).sum(1) + scorer.logreg_bias).numpy().ravel()
    np.testing.assert_allclose(ours, lr.decision_function(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ours > 0, lr.predict(x) == 1)


def test_scorer_methods_tap_and_masks():
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Conv2d(4, 5, 3, 2, 1))
    tap = FeatureTap(net, ["0", "2"])
    x = torch.randn(2, 3, 16, 24)
    with tap.capture() as feats:
        net(x)
    net(x)  # outside capture: nothing recorded, nothing overwritten
    assert feats["0"].shape == (2, 4, 8, 12) and feats["2"].shape == (2, 5, 4, 6)
    with pytest.raises(KeyError, match="no layer nope"):
        FeatureTap(net, ["nope"])

    sc = DensityScorer(["0", "2"], {"0": 4, "2": 5}, single_layer="2", knn_layer="0", k=2, bank_capacity=50)
    for name in ("0", "2"):
        sc.gaussian(name).update(pixels(feats[name]))
        sc.gaussian(name).fit()
    sc.knn.add(pixels(feats["0"])[:50])
    sc.knn.finish()
    maps = sc(feats, (16, 24))
    assert set(maps) == set(DENSITY_METHODS) and all(m.shape == (2, 16, 24) for m in maps.values())
    assert torch.allclose(maps["nll_min"], maps["nll_min"])  # finite
    assert all(torch.isfinite(m).all() for m in maps.values())
    only = sc(feats, (16, 24), ["knn"])
    assert list(only) == ["knn"] and torch.equal(only["knn"], maps["knn"])

    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, :, :5] = True
    assert resize_mask(mask, (4, 4))[0].tolist() == [[True, True, False, False]] * 4
    assert pixels(torch.ones(1, 3, 4, 4), stride=2).shape == (4, 3)
