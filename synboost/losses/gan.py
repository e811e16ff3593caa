"""GAN losses of the synthesis stage, as SPADE (NVlabs/SPADE ``models/networks/loss.py`` and
``models/pix2pix_model.py``) computes them; SynBoost's synthesis (CC-FPSE) inherits the same set.

Discriminator outputs are ``[scale][layer]`` lists (``MultiscaleDiscriminator``), the patch logits last; every
function takes the fake predictions first, then the real ones (SPADE's ``discriminate`` order).

- hinge, D:  L_D = mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))   (each mean over a scale's patches and batch,
  then averaged over scales; SPADE ``GANLoss(gan_mode='hinge')`` with ``for_discriminator=True``)
- hinge, G:  L_G = -mean(D(fake))   averaged over scales (SPADE: ``-torch.mean(input)``)
- feature matching (pix2pixHD eq. 4, SPADE ``GAN_Feat_loss``):
  L_FM = sum_k (1/num_D) sum_j || F_kj(fake) - F_kj(real).detach() ||_1 (mean absolute error per layer),
  over the intermediate layers j of every scale k (the final logits excluded). SPADE averages over the scales and
  *sums* over the layers; ``layer_mean=True`` averages over the layers too.
- VGG perceptual (pix2pixHD / SPADE ``VGGLoss``): L_VGG = sum_i w_i * mean|phi_i(fake) - phi_i(real).detach()|,
  phi = VGG19 relu1_1 .. relu5_1, w = (1/32, 1/16, 1/8, 1/4, 1). SPADE feeds the [-1, 1] images to VGG19 without
  ImageNet normalisation (``imagenet_normalize=False``, the default here, reproduces that).
- KL of the VAE (Kingma & Welling 2014, appendix B; SPADE ``KLDLoss``):
  L_KL = -0.5 * sum(1 + logvar - mu^2 - exp(logvar)), summed over the latent dimensions **and the batch**
  (SPADE does not average; ``reduction='mean'`` divides by the batch size).
- weights (SPADE paper sec. 4 / its options): lambda_feat 10, lambda_vgg 10, lambda_kld 0.05, GAN term 1.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

from synboost.data.transforms import IMAGENET_MEAN, IMAGENET_STD

VGG_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


class GANLossWeights(NamedTuple):
    """The SPADE defaults (``--lambda_feat 10 --lambda_vgg 10 --lambda_kld 0.05``)."""
    gan: float = 1.0
    feat: float = 10.0
    vgg: float = 10.0
    kld: float = 0.05


Preds = Sequence[Sequence[torch.Tensor]] | Sequence[torch.Tensor] | torch.Tensor


def _logits(pred: Preds) -> list[torch.Tensor]:
    """The patch logits of every scale from ``[scale][layer]`` lists, ``[scale]`` tensors or one tensor."""
    if isinstance(pred, torch.Tensor):
        return [pred]
    return [p[-1] if isinstance(p, (list, tuple)) else p for p in pred]


def hinge_d_loss(pred_fake: Preds, pred_real: Preds) -> torch.Tensor:
    """mean(relu(1 - D(real))) + mean(relu(1 + D(fake))), each averaged over the scales."""
    real, fake = _logits(pred_real), _logits(pred_fake)
    loss_real = sum(F.relu(1 - r).mean() for r in real) / len(real)
    loss_fake = sum(F.relu(1 + f).mean() for f in fake) / len(fake)
    return loss_real + loss_fake


def hinge_d_terms(pred_fake: Preds, pred_real: Preds) -> dict[str, torch.Tensor]:
    """The two halves of ``hinge_d_loss`` separately (SPADE logs ``D_real`` and ``D_Fake``)."""
    real, fake = _logits(pred_real), _logits(pred_fake)
    return {"D_real": sum(F.relu(1 - r).mean() for r in real) / len(real),
            "D_fake": sum(F.relu(1 + f).mean() for f in fake) / len(fake)}


def hinge_g_loss(pred_fake: Preds) -> torch.Tensor:
    """-mean(D(fake)), averaged over the scales."""
    fake = _logits(pred_fake)
    return -sum(f.mean() for f in fake) / len(fake)


def feature_matching_loss(pred_fake: Sequence[Sequence[torch.Tensor]], pred_real: Sequence[Sequence[torch.Tensor]],
                          layer_mean: bool = False) -> torch.Tensor:
    """L1 between the discriminator's intermediate features of fake and (detached) real, SPADE's reduction:
    averaged over the scales, summed over the layers (``layer_mean=True``: averaged over them as well)."""
    num_d = len(pred_fake)
    total = pred_fake[0][0].new_zeros(())
    for fake_k, real_k in zip(pred_fake, pred_real):
        n = len(fake_k) - 1
        s = sum(F.l1_loss(f, r.detach()) for f, r in zip(fake_k[:n], real_k[:n]))
        total = total + (s / n if layer_mean and n else s) / num_d
    return total


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> ImageNet-normalised."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x + 1) / 2 - mean) / std


def vgg_loss(vgg19, fake: torch.Tensor, real: torch.Tensor, weights: Sequence[float] = VGG_WEIGHTS,
             imagenet_normalize_inputs: bool = False) -> torch.Tensor:
    """sum_i w_i * L1(phi_i(fake), phi_i(real).detach()) with ``vgg19`` a ``VGG19Pyramid`` (frozen).
    Images in [-1, 1]; SPADE passes them as they are (default), ``imagenet_normalize_inputs`` converts first."""
    if imagenet_normalize_inputs:
        fake, real = imagenet_normalize(fake), imagenet_normalize(real)
    ff, fr = vgg19(fake), vgg19(real)
    return sum(w * F.l1_loss(a, b.detach()) for w, a, b in zip(weights, ff, fr))


def kld_loss(mu: torch.Tensor, logvar: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) = -0.5 * sum(1 + logvar - mu^2 - exp(logvar)).
    ``reduction='sum'`` (SPADE: over latent dims and batch) or ``'mean'`` (per sample, averaged over the batch)."""
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    if reduction == "sum":
        return kl
    if reduction == "mean":
        return kl / mu.shape[0]
    raise ValueError(f"reduction must be 'sum' or 'mean', got '{reduction}'")


def generator_losses(pred_fake, pred_real, fake=None, real=None, vgg19=None, mu=None, logvar=None,
                     weights: GANLossWeights = GANLossWeights(), feat: bool = True,
                     imagenet_normalize_inputs: bool = False) -> dict[str, torch.Tensor]:
    """SPADE's ``compute_generator_loss``: the weighted terms by name plus ``total``. VGG when ``vgg19`` is
    given, KL when ``mu``/``logvar`` are, feature matching when ``feat``."""
    out = {"G_GAN": weights.gan * hinge_g_loss(pred_fake)}
    if feat:
        out["G_feat"] = weights.feat * feature_matching_loss(pred_fake, pred_real)
    if vgg19 is not None:
        out["G_vgg"] = weights.vgg * vgg_loss(vgg19, fake, real,
                                              imagenet_normalize_inputs=imagenet_normalize_inputs)
    if mu is not None and logvar is not None:
        out["KLD"] = weights.kld * kld_loss(mu, logvar)
    out["total"] = sum(out.values())
    return out


def discriminator_losses(pred_fake, pred_real) -> dict[str, torch.Tensor]:
    """SPADE's ``compute_discriminator_loss`` (predictions on a detached fake and on the real): terms + ``total``."""
    out = hinge_d_terms(pred_fake, pred_real)
    out["total"] = out["D_real"] + out["D_fake"]
    return out
