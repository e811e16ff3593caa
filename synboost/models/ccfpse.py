"""CC-FPSE, the synthesis network of the official SynBoost (Liu et al., NeurIPS 2019, "Learning to Predict
Layout-to-image Conditional Convolutions"; vendored as ``image_synthesis/`` in giandbt/synboost), with the
official parameter names, so ``latest_net_G.pth`` loads strictly into :class:`CCFPSEGenerator` and
``latest_net_E.pth`` into its ``encoder`` (keys ``encoder.<netE key>``).

The released Cityscapes model (``options/config_class.py`` + ``image_synthesis/data/cityscapes_dataset.py``):
35 label ids one-hot, no dontcare channel, + 1 instance-edge channel (semantic_nc 36), ngf 64, z_dim 256, VAE
encoder on, 6 up-samplings ('more', forced by ``dataset_mode == 'cityscapes'``), 256x512 output (latent grid 4x8),
norm_G 'spectralsync_batch', norm_E 'spectralinstance'.

Layout (``generator.py``, ``architecture.py``, ``condconv.py``, ``normalization.py``):

- ``fc``: Linear(z_dim, 16*ngf*sh*sw) on z (VAE), or a 3x3 conv on the label map resized to the grid.
- Label feature pyramid ("global-context-aware weight prediction"): ``labelenc1..L`` (3x3 convs, stride 1 then 2,
  ngf channels; L = n + 1), ``labellat1..n`` (1x1), ``labeldec1..n`` (3x3); each a spectral-norm conv without bias
  + BatchNorm (affine) + LeakyReLU 0.2. Top-down: ``out_1 = enc_L``,
  ``out_{i+1} = dec_i(up(out_i) + lat_i(enc_{L-i}))``.
- ``head_0``, ``G_middle_0``, ``G_middle_1`` (16*ngf), ``up_0..up_3`` (halving to ngf): :class:`DepthsepCCBlock`,
  conditioned on cat(label map resized nearest, pyramid level at the block's resolution).
- ``conv_img`` on LeakyReLU 0.2 -> tanh.

:class:`DepthsepCCBlock`: from the condition, four small nets (``gen_weights1/2``: 3x3 conv 128 + ReLU + 3x3 conv
to 9 weights per channel; ``gen_se_weights1/2``: to one sigmoid gate per channel) predict per-pixel depth-wise 3x3
kernels and channel gates. ``dx = lrelu(gate1 * conv_1(dwconv(norm_1(x), w1)))``,
``dx = lrelu(gate2 * conv_3(dwconv(norm_2(dx), w2)))``, output ``shortcut(x) + dx`` with the shortcut a
spectral-norm 1x1 conv after a SPADE (``norm_s.mlp_shared/mlp_gamma/mlp_beta``, param-free BatchNorm) when the
width changes. ``norm_0`` and each ``DepthConv.norm_layer`` are BatchNorms the official code creates but never
uses; they are kept (unused) because the checkpoint holds their entries.

Our pipeline's interface (``generator.generator_input`` / ``resynthesize``): built with ``train_to_label_id`` (the
label id of each train id; ``synboost.detectors.components.build_ccfpse`` passes the Cityscapes table, road 7, ...,
bicycle 33),
the model advertises ``label_nc = 19`` (train ids) and ``edge_channel``; ``forward`` then receives the 19 train-id
one-hot channels (+ edges) and maps them to the 35 label-id channels itself, as the official inference loop over
``id_to_trainid`` does; ignore (255, an all-zero one-hot) -> label
id 0 "unlabeled" (the official code never sees it: its map is an argmax). The edge channel comes from the
train-id map, which has the same boundaries as the label-id map the official inference passes as its "instance"
map (the mapping is one-to-one). A tensor with ``semantic_nc`` (36) channels is taken as the native input
(:func:`label_id_input` builds it from label-id and instance maps).

Latent: with the encoder and an image, z = mu when ``deterministic`` (the official code samples
mu + eps * sigma: design note sec. 9 item 12); without an image z = 0 (the prior's mode), or z ~ N(0, I).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from synboost.models.generator import ConvEncoder, instance_edges, labels_to_onehot
from synboost.models.registry import register_model

HIDDEN = 128  #: hidden width of the weight-prediction nets and of SPADE (hard-coded in the official code)


class DepthConv(nn.Module):
    """Per-pixel depth-wise 3x3 convolution with predicted kernels (``condconv.DepthConv``, stride 1, zero pad 1).

    ``weights``: (N, 9 * C, H, W), channel c's kernel at ``9 * c + 3 * i + j`` (row i, column j of the window).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm_layer = nn.BatchNorm2d(channels)  # unused, as in the official code (its keys are in the file)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        k = weights.view(n, c, 9, h, w)
        xp = F.pad(x, (1, 1, 1, 1))
        out = k[:, :, 0] * xp[:, :, 0:h, 0:w]
        for t in range(1, 9):
            i, j = divmod(t, 3)
            out = out + k[:, :, t] * xp[:, :, i:i + h, j:j + w]
        return out


