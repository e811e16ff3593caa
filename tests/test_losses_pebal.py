"""PEBAL's losses against direct NumPy implementations of the official formulas, and the sign of their gradients."""
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from synboost.losses.pebal import (
    OUTLIER,
    PebalWeights,
    abstention_payoff,
    energy_margin_loss,
    inlier_energy,
    pal_loss,
    pebal_loss,
    smoothness,
    sparsity,
)

K = 19


def np_softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def np_lse(z):
    m = z.max(1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(1, keepdims=True)))[:, 0]


def np_blur(maps):
    # torchvision GaussianBlur(7, sigma=1) = separable normalised Gaussian of radius 3, reflect padding without
    # repeating the edge (scipy's "mirror")
    return np.stack([gaussian_filter(m, sigma=1.0, mode="mirror", truncate=3.0) for m in maps])


def np_pal(z, y, with_outliers, ood_reg=0.1):
    p = np_softmax(z)
    a = np_blur(np_lse(z[:, :K]) ** 2)
    boost = p[:, K] / a
    inl = (y != 255) & (y != OUTLIER)
    terms = []
    for b, i, j in zip(*np.nonzero(inl)):
        terms.append(np.log(p[b, y[b, i, j], i, j] + boost[b, i, j]))
    loss = -np.mean(terms)
    if with_outliers:
        outs = []
        for b, i, j in zip(*np.nonzero(y == OUTLIER)):
            for k in range(K):
                outs.append(np.log(max(p[b, k, i, j] + boost[b, i, j], 1e-7)))
        loss -= ood_reg * np.mean(outs)
    return loss


