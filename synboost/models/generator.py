"""The SPADE generator (Park et al., CVPR 2019; NVlabs/SPADE ``SPADEGenerator``) with its VAE style encoder.

SynBoost's released synthesis net is CC-FPSE (design note sec. 5); its "light version" is this SPADE generator.
Layout (names as NVlabs SPADE): ``fc`` (z -> 16*ngf x sh x sw, or a 3x3 conv on the label map resized to the
coarse grid without VAE), ``head_0``, ``G_middle_0``, ``G_middle_1`` (16*ngf), ``up_0..up_3`` (halving channels),
``up_4`` (only with 7 up-samplings), ``conv_img`` -> tanh. ``num_upsampling`` = 5 ('normal'), 6 ('more', the
Cityscapes setting), 7 ('most'); 4 is a small-world extra without the up-sampling after ``head_0``. The coarse grid
is ``H / 2**n x W / 2**n``.

``forward(onehot, image=None, deterministic=True)``: with the VAE and an image, z = mu of the encoded image when
``deterministic`` (the official code always samples, design note sec. 9 item 12), z ~ N(mu, sigma) otherwise;
with the VAE and no image, z = 0 (the prior's mode) or z ~ N(0, I). Output in [-1, 1], shape (B, 3, H, W).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synboost.models.layout import to_layout_of
from synboost.models.registry import register_model
from synboost.models.spade import SPADEResnetBlock, maybe_spectral


def labels_to_onehot(labels: torch.Tensor, num_classes: int, ignore: int = 255,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, H, W) integer labels -> (B, C, H, W) one-hot; ``ignore`` pixels are all-zero vectors.

    Any other value outside [0, num_classes) is an error (it would silently vanish otherwise).
    """
    if labels.dim() != 3:
        raise ValueError(f"labels must be (B, H, W), got shape {tuple(labels.shape)}")
    labels = labels.long()
    valid = (labels >= 0) & (labels < num_classes)
    if not bool((valid | (labels == ignore)).all()):
        bad = labels[~(valid | (labels == ignore))].unique()[:5].tolist()
        raise ValueError(f"labels hold values outside [0, {num_classes}) that are not the ignore id {ignore}: {bad}")
    onehot = torch.zeros(labels.shape[0], num_classes, *labels.shape[1:], dtype=dtype, device=labels.device)
    return onehot.scatter_(1, labels.clamp(0, num_classes - 1).unsqueeze(1), valid.unsqueeze(1).to(dtype))


