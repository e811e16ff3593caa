import numpy as np
import pytest
import torch

from synboost.losses.gan import (
    GANLossWeights,
    discriminator_losses,
    feature_matching_loss,
    generator_losses,
    hinge_d_loss,
    hinge_g_loss,
    kld_loss,
    vgg_loss,
)
from synboost.models import create_model
from synboost.models.vgg import VGG19Pyramid


def preds(seed, num_d=2, n_feats=3, b=2):
    """Random ``[scale][layer]`` discriminator outputs, logits last; scales shrink like a real D."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(num_d):
        s = 16 // 2 ** k
        out.append([torch.randn(b, 4, s, s, generator=g) for _ in range(n_feats)]
                   + [torch.randn(b, 1, s, s, generator=g) * 2])
    return out


def test_hinge_losses_against_numpy():
    fake, real = preds(0), preds(1)
    npr = [r[-1].numpy() for r in real]
    npf = [f[-1].numpy() for f in fake]
    d_ref = np.mean([np.maximum(1 - r, 0).mean() for r in npr]) + np.mean([np.maximum(1 + f, 0).mean() for f in npf])
    g_ref = np.mean([-f.mean() for f in npf])
    assert hinge_d_loss(fake, real).item() == pytest.approx(d_ref, rel=1e-6)
    assert hinge_g_loss(fake).item() == pytest.approx(g_ref, rel=1e-6)
    terms = discriminator_losses(fake, real)
    assert terms["total"].item() == pytest.approx(d_ref, rel=1e-6)
    assert terms["D_real"].item() == pytest.approx(np.mean([np.maximum(1 - r, 0).mean() for r in npr]), rel=1e-6)
    # a single tensor and a list of logits are accepted as well
    assert hinge_g_loss(fake[0][-1]).item() == pytest.approx(-npf[0].mean(), rel=1e-6)


def test_feature_matching_against_numpy():
    fake, real = preds(2, num_d=3, n_feats=4), preds(3, num_d=3, n_feats=4)
    per_scale = [sum(np.abs(f.numpy() - r.numpy()).mean() for f, r in zip(fk[:-1], rk[:-1]))
                 for fk, rk in zip(fake, real)]
    assert feature_matching_loss(fake, real).item() == pytest.approx(np.mean(per_scale), rel=1e-6)
    assert feature_matching_loss(fake, real, layer_mean=True).item() == pytest.approx(np.mean(per_scale) / 4,
                                                                                      rel=1e-6)
    # the real features are targets: no gradient flows into them
    real_leaf = [[t.clone().requires_grad_() for t in s] for s in real]
    fake_leaf = [[t.clone().requires_grad_() for t in s] for s in fake]
    feature_matching_loss(fake_leaf, real_leaf).backward()
    assert real_leaf[0][0].grad is None and fake_leaf[0][0].grad is not None
    assert fake_leaf[0][-1].grad is None  # the logits are not matched


def test_kld_against_numpy():
    g = torch.Generator().manual_seed(4)
    mu, logvar = torch.randn(3, 16, generator=g), torch.randn(3, 16, generator=g)
    m, lv = mu.double().numpy(), logvar.double().numpy()
    ref = -0.5 * np.sum(1 + lv - m ** 2 - np.exp(lv))
    assert kld_loss(mu, logvar).item() == pytest.approx(ref, rel=1e-5)
    assert kld_loss(mu, logvar, reduction="mean").item() == pytest.approx(ref / 3, rel=1e-5)
    assert kld_loss(torch.zeros(2, 4), torch.zeros(2, 4)).item() == 0  # the prior itself
    with pytest.raises(ValueError):
        kld_loss(mu, logvar, reduction="none")


def test_vgg_loss_weights_and_detached_real():
    torch.manual_seed(5)
    vgg = VGG19Pyramid()
    assert not any(p.requires_grad for p in vgg.parameters())
    fake = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_()
    real = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_()
    loss = vgg_loss(vgg, fake, real)
    with torch.no_grad():
        ff, fr = vgg(fake), vgg(real)
    ref = sum(w * (a - b).abs().mean() for w, a, b in zip((1 / 32, 1 / 16, 1 / 8, 1 / 4, 1), ff, fr))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    loss.backward()
    assert real.grad is None and fake.grad is not None and fake.grad.abs().sum() > 0
    assert vgg_loss(vgg, real.detach(), real.detach()).item() == 0


def test_weights_defaults_and_generator_terms():
    w = GANLossWeights()
    assert (w.gan, w.feat, w.vgg, w.kld) == (1.0, 10.0, 10.0, 0.05)
    fake, real = preds(6), preds(7)
    mu, logvar = torch.randn(2, 8), torch.randn(2, 8)
    out = generator_losses(fake, real, mu=mu, logvar=logvar)
    assert set(out) == {"G_GAN", "G_feat", "KLD", "total"}
    assert out["G_feat"].item() == pytest.approx(10 * feature_matching_loss(fake, real).item(), rel=1e-6)
    assert out["KLD"].item() == pytest.approx(0.05 * kld_loss(mu, logvar).item(), rel=1e-6)
    assert out["total"].item() == pytest.approx(sum(v.item() for k, v in out.items() if k != "total"), rel=1e-6)


def test_one_discriminator_step_raises_the_margin():
    torch.manual_seed(8)
    d = create_model("multiscale_discriminator", label_nc=2, ndf=8, n_layers=2, num_D=2)
    seg = torch.zeros(4, 2, 32, 32)
    seg[:, 0] = 1
    real = torch.rand(4, 3, 32, 32) * 0.2 + 0.6  # toy batch: bright reals, dark fakes
    fake = torch.rand(4, 3, 32, 32) * 0.2 - 0.6

    def margin():  # eval: spectral norm uses its stored vectors, no power-iteration update
        d.eval()
        with torch.no_grad():
            pr, pf = d(seg, real), d(seg, fake)
        d.train()
        return sum(r[-1].mean() - f[-1].mean() for r, f in zip(pr, pf)).item()

    d.train()
    with torch.no_grad():
        d(seg, real)  # let the power iteration settle, so the step is what moves the margin
    before = margin()
    opt = torch.optim.SGD(d.parameters(), lr=0.01)
    loss = hinge_d_loss(d(seg, fake), d(seg, real))
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert margin() > before
