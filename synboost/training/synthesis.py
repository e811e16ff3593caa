"""What the synthesis stage adds to the training loop: a SPADE generator (+ VAE style encoder) against a
multi-scale PatchGAN, hinge loss + feature matching + VGG19 perceptual loss + KL (SPADE's recipe and weights),
Adam (0, 0.9) with TTUR, sample grids, and validation by the L1 distance of deterministic resyntheses to the real
held-out images, beside two references: an untrained generator and a per-class mean-colour painting."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from synboost.config import SynthesisConfig, to_dict
from synboost.data.io import write_image
from synboost.data.kinds import open_dataset
from synboost.data.labels import NUM_CLASSES, colorize
from synboost.data.transforms import resize_pair
from synboost.detectors.components import build_generator, save_component
from synboost.errors import ConfigError
from synboost.losses.gan import GANLossWeights, discriminator_losses, generator_losses
from synboost.models import create_model
from synboost.models.generator import generator_input
from synboost.training.stage import run_stage
from synboost.training.task import SeededDataset, Task, linear_decay_schedule
from synboost.viz import tile


class PairSet(SeededDataset):
    """(image in [-1, 1] (3, H, W), train ids (H, W)) at the generator's size; flips seeded by (seed, epoch, i)."""

    def __init__(self, reader, size, flip: bool, seed: int = 0):
        super().__init__(reader, seed)
        self.size, self.flip = tuple(size), flip

    def __getitem__(self, i: int):
        s = self.items[i]
        img, lab = resize_pair(s["image"], s["label"], self.size)
        if self.flip and self.rng(i).random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 127.5 - 1
        return x, torch.from_numpy(np.ascontiguousarray(lab).astype(np.int64))


class SynthesisGAN(nn.Module):
    """The trained pair; only ``generator`` is used at inference."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator


def class_mean_colours(reader, size, limit: int = 200) -> np.ndarray:
    """(19, 3) mean RGB per class over (up to ``limit``) training images: the "paint by class" reference."""
    sums, counts = np.zeros((NUM_CLASSES, 3)), np.zeros(NUM_CLASSES)
    for i in range(min(len(reader), limit)):
        s = reader[i]
        img, lab = resize_pair(s["image"], s["label"], tuple(size))
        valid = lab < NUM_CLASSES
        np.add.at(sums, lab[valid], img[valid].astype(np.float64))
        counts += np.bincount(lab[valid], minlength=NUM_CLASSES)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def paint_by_class(labels: torch.Tensor, colours: np.ndarray) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1]: every pixel painted with its class's mean colour (ignore -> grey)."""
    lut = torch.from_numpy(np.vstack([colours, [[127.5, 127.5, 127.5]] * (256 - len(colours))])).float()
    return lut.to(labels.device)[labels.clamp(0, 255)].permute(0, 3, 1, 2) / 127.5 - 1


def _discriminate(disc, seg, fake, real):
    """One discriminator pass over fake and real stacked along the batch (as SPADE does; also what DDP needs:
    one forward per backward), split back into (predictions on fake, predictions on real)."""
    preds = disc(torch.cat([seg, seg]), torch.cat([fake, real]))
    n = fake.shape[0]
    return [[t[:n] for t in scale] for scale in preds], [[t[n:] for t in scale] for scale in preds]