class SPADE(nn.Module):
    """CC-FPSE's SPADE (``normalization.SPADE``): param-free BatchNorm, then ``(1 + gamma) * x + beta`` from a 3x3
    conv + ReLU (``mlp_shared``) and two 3x3 convs (``mlp_gamma``, ``mlp_beta``) on the condition."""

    def __init__(self, norm_nc: int, cond_nc: int, hidden: int = HIDDEN):
        super().__init__()
        self.param_free_norm = nn.BatchNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(cond_nc, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.shape[2:] != x.shape[2:]:
            cond = F.interpolate(cond, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(cond)
        return self.param_free_norm(x) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


def _predictor(cond_nc: int, out_nc: int, gate: bool) -> nn.Sequential:
    layers = [nn.Conv2d(cond_nc, HIDDEN, 3, padding=1), nn.ReLU(), nn.Conv2d(HIDDEN, out_nc, 3, padding=1)]
    return nn.Sequential(*layers, nn.Sigmoid()) if gate else nn.Sequential(*layers)


class DepthsepCCBlock(nn.Module):
    """The conditional-convolution residual block (``architecture.DepthsepCCBlock``); needs ``fout <= fin``."""

    def __init__(self, fin: int, fout: int, cond_nc: int):
        super().__init__()
        if fout > fin:  # the second depth-wise conv runs on fmiddle channels with fout * 9 predicted weights
            raise ValueError(f"DepthsepCCBlock needs fout <= fin, got {fin} -> {fout}")
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.gen_weights1 = _predictor(cond_nc, fin * 9, gate=False)
        self.gen_weights2 = _predictor(cond_nc, fout * 9, gate=False)
        self.gen_se_weights1 = _predictor(cond_nc, fmiddle, gate=True)
        self.gen_se_weights2 = _predictor(cond_nc, fout, gate=True)
        self.conv_0 = DepthConv(fin)
        self.norm_0 = nn.BatchNorm2d(fmiddle)  # unused, as in the official code
        self.conv_1 = nn.Conv2d(fin, fmiddle, 1)
        self.norm_1 = nn.BatchNorm2d(fin)
        self.conv_2 = DepthConv(fmiddle)
        self.norm_2 = nn.BatchNorm2d(fmiddle)
        self.conv_3 = nn.Conv2d(fmiddle, fout, 1)
        if self.learned_shortcut:
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, 1, bias=False))
            self.norm_s = SPADE(fin, cond_nc)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        cond = F.interpolate(cond, size=x.shape[2:], mode="nearest")
        x_s = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        dx = self.conv_1(self.conv_0(self.norm_1(x), self.gen_weights1(cond)))
        dx = F.leaky_relu(dx * self.gen_se_weights1(cond), 0.2)
        dx = self.conv_3(self.conv_2(self.norm_2(dx), self.gen_weights2(cond)))
        dx = F.leaky_relu(dx * self.gen_se_weights2(cond), 0.2)
        return x_s + dx


def _pyramid_layer(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """norm_G 'spectralsync_batch': spectral-norm conv (bias dropped) + BatchNorm (affine) + LeakyReLU 0.2."""
    conv = spectral_norm(nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False))
    return nn.Sequential(nn.Sequential(conv, nn.BatchNorm2d(cout)), nn.LeakyReLU(0.2))