def batch(seed, b=3, h=12, w=14, outliers=True):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, (b, K + 1, h, w))
    y = rng.integers(0, K, (b, h, w))
    y[rng.random((b, h, w)) < 0.15] = 255
    if outliers:
        y[0, 2:6, 3:8] = OUTLIER
    return z, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_payoff_is_the_blurred_squared_energy(seed):
    z, _ = batch(seed)
    got = abstention_payoff(torch.tensor(z), K).numpy()
    np.testing.assert_allclose(got, np_blur(np_lse(z[:, :K]) ** 2), rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_pal_loss_matches_the_formula(seed):
    z, y = batch(seed)
    zt, yt = torch.tensor(z), torch.tensor(y)
    np.testing.assert_allclose(float(pal_loss(zt, yt, True)), np_pal(z, y, True), rtol=1e-5)
    clean = np.where(y == OUTLIER, 3, y)
    np.testing.assert_allclose(float(pal_loss(zt, torch.tensor(clean), False)), np_pal(z, clean, False), rtol=1e-5)


def test_energy_margin_smoothness_sparsity_match_the_formulas():
    z, y = batch(4)
    w = PebalWeights()
    e = -np_lse(z[:, :K])
    inl, out = (y != 255) & (y != OUTLIER), y == OUTLIER
    ref_margin = 0.5 * (np.mean(np.maximum(e[inl] - w.m_in, 0) ** 2) + np.mean(np.maximum(w.m_out - e[out], 0) ** 2))
    et = inlier_energy(torch.tensor(z), K)
    np.testing.assert_allclose(et.numpy(), e, rtol=1e-6)
    np.testing.assert_allclose(float(energy_margin_loss(et, torch.tensor(y))), ref_margin, rtol=1e-5)
    clean = np.where(out, 0, y)
    np.testing.assert_allclose(float(energy_margin_loss(et, torch.tensor(clean))),
                               np.mean(np.maximum(e[clean != 255] - w.m_in, 0) ** 2), rtol=1e-5)
    ref_smooth = (np.sum(np.diff(e, axis=1) ** 2) + np.sum(np.diff(e, axis=2) ** 2)) / 2
    np.testing.assert_allclose(float(smoothness(et)), ref_smooth, rtol=1e-5)
    np.testing.assert_allclose(float(sparsity(et[torch.tensor(out)])), np.linalg.norm(e[out]), rtol=1e-6)
    np.testing.assert_allclose(float(sparsity(et[torch.tensor(out)], "paper")), np.abs(e[out]).sum(), rtol=1e-6)


@pytest.mark.parametrize("form", ["code", "paper"])
def test_total_loss_weights_each_part_as_the_code_or_the_paper(form):
    z, y = batch(5)
    w = PebalWeights(form=form)
    total, parts = pebal_loss(torch.tensor(z), torch.tensor(y), w)
    has_out = (y == OUTLIER).reshape(len(y), -1).any(1)
    pal = np_pal(z[~has_out], y[~has_out], False) + np_pal(z[has_out], y[has_out], True)
    np.testing.assert_allclose(float(parts["pal_in"] + parts["pal_mix"]), pal, rtol=1e-5)
    reg = w.smooth_weight * float(parts["smoothness"]) + w.sparsity_weight * float(parts["sparsity"])
    margin = float(parts["energy_margin"])
    expect = pal + (0.1 * (margin + reg) if form == "code" else 0.1 * margin + reg)
    np.testing.assert_allclose(float(total), expect, rtol=1e-5)


def test_batches_of_only_clean_or_only_outlier_images_stay_finite():
    z, y = batch(6, outliers=False)
    t, parts = pebal_loss(torch.tensor(z), torch.tensor(y))
    assert torch.isfinite(t) and float(parts["pal_mix"]) == 0 and float(parts["sparsity"]) == 0
    y[:, 0, 0] = OUTLIER  # every image holds an outlier pixel: the inlier sub-batch is empty
    t, parts = pebal_loss(torch.tensor(z), torch.tensor(y))
    assert torch.isfinite(t) and float(parts["pal_in"]) == 0


def test_steps_on_the_energy_loss_raise_outlier_energy_and_lower_inlier_energy():
    z, y = batch(7)
    zt = torch.tensor(z, dtype=torch.float32, requires_grad=True)
    yt = torch.tensor(y)
    w = PebalWeights(m_in=-20.0, m_out=0.0)  # margins far from the start: both hinges are active
    out, inl = yt == OUTLIER, (yt != 255) & (yt != OUTLIER)
    e0 = inlier_energy(zt.detach(), K)
    opt = torch.optim.Adam([zt], lr=0.1)  # per-logit steps: the loss is a mean over pixels
    for _ in range(20):
        opt.zero_grad()
        energy_margin_loss(inlier_energy(zt, K), yt, w).backward()
        opt.step()
    e1 = inlier_energy(zt.detach(), K)
    assert e1[out].mean() > e0[out].mean() + 1
    assert e1[inl].mean() < e0[inl].mean() - 1


def test_steps_on_the_abstention_loss_move_outlier_mass_to_abstention():
    z, y = batch(8)
    zt = torch.tensor(z, dtype=torch.float32, requires_grad=True)
    yt = torch.tensor(y)
    out = yt == OUTLIER
    p0 = torch.softmax(zt.detach(), 1)
    e0 = inlier_energy(zt.detach(), K)
    opt = torch.optim.Adam([zt], lr=0.1)
    for _ in range(50):
        opt.zero_grad()
        pal_loss(zt, yt, True).backward()
        opt.step()
    p = torch.softmax(zt.detach(), 1)
    assert p[:, K][out].mean() > p0[:, K][out].mean() + 0.2  # outliers abstain
    assert p[:, :K].amax(1)[out].mean() < p0[:, :K].amax(1)[out].mean() - 0.2  # and back no inlier class
    assert inlier_energy(zt.detach(), K)[out].mean() > e0[out].mean()  # through the payoff: energy rises
    # inlier pixels gain probability on their labelled class
    inl = (yt != 255) & ~out
    py = p[:, :K].gather(1, torch.where(inl, yt, 0).unsqueeze(1)).squeeze(1)[inl]
    assert py.mean() > torch.softmax(torch.tensor(z), 1)[:, :K].gather(
        1, torch.where(inl, yt, 0).unsqueeze(1)).squeeze(1)[inl].mean()