class SynthesisTask(Task):
    """SPADE generator + multi-scale discriminator, both stepped by ``train_step`` itself (``manual_step``);
    ends with ``generator.safetensors`` (the best generator alone)."""

    kind = "synthesis"
    manual_step = True

    def __init__(self, cfg: SynthesisConfig):
        if len(cfg.data.size) != 2:
            raise ConfigError("data.size must be [H, W]")
        self.cfg = cfg
        self.vgg = None
        self._val = None
        self._colours = None
        self._lpips = None
        self.weights = GANLossWeights(gan=1.0, feat=cfg.lambda_feat, vgg=cfg.lambda_vgg, kld=cfg.lambda_kld)

    # -- model, optimisers, data ---------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        m = self.cfg.model
        gen = build_generator(m, self.cfg.data.size)
        disc = create_model("multiscale_discriminator", label_nc=NUM_CLASSES, edge_channel=m.edge_channel, ndf=m.ndf,
                            n_layers=m.n_layers_d, num_D=m.num_d, spectral=m.spectral)
        return SynthesisGAN(gen, disc)

    def _vgg(self, device) -> nn.Module | None:
        if self.cfg.lambda_vgg <= 0:
            return None
        if self.vgg is None:
            from synboost.models.vgg import VGG19Pyramid, load_imagenet_vgg

            vgg = VGG19Pyramid(frozen=True)
            if self.cfg.vgg_pretrained:
                load_imagenet_vgg(vgg, 19, self.cfg.vgg_path or None, disable_hint="vgg_pretrained=false")
            self.vgg = vgg.to(device).eval()
        return self.vgg

    def build_optimizer(self, model: SynthesisGAN):
        c = self.cfg
        lr_g, lr_d = (c.train.lr / 2, c.train.lr * 2) if c.ttur else (c.train.lr, c.train.lr)
        return {"G": torch.optim.Adam(model.generator.parameters(), lr=lr_g, betas=(c.beta1, c.beta2)),
                "D": torch.optim.Adam(model.discriminator.parameters(), lr=lr_d, betas=(c.beta1, c.beta2))}

    def build_scheduler(self, opts, total_steps: int):
        """SPADE's linear decay: both learning rates constant, then falling linearly to 0 over the last
        ``lr_decay`` fraction of the steps (none when ``lr_decay`` is 0)."""
        frac = float(self.cfg.lr_decay)
        if not 0.0 <= frac <= 1.0:
            raise ConfigError(f"synthesis: lr_decay must lie in [0, 1] (the decaying fraction of the steps), "
                              f"got {frac}")
        if frac == 0.0:
            return None
        return {k: linear_decay_schedule(o, total_steps, frac) for k, o in opts.items()}

    def wrap_distributed(self, model: SynthesisGAN) -> SynthesisGAN:
        """A second container around the same modules, each in its own DDP (the engine keeps saving the plain
        ``model``, so checkpoints never carry the wrapper's ``module.`` prefix)."""
        return SynthesisGAN(nn.parallel.DistributedDataParallel(model.generator),
                            nn.parallel.DistributedDataParallel(model.discriminator))

    def train_dataset(self) -> Dataset:
        d = self.cfg.data
        return PairSet(open_dataset(d.train), d.size, d.flip, self.cfg.train.seed)

    # -- one step -----------------------------------------------------------------------------------------
    def train_step(self, model: SynthesisGAN, batch, device, opts):
        real, labels = batch[0].to(device), batch[1].to(device)
        gen, disc = model.generator, model.discriminator
        g = gen.module if hasattr(gen, "module") else gen
        seg = generator_input(g, labels)
        amp = self.amp_device  # bf16 autocast on CUDA, or on a CPU with bf16 units when train.amp_cpu
        with torch.autocast(amp or "cuda", dtype=torch.bfloat16, enabled=amp is not None):
            # generator step (SPADE: G first, then D on a detached fake)
            fake, mu, logvar = gen(seg, real if g.use_vae else None, deterministic=False, return_latent=True)
            pred_fake, pred_real = _discriminate(disc, seg, fake, real)
            g_terms = generator_losses(pred_fake, pred_real, fake.float(), real, self._vgg(device), mu, logvar,
                                       self.weights)
            g_loss = g_terms["total"]
            if self.cfg.lambda_l1 > 0:
                g_loss = g_loss + self.cfg.lambda_l1 * F.l1_loss(fake.float(), real)
        opts["G"].zero_grad(set_to_none=True)
        g_loss.backward()
        opts["G"].step()
        with torch.autocast(amp or "cuda", dtype=torch.bfloat16, enabled=amp is not None):
            d_terms = discriminator_losses(*_discriminate(disc, seg, fake.detach(), real))
        opts["D"].zero_grad(set_to_none=True)
        d_terms["total"].backward()
        opts["D"].step()
        logs = {k: float(v.detach()) for k, v in g_terms.items() if k != "total"}
        logs.update({k: float(v.detach()) for k, v in d_terms.items() if k != "total"})
        return (g_loss + d_terms["total"]).detach(), logs

    # -- validation, samples, metadata --------------------------------------------------------------------
    def _val_batches(self):
        if self._val is None:
            self._val = PairSet(open_dataset(self.cfg.data.val), self.cfg.data.size, flip=False)
        n = min(len(self._val), self.cfg.val_images)
        for s in range(0, n, 8):
            items = [self._val[i] for i in range(s, min(s + 8, n))]
            yield torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])

    @torch.no_grad()
    def validate(self, model: SynthesisGAN, device) -> dict:
        gen = model.generator.module if hasattr(model.generator, "module") else model.generator
        gen.eval()
        if self._colours is None:
            self._colours = class_mean_colours(open_dataset(self.cfg.data.train), self.cfg.data.size)
        lp = self._lpips_net(device)
        l1, l1_paint, lp_gen, lp_paint, n = 0.0, 0.0, 0.0, 0.0, 0
        for real, labels in self._val_batches():
            real, labels = real.to(device), labels.to(device)
            fake = gen(generator_input(gen, labels), real if gen.use_vae else None, deterministic=True)
            paint = paint_by_class(labels, self._colours)
            l1 += float((fake - real).abs().mean()) * len(real) / 2  # in [0, 1] units
            l1_paint += float((paint - real).abs().mean()) * len(real) / 2
            if lp is not None:  # images in [-1, 1], as lpips takes them
                lp_gen += float(lp(fake.float().clamp(-1, 1), real).mean()) * len(real)
                lp_paint += float(lp(paint.to(real.dtype), real).mean()) * len(real)
            n += len(real)
        gen.train()
        n = max(n, 1)
        out = {"score": -l1 / n, "l1": l1 / n, "l1_mean_colour_painting": l1_paint / n}
        if lp is not None:
            out.update({"lpips": lp_gen / n, "lpips_mean_colour_painting": lp_paint / n})
        return out

    def _lpips_net(self, device) -> nn.Module | None:
        """LPIPS for the validation (``lpips_path``: a trunk file; a ``.safetensors`` trunk of ``synboost train
        backbone`` gets lpips' baseline form, every channel weighted alike), or None."""
        if not self.cfg.lpips_path:
            return None
        if self._lpips is None:
            from synboost.detectors.perceptual import build_lpips

            self._lpips = build_lpips(path=self.cfg.lpips_path,
                                      linear=not str(self.cfg.lpips_path).endswith(".safetensors")).to(device)
        return self._lpips

    @torch.no_grad()
    def after_step(self, model: SynthesisGAN, step: int, out_dir: Path) -> None:
        if not self.cfg.sample_every or step % self.cfg.sample_every:
            return
        gen = model.generator.module if hasattr(model.generator, "module") else model.generator
        real, labels = next(self._val_batches())
        dev = next(gen.parameters()).device
        gen.eval()
        fake = gen(generator_input(gen, labels.to(dev)), real.to(dev) if gen.use_vae else None, deterministic=True)
        gen.train()
        to8 = lambda t: ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()  # noqa: E731
        rows = []
        for k in range(min(4, len(real))):
            rows += [colorize(labels[k].numpy()), to8(real[k]), to8(fake[k])]
        write_image(Path(out_dir) / "samples" / f"step{step:07d}.png", tile(rows, cols=3))

    def checkpoint_meta(self) -> dict:
        return {"kind": self.kind, "config": to_dict(self.cfg), "model": to_dict(self.cfg.model),
                "size": list(self.cfg.data.size)}

    def on_fit_end(self, model, summary, engine) -> None:
        """Write ``generator.safetensors``: the generator of the best checkpoint, as a ``generator`` component."""
        from synboost.hub.checkpoint import load_model

        sd, meta = load_model(summary["best"], self.kind)
        gen_sd = {k[len("generator."):]: v for k, v in sd.items() if k.startswith("generator.")}
        extra = {k: v for k, v in meta.items() if k not in ("kind", "model", "classes", "synboost_version")}
        out = save_component(Path(self.cfg.out) / "generator.safetensors", gen_sd, "generator", self.cfg.model,
                             **extra)
        summary["generator"] = str(out)


def train_synthesis(cfg: SynthesisConfig, resume: bool = False, progress: bool = True) -> dict:
    """``synboost train synthesis``; ends by writing ``generator.safetensors`` (the best generator alone)."""
    return run_stage(SynthesisTask(cfg), cfg, resume=resume, progress=progress)