def label_id_input(label_ids: torch.Tensor, instances: torch.Tensor | None = None, num_label_ids: int = 35,
                   edge_channel: bool = True) -> torch.Tensor:
    """The native CC-FPSE input from (B, H, W) Cityscapes label ids (0..num_label_ids-1): one-hot (+ the edges of
    the ``instances`` map, or of the label map when none is given, as the official SynBoost inference)."""
    onehot = labels_to_onehot(label_ids, num_label_ids, ignore=-1)
    if edge_channel:
        onehot = torch.cat([onehot, instance_edges(label_ids if instances is None else instances)], 1)
    return onehot


class CCFPSEGenerator(nn.Module):
    """``num_label_ids`` (official ``label_nc``), ``dontcare`` (``contain_dontcare_label``), ``edge_channel``
    (``not no_instance``), ``num_upsampling`` 6 ('more', Cityscapes) or 5 ('normal'); ``with_encoder`` adds the
    VAE encoder (``ConvEncoder``, width ngf as the official ``ndf = opt.ngf``) as ``self.encoder``.
    ``train_to_label_id``: the label id of each train id, for the train-id input of our pipeline; without it the
    model takes only its native label-id input."""

    def __init__(self, num_label_ids: int = 35, dontcare: bool = False, edge_channel: bool = True, ngf: int = 64,
                 z_dim: int = 256, use_vae: bool = True, with_encoder: bool = True, num_upsampling: int = 6,
                 out_size: tuple[int, int] = (256, 512), train_to_label_id: Sequence[int] = ()):
        super().__init__()
        if num_upsampling not in (5, 6):
            raise ValueError(f"num_upsampling must be 5 ('normal') or 6 ('more'), got {num_upsampling}")
        h, w = out_size
        n = num_upsampling
        if h % 2 ** n or w % 2 ** n or h < 2 ** n or w < 2 ** n:
            raise ValueError(f"out_size {tuple(out_size)} must be a positive multiple of 2**{n} = {2 ** n}")
        self.sh, self.sw = h // 2 ** n, w // 2 ** n
        self.out_size = (h, w)
        self.num_upsampling, self.ngf, self.z_dim, self.use_vae = n, ngf, z_dim, use_vae
        self.num_ids = num_label_ids + (1 if dontcare else 0)
        self.semantic_nc = self.num_ids + (1 if edge_channel else 0)
        # the interface of generator.generator_input: what the pipeline one-hot encodes for this model
        ids = [int(i) for i in train_to_label_id]
        if ids and max(ids) >= self.num_ids:
            raise ValueError(f"num_label_ids={num_label_ids} cannot hold the label ids of the train ids "
                             f"(up to {max(ids)})")
        self.label_nc, self.edge_channel, self._train_to_id = len(ids), edge_channel, ids

        nf = ngf
        if use_vae:
            self.fc = nn.Linear(z_dim, 16 * nf * self.sh * self.sw)
        else:
            self.fc = nn.Conv2d(self.semantic_nc, 16 * nf, 3, padding=1)
        levels = n + 1
        for i in range(1, levels + 1):
            cin, stride = (self.semantic_nc, 1) if i == 1 else (nf, 2)
            self.add_module(f"labelenc{i}", _pyramid_layer(cin, nf, 3, stride))
        for i in range(1, n + 1):
            self.add_module(f"labellat{i}", _pyramid_layer(nf, nf, 1))
        for i in range(1, n + 1):
            self.add_module(f"labeldec{i}", _pyramid_layer(nf, nf, 3))
        cond = self.semantic_nc + nf
        self.head_0 = DepthsepCCBlock(16 * nf, 16 * nf, cond)
        self.G_middle_0 = DepthsepCCBlock(16 * nf, 16 * nf, cond)
        self.G_middle_1 = DepthsepCCBlock(16 * nf, 16 * nf, cond)
        self.up_0 = DepthsepCCBlock(16 * nf, 8 * nf, cond)
        self.up_1 = DepthsepCCBlock(8 * nf, 4 * nf, cond)
        self.up_2 = DepthsepCCBlock(4 * nf, 2 * nf, cond)
        self.up_3 = DepthsepCCBlock(2 * nf, nf, cond)
        self.conv_img = nn.Conv2d(nf, 3, 3, padding=1)
        self.encoder = ConvEncoder(z_dim, nef=nf, size=256, spectral=True) if use_vae and with_encoder else None

    @staticmethod
    def up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def semantics(self, seg: torch.Tensor) -> torch.Tensor:
        """The native (B, semantic_nc, H, W) input from a train-id one-hot (+ edges) or a native tensor."""
        c = seg.shape[1]
        if c == self.semantic_nc:
            return seg
        if not self.label_nc:
            raise ValueError(f"expected the native {self.semantic_nc} label-id channels, got {c} (built without a "
                             "train-id table: synboost.detectors.components.build_ccfpse gives it the Cityscapes one)")
        if c != self.label_nc + (1 if self.edge_channel else 0):
            raise ValueError(f"expected {self.label_nc} train-id channels{' + edge' if self.edge_channel else ''} "
                             f"or the native {self.semantic_nc} label-id channels, got {c}")
        train = seg[:, :self.label_nc]
        out = seg.new_zeros(seg.shape[0], self.semantic_nc, *seg.shape[2:])
        out[:, self._train_to_id] = train
        out[:, 0] += 1 - train.sum(1)  # ignore (all-zero one-hot) -> label id 0 "unlabeled"
        if self.edge_channel:
            out[:, -1] = seg[:, -1]
        return out

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.encoder is None:
            raise RuntimeError("this CC-FPSE generator has no VAE encoder (imported without latest_net_E.pth?)")
        return self.encoder(image)

    def latent(self, batch: int, device, dtype, image=None, deterministic: bool = True):
        """(z, mu, logvar); mu/logvar are None when no image was encoded."""
        if image is None or self.encoder is None:
            z = (torch.zeros if deterministic else torch.randn)(batch, self.z_dim, device=device, dtype=dtype)
            return z, None, None
        mu, logvar = self.encode(image)
        if deterministic:
            return mu, mu, logvar
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar), mu, logvar

    def pyramid(self, seg: torch.Tensor) -> list[torch.Tensor]:
        """The top-down label features, coarsest (the latent grid) first, one per resolution."""
        enc = [seg]
        for i in range(1, self.num_upsampling + 2):
            enc.append(getattr(self, f"labelenc{i}")(enc[-1]))
        outs = [enc[-1]]
        for i in range(1, self.num_upsampling + 1):
            lat = getattr(self, f"labellat{i}")(enc[self.num_upsampling + 1 - i])
            outs.append(getattr(self, f"labeldec{i}")(self.up(outs[-1]) + lat))
        return outs

    def decode(self, seg: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Native ``seg`` at ``out_size`` (+ z with the VAE) -> image in [-1, 1]."""
        if self.use_vae:
            x = self.fc(z).view(-1, 16 * self.ngf, self.sh, self.sw)
        else:
            x = self.fc(F.interpolate(seg, size=(self.sh, self.sw), mode="nearest"))
        feats = self.pyramid(seg)
        level = 0
        for name in ("head_0", "G_middle_0", "G_middle_1", "up_0", "up_1", "up_2", "up_3"):
            # 'normal' (5) keeps G_middle_1 at G_middle_0's resolution; 'more' (6) up-samples before every block
            if name != "head_0" and not (name == "G_middle_1" and self.num_upsampling == 5):
                x = self.up(x)
                level += 1
            cond = torch.cat([F.interpolate(seg, size=x.shape[2:], mode="nearest"), feats[level]], 1)
            x = getattr(self, name)(x, cond)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))

    def forward(self, seg: torch.Tensor, image: torch.Tensor | None = None, deterministic: bool = True,
                z: torch.Tensor | None = None, return_latent: bool = False):
        """``seg``: (B, 19 [+1], h, w) train-id one-hot (+ edges), or (B, semantic_nc, h, w) native; resized
        nearest to ``out_size`` if needed. ``image``: (B, 3, H, W) in [-1, 1] for the encoder. Returns
        (B, 3, *out_size) in [-1, 1], or (fake, mu, logvar) with ``return_latent``."""
        seg = self.semantics(seg)
        if tuple(seg.shape[2:]) != self.out_size:
            seg = F.interpolate(seg, size=self.out_size, mode="nearest")
        mu = logvar = None
        if self.use_vae and z is None:
            z, mu, logvar = self.latent(seg.shape[0], seg.device, seg.dtype, image, deterministic)
        fake = self.decode(seg, z)
        return (fake, mu, logvar) if return_latent else fake


@register_model("ccfpse_generator")
def ccfpse_generator(**kwargs) -> CCFPSEGenerator:
    """Registered builder of :class:`CCFPSEGenerator`."""
    return CCFPSEGenerator(**kwargs)