def instance_edges(ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, H, W) instance (or semantic) ids -> (B, 1, H, W): 1 where any 4-neighbour has another id (SPADE)."""
    t = ids.unsqueeze(1)
    edge = torch.zeros_like(t, dtype=torch.bool)
    dw = t[..., :, 1:] != t[..., :, :-1]
    dh = t[..., 1:, :] != t[..., :-1, :]
    edge[..., :, 1:] |= dw
    edge[..., :, :-1] |= dw
    edge[..., 1:, :] |= dh
    edge[..., :-1, :] |= dh
    return edge.to(dtype)


class ConvEncoder(nn.Module):
    """SPADE's VAE encoder: resize to ``size`` x ``size`` (bilinear), six stride-2 3x3 convs with spectral norm and
    instance norm (``layer{i}.0`` conv, ``layer{i}.1`` norm), LeakyReLU 0.2, then ``fc_mu`` / ``fc_var``."""

    def __init__(self, z_dim: int = 256, nef: int = 64, size: int = 256, spectral: bool = True):
        super().__init__()
        if size % 64 or size < 128:  # six stride-2 convs; instance norm needs > 1 pixel at the end
            raise ValueError(f"encoder size must be a multiple of 64 and >= 128, got {size}")
        self.size = size
        chans = [3, nef, 2 * nef, 4 * nef, 8 * nef, 8 * nef, 8 * nef]
        for i in range(6):
            conv = maybe_spectral(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1, bias=False), spectral)
            self.add_module(f"layer{i + 1}", nn.Sequential(conv, nn.InstanceNorm2d(chans[i + 1], affine=False)))
        s0 = size // 64
        self.fc_mu = nn.Linear(8 * nef * s0 * s0, z_dim)
        self.fc_var = nn.Linear(8 * nef * s0 * s0, z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(x.shape[2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        for i in range(6):
            x = getattr(self, f"layer{i + 1}")(x if i == 0 else F.leaky_relu(x, 0.2))
        x = F.leaky_relu(x, 0.2).flatten(1)
        return self.fc_mu(x), self.fc_var(x)


class SPADEGenerator(nn.Module):
    """SPADE's generator (module docstring: layout, latent); ``use_vae`` adds the style encoder ``encoder``."""

    def __init__(self, label_nc: int = 19, ngf: int = 64, num_upsampling: int = 6, z_dim: int = 256,
                 use_vae: bool = True, edge_channel: bool = False, out_size: tuple[int, int] = (256, 512),
                 crop_size: int | None = None, aspect_ratio: float | None = None, norm: str = "batch",
                 spectral: bool = True, nef: int = 64, encoder_size: int = 256, spade_hidden: int = 128):
        super().__init__()
        if num_upsampling not in (4, 5, 6, 7):
            raise ValueError(f"num_upsampling must be 4..7 (SPADE: 5 normal, 6 more, 7 most), got {num_upsampling}")
        n = num_upsampling
        if crop_size is not None:  # SPADE's options: width = crop_size, height = width / aspect_ratio
            sw = crop_size // 2 ** n
            sh = round(sw / (aspect_ratio or 1.0))
        else:
            h, w = out_size
            if h % 2 ** n or w % 2 ** n:
                raise ValueError(f"out_size {tuple(out_size)} must be divisible by 2**num_upsampling = {2 ** n}")
            sh, sw = h // 2 ** n, w // 2 ** n
        if sh < 1 or sw < 1:
            raise ValueError(f"output too small for {n} up-samplings")
        self.label_nc, self.edge_channel, self.use_vae, self.z_dim = label_nc, edge_channel, use_vae, z_dim
        self.num_upsampling, self.sh, self.sw = n, sh, sw
        self.out_size = (sh * 2 ** n, sw * 2 ** n)
        self.semantic_nc = label_nc + (1 if edge_channel else 0)
        nf = ngf

        def block(fin, fout):
            return SPADEResnetBlock(fin, fout, self.semantic_nc, norm, spectral, spade_hidden)

        if use_vae:
            self.encoder = ConvEncoder(z_dim, nef, encoder_size, spectral)
            self.fc = nn.Linear(z_dim, 16 * nf * sh * sw)
        else:
            self.fc = nn.Conv2d(self.semantic_nc, 16 * nf, 3, padding=1)
        self.head_0 = block(16 * nf, 16 * nf)
        self.G_middle_0 = block(16 * nf, 16 * nf)
        self.G_middle_1 = block(16 * nf, 16 * nf)
        self.up_0 = block(16 * nf, 8 * nf)
        self.up_1 = block(8 * nf, 4 * nf)
        self.up_2 = block(4 * nf, 2 * nf)
        self.up_3 = block(2 * nf, nf)
        final_nc = nf
        if n == 7:
            self.up_4 = block(nf, nf // 2)
            final_nc = nf // 2
        self.conv_img = nn.Conv2d(final_nc, 3, 3, padding=1)

    @staticmethod
    def up(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of an image in [-1, 1] (the VAE style encoder)."""
        if not self.use_vae:
            raise RuntimeError("this generator was built with use_vae=False: it has no style encoder")
        return self.encoder(image)

    def latent(self, batch: int, device, dtype, image=None, deterministic: bool = True):
        """(z, mu, logvar); mu/logvar are None without an image."""
        if image is None:
            z = (torch.zeros if deterministic else torch.randn)(batch, self.z_dim, device=device, dtype=dtype)
            return z, None, None
        mu, logvar = self.encode(image)
        if deterministic:
            return mu, mu, logvar
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar), mu, logvar  # reparameterisation

    def decode(self, seg: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if self.use_vae:
            x = self.fc(z).view(-1, self.fc.out_features // (self.sh * self.sw), self.sh, self.sw)
        else:
            x = self.fc(F.interpolate(seg, size=(self.sh, self.sw), mode="nearest"))
        x = self.head_0(x, seg)
        if self.num_upsampling >= 5:
            x = self.up(x)
        x = self.G_middle_0(x, seg)
        if self.num_upsampling >= 6:
            x = self.up(x)
        x = self.G_middle_1(x, seg)
        for name in ("up_0", "up_1", "up_2", "up_3") + (("up_4",) if self.num_upsampling == 7 else ()):
            x = getattr(self, name)(self.up(x), seg)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))

    def forward(self, onehot: torch.Tensor, image: torch.Tensor | None = None, deterministic: bool = True,
                z: torch.Tensor | None = None, return_latent: bool = False):
        """``onehot``: (B, semantic_nc, h, w) (any h, w: SPADE resizes it nearest); ``image``: (B, 3, H, W) in
        [-1, 1] for the VAE encoder. Returns (B, 3, *out_size) in [-1, 1], or (fake, mu, logvar) with
        ``return_latent`` (mu, logvar None when no image was encoded)."""
        if onehot.shape[1] != self.semantic_nc:
            raise ValueError(f"expected {self.semantic_nc} label channels (label_nc={self.label_nc}"
                             f"{' + edge' if self.edge_channel else ''}), got {onehot.shape[1]}")
        onehot, image = to_layout_of(self.conv_img.weight, onehot, image)  # NHWC networks want NHWC inputs
        mu = logvar = None
        if self.use_vae and z is None:
            z, mu, logvar = self.latent(onehot.shape[0], onehot.device, onehot.dtype, image, deterministic)
        fake = self.decode(onehot, z)
        return (fake, mu, logvar) if return_latent else fake


def generator_input(generator: SPADEGenerator, labels: torch.Tensor, ignore: int = 255) -> torch.Tensor:
    """(B, H, W) train ids -> the generator's input: one-hot (+ the edge channel, from the semantic map as the
    official inference does when no instance map exists)."""
    onehot = labels_to_onehot(labels, generator.label_nc, ignore)
    if generator.edge_channel:
        onehot = torch.cat([onehot, instance_edges(labels)], 1)
    return onehot


def style_encoder_missing(generator: nn.Module) -> str | None:
    """Why ``generator`` cannot take the style from an image (None when it can): it was built with
    ``use_vae=False``, or it is a CC-FPSE model imported without its encoder (then it decodes z = 0)."""
    if not getattr(generator, "use_vae", False):
        return ("it was built with use_vae=False, so it has no style encoder and draws from the label map alone; "
                "train one with use_vae=true to use the image's style")
    if getattr(generator, "encoder", None) is None:
        return ("it has no style encoder (a CC-FPSE model imported without latest_net_E.pth), so it decodes "
                "z = 0, the prior's mode, for every image; import it again with latest_net_E.pth")
    return None


@torch.no_grad()
def resynthesize(generator: SPADEGenerator, labels: torch.Tensor, image: torch.Tensor | None = None,
                 ignore: int = 255, batch_size: int | None = None) -> torch.Tensor:
    """Deterministic batched re-synthesis: (B, H, W) train ids (+ optional (B, 3, H, W) image in [0, 1] for the
    style) -> (B, 3, *generator.out_size) in [0, 1]. Labels are resized nearest and the image bicubic (antialiased,
    like PIL's) to ``out_size`` first, as the official inference does. Runs in eval mode and restores the mode."""
    device = next(generator.parameters()).device
    size = generator.out_size
    labels = labels.to(device)
    if tuple(labels.shape[1:]) != size:
        labels = F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()
    if image is not None:
        image = image.to(device, torch.float32)
        if tuple(image.shape[2:]) != size:
            image = F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=True)
        image = image.clamp(0, 1) * 2 - 1
    was_training = generator.training
    generator.eval()
    try:
        bs = batch_size or labels.shape[0]
        outs = []
        for i in range(0, labels.shape[0], bs):
            seg = generator_input(generator, labels[i:i + bs], ignore)
            img = None if image is None else image[i:i + bs]
            outs.append(generator(seg, img, deterministic=True))
        return (torch.cat(outs) + 1) / 2
    finally:
        generator.train(was_training)


@register_model("spade_generator")
def spade_generator(**kwargs) -> SPADEGenerator:
    """The registry's builder: :class:`SPADEGenerator` with ``kwargs``."""
    return SPADEGenerator(**kwargs)
