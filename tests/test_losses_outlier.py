"""The losses and scores of the segmenters re-trained with outlier data, against independent NumPy / SciPy
computations; and the model's outlier outputs."""
import numpy as np
import pytest
import torch
from scipy.special import digamma, expit, gammaln, log_softmax, softmax

from synboost import scores
from synboost.data.anomalies import OUTLIER
from synboost.losses.outlier import dirichlet_kl, dirichlet_loss, dirichlet_targets, outlier_head_loss, void_loss


def kl_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KL(Dir(a) || Dir(b)) over axis 1, the textbook closed form."""
    a0, b0 = a.sum(1), b.sum(1)
    return (gammaln(a0) - gammaln(a).sum(1) - gammaln(b0) + gammaln(b).sum(1)
            + ((a - b) * (digamma(a) - digamma(a0)[:, None])).sum(1))


def test_dirichlet_kl_matches_the_closed_form_on_random_inputs():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 50, (3, 19, 4, 5))
    z = rng.normal(0, 2.5, (3, 19, 4, 5))
    ours = dirichlet_kl(torch.from_numpy(a), torch.from_numpy(z)).numpy()
    ref = kl_reference(a, np.exp(z))
    assert ours.shape == (3, 4, 5)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)
    assert (ref > 0).all()
    # float32 (what training computes) stays close
    ours32 = dirichlet_kl(torch.from_numpy(a).float(), torch.from_numpy(z).float()).numpy()
    np.testing.assert_allclose(ours32, ref, rtol=1e-3, atol=1e-3)


def test_dirichlet_kl_is_zero_when_the_prediction_equals_the_target_and_finite_at_extremes():
    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.uniform(0.5, 90, (2, 19, 3, 3)))
    assert dirichlet_kl(a, a.log()).abs().max() < 1e-9
    t = dirichlet_targets(torch.tensor([[[0, OUTLIER]]]), 19)
    assert dirichlet_kl(t.double(), t.double().log()).abs().max() < 1e-9
    z = torch.tensor([-200.0, -90.0, 0.0, 70.0]).view(1, 4, 1, 1).requires_grad_()
    kl = dirichlet_kl(torch.ones(1, 4, 1, 1), z)
    kl.sum().backward()
    assert torch.isfinite(kl).all() and torch.isfinite(z.grad).all()


def test_dirichlet_targets():
    y = torch.tensor([[[3, OUTLIER, 255]]])
    t = dirichlet_targets(y, 19, precision=100.0, smoothing=0.01)
    assert t.shape == (1, 19, 1, 3)
    inl = t[0, :, 0, 0]
    assert inl.sum().item() == pytest.approx(100.0)
    assert inl[3].item() == pytest.approx(100 * (1 - 18 * 0.01)) and inl.argmax().item() == 3
    assert torch.allclose(inl[torch.arange(19) != 3], torch.full((18,), 1.0))
    assert torch.equal(t[0, :, 0, 1], torch.ones(19))  # the flat Dirichlet on outliers
    with pytest.raises(ValueError):
        dirichlet_targets(y, 19, smoothing=0.1)


def test_dirichlet_loss_parts_and_gradient_steps():
    torch.manual_seed(0)
    y = torch.randint(0, 19, (2, 6, 6))
    y[:, :2] = OUTLIER
    y[:, -1, :] = 255
    z = (torch.randn(2, 19, 6, 6) + 3.0).requires_grad_()  # a high predicted precision everywhere
    loss, parts = dirichlet_loss(z, y, 100.0, 0.01, outlier_weight=0.5)
    kl = kl_reference(dirichlet_targets(y, 19).double().numpy(), np.exp(z.detach().double().numpy()))
    inl, out = (y < 19).numpy(), (y == OUTLIER).numpy()
    assert parts["kl_in"] == pytest.approx(kl[inl].mean(), rel=1e-4)
    assert parts["kl_out"] == pytest.approx(kl[out].mean(), rel=1e-4)
    assert loss.item() == pytest.approx(kl[inl].mean() + 0.5 * kl[out].mean(), rel=1e-4)
    prec_before = torch.logsumexp(z.detach(), 1)[y == OUTLIER]
    loss.backward()
    with torch.no_grad():
        z2 = z - 0.05 * z.grad
    loss2, _ = dirichlet_loss(z2, y, 100.0, 0.01, 0.5)
    assert loss2 < loss
    prec_after = torch.logsumexp(z2, 1)[y == OUTLIER]
    assert (prec_after < prec_before).all()  # outlier pixels' predicted precision alpha_0 falls
    # no outlier pixels: no NaN
    loss3, parts3 = dirichlet_loss(z.detach(), torch.zeros(1, 6, 6, dtype=torch.long).expand(2, 6, 6), 100, 0.01)
    assert torch.isfinite(loss3) and parts3["kl_out"] == 0.0


def test_mutual_information_matches_scipy_and_energy_is_minus_log_precision():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, (2, 19, 5, 4))
    z[0, :, 0, 0] = 0.0  # the flat Dirichlet: alpha = 1
    ours = scores.dirichlet_mutual_information(torch.from_numpy(z).float()).numpy()
    alpha = np.exp(z)
    a0 = alpha.sum(1, keepdims=True)
    p = alpha / a0
    ref = -(p * (np.log(p) - digamma(alpha + 1) + digamma(a0 + 1))).sum(1)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
    assert (ref >= 0).all()
    # a sharp, confident Dirichlet has far less MI than the flat one of the same mean
    sharp = np.log(np.full((1, 19, 1, 1), 1.0))
    sharp[0, 3] = np.log(82.0)
    assert scores.dirichlet_mutual_information(torch.from_numpy(sharp)).item() < 0.2 * ours[0, 0, 0]
    np.testing.assert_allclose(scores.energy(torch.from_numpy(z)).numpy(), -np.log(a0[:, 0]), rtol=1e-6)


def test_void_probability_and_loss_against_direct_computation():
    rng = np.random.default_rng(3)
    out = rng.normal(0, 2, (2, 20, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(scores.void_probability(torch.from_numpy(out)).numpy(), softmax(out, 1)[:, -1],
                               rtol=1e-5, atol=1e-7)
    y = rng.integers(0, 19, (2, 3, 4))
    y[0, 0, :2] = OUTLIER
    y[1, 2, 3] = 255
    loss, parts = void_loss(torch.from_numpy(out), torch.from_numpy(y))
    lp = log_softmax(out.astype(np.float64), 1)
    t = np.where(y == OUTLIER, 19, y)
    keep = y != 255
    b, h, w = np.nonzero(keep)
    ref = -lp[b, t[keep], h, w].mean()
    assert loss.item() == pytest.approx(ref, rel=1e-5) and parts["ce"] == pytest.approx(ref, rel=1e-5)


def test_outlier_head_probability_and_loss_against_direct_computation():
    rng = np.random.default_rng(4)
    out = rng.normal(0, 2, (2, 20, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(scores.outlier_head_probability(torch.from_numpy(out)).numpy(), expit(out[:, -1]),
                               rtol=1e-5, atol=1e-7)
    y = rng.integers(0, 19, (2, 3, 4))
    y[0, 0, :3] = OUTLIER
    y[1, 2, 3] = 255
    loss, parts = outlier_head_loss(torch.from_numpy(out), torch.from_numpy(y), head_weight=0.7)
    o = out.astype(np.float64)
    lp = log_softmax(o[:, :19], 1)
    inl = (y != 255) & (y != OUTLIER)
    b, h, w = np.nonzero(inl)
    ce = -lp[b, y[inl], h, w].mean()
    valid = y != 255
    s, tgt = o[:, -1][valid], (y[valid] == OUTLIER).astype(np.float64)
    bce = -(tgt * np.log(expit(s)) + (1 - tgt) * np.log(expit(-s))).mean()
    assert parts["ce"] == pytest.approx(ce, rel=1e-5) and parts["bce"] == pytest.approx(bce, rel=1e-5)
    assert loss.item() == pytest.approx(ce + 0.7 * bce, rel=1e-5)


@pytest.mark.parametrize("kind", ["void", "outlier_head", "dirichlet"])
def test_segmenter_outlier_outputs(kind):
    from synboost.models.segmenter import DeepLabV3Plus

    kw = dict(backbone="tiny", aspp_dim=16, decoder_dim=16, width=8)
    torch.manual_seed(0)
    plain = DeepLabV3Plus(**kw).eval()
    torch.manual_seed(0)
    built = DeepLabV3Plus(**kw, outlier_training=kind).eval()
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        full = built(x, all_outputs=True)
        assert built(x).shape == (2, 19, 32, 48)
        extra = kind != "dirichlet"
        assert full.shape == (2, 19 + extra, 32, 48)
        assert torch.allclose(full[:, :19], built(x), atol=1e-6)
    # the same weights where the architectures agree: a plain model's state is unchanged by the new option
    ps, bs = plain.state_dict(), built.state_dict()
    assert all(k in bs for k in ps)
    assert [k for k in bs if k not in ps] == ([f"outlier_head.{k}" for k in built.outlier_head.state_dict()]
                                              if kind == "outlier_head" else [])
    # a trained plain segmenter turned into one for `kind`: class filters and everything else kept
    grown = DeepLabV3Plus(**kw).eval()
    grown.load_state_dict(ps)
    grown.set_outlier_training(kind)
    assert grown.outlier_training == kind
    assert torch.equal(grown.classifier.weight[:19], plain.classifier.weight)
    with torch.no_grad():
        assert torch.allclose(grown(x), plain(x), atol=1e-6)
        g = grown(x, all_outputs=True)
        assert g.shape[1] == 19 + (kind != "dirichlet")
        if kind == "outlier_head":
            logits, head = grown.forward_outlier(x)
            assert head.shape == (2, 32, 48) and torch.allclose(head, g[:, -1])
    assert set(grown.state_dict()) == set(bs)
    with pytest.raises(ValueError):
        grown.set_outlier_training("void" if kind != "void" else "dirichlet")
    if kind != "dirichlet":
        with pytest.raises(ValueError):
            grown.add_abstention()
