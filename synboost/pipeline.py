"""Detectors built from a pipeline file: a batch of RGB images in, one anomaly map per image out.

Inference, evaluation, the demo and the benchmarks all go through these detectors, so the numbers in a table
are the numbers a user gets. A detector's ``__call__`` takes a list of RGB uint8 images (any sizes) and returns,
per image, a dict of float32 maps at the image's size: ``anomaly`` (higher = more anomalous) for its method, plus
``segmentation`` (train ids). ``score_all`` gives every post-hoc score from the same forward pass.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from synboost import scores
from synboost.config import PipelineConfig, from_dict, load_config
from synboost.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from synboost.errors import CheckpointError, ConfigError
from synboost.models.density import DENSITY_METHODS, DensityScorer, FeatureTap
from synboost.networks import (OUTLIER_METHODS, load_density, load_dissimilarity, load_generator, load_pebal,
                               load_segmenter, perceptual_vgg, same_below_head)

POSTHOC_METHODS = ("msp", "maxlogit", "entropy", "energy", "sml", "mcdropout", "pebal")


def images_to_batch(images: Sequence[np.ndarray], device, size=None) -> torch.Tensor:
    """RGB uint8 images of one size -> normalised float batch on ``device`` (resized to ``size`` if given)."""
    x = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float().div_(255)
    if size:
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return imagenet_normalize01(x)


def same_size_batches(images: Sequence[np.ndarray], batch_size: int):
    """``(shape, indices)`` of the images grouped by size, in chunks of ``batch_size``: each chunk is one tensor."""
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.shape, []).append(i)
    for shape, idx in groups.items():
        for k in range(0, len(idx), batch_size):
            yield shape, idx[k:k + batch_size]


def maps_at_size(maps: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, np.ndarray]:
    """A batch's (B, h, w) maps at ``size`` as numpy: float32 maps bilinear, ``segmentation`` nearest as uint8."""
    out = {}
    for name, t in maps.items():
        if tuple(t.shape[-2:]) != tuple(size):
            mode = "nearest" if name == "segmentation" else "bilinear"
            t = F.interpolate(t[:, None].float(), size=tuple(size), mode=mode,
                              **({} if mode == "nearest" else {"align_corners": False}))[:, 0]
        arr = t.float().cpu().numpy()
        out[name] = arr.astype(np.uint8) if name == "segmentation" else arr
    return out


def check_method(det: "PosthocDetector", method: str, known: tuple[str, ...], what: str = "methods") -> None:
    """A ConfigError with the fix unless ``det`` can score ``method`` (one of ``known``)."""
    if method not in known:
        raise ConfigError(f"unknown method '{method}'; {what}: {', '.join(known)}")
    if method == "sml" and det.sml_stats is None:
        raise ConfigError("method 'sml' needs class statistics: the segmenter checkpoint has none "
                          "(train with sml_stats=true)")
    if method == "pebal" and not det.has_pebal:
        raise ConfigError("method 'pebal' needs a PEBAL fine-tune (pebal.safetensors of `synboost train pebal`):"
                          " give it as the pipeline's 'pebal' (or as its segmenter); the plain segmenter's "
                          "energy is method 'energy'")
    if method in DENSITY_METHODS and det.density is None:
        raise ConfigError(f"method '{method}' needs an embedding-density fit of the segmenter: give the "
                          "density.safetensors of `synboost fit density` as the pipeline's 'density'")
    if method in OUTLIER_METHODS and method != det.outlier_training:
        had = (f"was re-trained for '{det.outlier_training}'" if det.outlier_training
               else "was not re-trained with outlier data")
        raise ConfigError(f"method '{method}' needs a segmenter re-trained for it (`synboost train outlier "
                          f"--set method={method}`, e.g. configs/outlier/{method}-synthetic.yaml): this segmenter "
                          f"{had}")


class PosthocDetector:
    """A segmenter plus one post-hoc score (MSP, max logit, entropy, energy, SML, MC dropout), or PEBAL's
    smoothed energy when the segmenter is a PEBAL fine-tune or one is given beside it (``pebal_model``), or an
    embedding-density score (:data:`DENSITY_METHODS`) when a fitted ``density`` scorer is given: its features
    are read by forward hooks during the same segmenter pass, or the score of a segmenter re-trained with
    outlier data (:data:`OUTLIER_METHODS`: void class, outlier head, Dirichlet) for the method it was trained for,
    read from all its outputs of the same pass (the post-hoc scores then use its class logits).

    A PEBAL fine-tune with a frozen trunk (the default) has the same weights as its base below the head; the
    detector then runs the trunk once and both heads on it, so the PEBAL score costs two small convolutions."""

    def __init__(self, segmenter: torch.nn.Module, method: str = "entropy", sml_stats=None, input_size=None,
                 batch_size: int = 4, mc_samples: int = 8, device: torch.device | str = "cpu", amp: bool = False,
                 pebal_model: torch.nn.Module | None = None, density: DensityScorer | None = None,
                 channels_last: bool = False):
        self.model, self.method, self.sml_stats = segmenter, method, sml_stats
        self.pebal_model, self.density = pebal_model, density
        self.shared_trunk = pebal_model is not None and same_below_head(segmenter, pebal_model)
        self._tap = FeatureTap(segmenter, density.tap_layers) if density is not None else None
        self._check(method, POSTHOC_METHODS + OUTLIER_METHODS + DENSITY_METHODS, "post-hoc methods")
        self.input_size, self.batch_size, self.mc_samples = input_size or None, batch_size, mc_samples
        self.device = torch.device(device)
        self.amp = amp  #: bf16 autocast on CUDA (scores and the final softmax are computed in float32)
        # NHWC memory format for the networks and the input batches (faster convolutions on CUDA and on oneDNN
        # CPUs; the maps equal the NCHW ones up to float rounding)
        self.set_channels_last(channels_last)

    def _networks(self) -> list[torch.nn.Module]:
        return [m for m in (self.model, self.pebal_model) if m is not None]

    def set_channels_last(self, on: bool) -> None:
        """Switch the networks (and the batches of later calls) to NHWC, or back to NCHW."""
        self.channels_last = on
        fmt = torch.channels_last if on else torch.contiguous_format
        for net in self._networks():
            net.to(memory_format=fmt)

    def _check(self, method: str, known: tuple[str, ...], what: str = "methods") -> None:
        check_method(self, method, known, what)

    @property
    def outlier_training(self) -> str:
        """The outlier method the segmenter was re-trained for ("" for a plain segmenter)."""
        return getattr(self.model, "outlier_training", "")

    @property
    def has_pebal(self) -> bool:
        return self.pebal_model is not None or getattr(self.model, "abstention", False)

    @property
    def methods(self) -> tuple[str, ...]:
        """Every method this detector can score from one forward pass (``score_all``)."""
        return (tuple(m for m in POSTHOC_METHODS if m not in ("mcdropout",) and (m != "sml" or self.sml_stats)
                      and (m != "pebal" or self.has_pebal))
                + ((self.outlier_training,) if self.outlier_training else ())
                + (DENSITY_METHODS if self.density is not None else ()))

    def _logits(self, batch: torch.Tensor, pebal: bool = False, outputs: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None] | tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(segmenter logits, PEBAL inlier logits if ``pebal`` else None); with ``outputs``, also all outputs
        of the segmenter (``all_outputs=True``: + the void / outlier-head logit) from the same pass."""
        k = getattr(self.model, "num_classes", None)
        if not pebal or self.pebal_model is None:
            full = self.model(batch, all_outputs=True) if outputs else self.model(batch)
            logits = full[:, :k] if outputs else full
            res = (logits, (logits if pebal else None))
        elif self.shared_trunk:
            dec = self.model.decoder_input(batch)
            size = batch.shape[2:]
            full = self.model.head(dec, size, inliers_only=not outputs)[0]
            res = (full[:, :k] if outputs else full, self.pebal_model.head(dec, size)[0])
        else:
            full = self.model(batch, all_outputs=True) if outputs else self.model(batch)
            res = (full[:, :k] if outputs else full, self.pebal_model(batch))
        return (*res, full) if outputs else res

    def _maps(self, logits: torch.Tensor, methods: Sequence[str], batch: torch.Tensor,
              pebal_logits: torch.Tensor | None = None, outputs: torch.Tensor | None = None
              ) -> dict[str, torch.Tensor]:
        dens = [m for m in methods if m in DENSITY_METHODS]
        out = self.density(self._tap.features, batch.shape[2:], dens) if dens else {}
        for m in methods:
            if m in dens:
                continue
            if m in OUTLIER_METHODS:
                self._check(m, OUTLIER_METHODS)
                out[m] = scores.OUTLIER_SCORES[m](outputs if outputs is not None else logits)
            elif m == "sml":
                out[m] = scores.sml(logits, *self.sml_stats)
            elif m == "mcdropout":
                out[m] = self._mc(batch)
            elif m == "pebal":
                out[m] = scores.pebal(pebal_logits)
            else:
                out[m] = scores.LOGIT_SCORES[m](logits)
        return out

    def _mc(self, batch: torch.Tensor) -> torch.Tensor:
        drop = [mod for mod in self.model.modules() if isinstance(mod, torch.nn.modules.dropout._DropoutNd)]
        for d in drop:
            d.train()
        try:
            return scores.mc_dropout(self.model, batch, self.mc_samples)
        finally:
            for d in drop:
                d.eval()

    @torch.no_grad()
    def run(self, images: Sequence[np.ndarray], methods: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """Score maps for ``methods`` (+ ``segmentation``) per image, at each image's own size."""
        for m in methods:  # before any work: a method the segmenter was not re-trained for
            if m in OUTLIER_METHODS:
                self._check(m, OUTLIER_METHODS)
        results: list[dict[str, np.ndarray]] = [{} for _ in images]
        for shape, part in same_size_batches(images, self.batch_size):
            batch = images_to_batch([images[i] for i in part], self.device, self.input_size)
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                enabled=self.amp and self.device.type == "cuda"):
                with self._tap.capture() if self._tap and set(methods) & set(DENSITY_METHODS) else nullcontext():
                    if set(methods) & set(OUTLIER_METHODS):
                        logits, pebal_logits, outputs = self._logits(batch, "pebal" in methods, outputs=True)
                    else:
                        (logits, pebal_logits), outputs = self._logits(batch, "pebal" in methods), None
                maps = self._maps(logits, methods, batch, pebal_logits, outputs=outputs)
            maps["segmentation"] = logits.argmax(1).float()
            for name, arr in maps_at_size(maps, shape[:2]).items():
                for j, i in enumerate(part):
                    results[i][name] = arr[j]
        return results  # type: ignore[return-value]

    def __call__(self, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        res = self.run(images, [self.method])
        for r in res:
            r["anomaly"] = r.pop(self.method)
        return res

    def score_all(self, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        return self.run(images, self.methods)


def _resolve(path: str, base: Path | None) -> str:
    p = Path(path).expanduser()
    if not p.is_absolute() and base is not None and not p.exists():
        p = base / p
    return str(p)


def _checkpoint(path: str, what: str, verb: str, base: Path | None, command: str = "") -> str:
    """A pipeline component: a checkpoint path (relative to the pipeline file) or a name of the weights manifest
    (``synboost-segmenter``, ...; its imported file)."""
    from synboost.hub.registry import resolve

    if not path:
        raise ConfigError(f"pipeline: '{what}' is empty; give the {what} checkpoint (a .safetensors file)")
    p = _resolve(resolve(path), base)
    if not Path(p).is_file():
        how = f"make one with `{command}`" if command else f"train one with `synboost train {verb}`"
        raise CheckpointError(f"{p}: {what} checkpoint not found ({how}, or fix '{what}' in the pipeline file)")
    return p


def build_detector(cfg: PipelineConfig, base: Path | None = None, device: str | None = None) -> PosthocDetector:
    from synboost.runtime import pick_device

    dev = pick_device(device or cfg.device)
    model, sml = load_segmenter(_checkpoint(cfg.segmenter, "segmenter", "segmentation", base), dev)
    pebal = load_pebal(_checkpoint(cfg.pebal, "pebal", "pebal", base), dev) if cfg.pebal else None
    density = (load_density(_checkpoint(cfg.density, "density", "", base, "synboost fit density"),
                            _checkpoint(cfg.segmenter, "segmenter", "segmentation", base), dev)
               if cfg.density else None)
    common = dict(input_size=cfg.input_size, batch_size=cfg.batch_size, mc_samples=cfg.mc_samples, device=dev,
                  amp=cfg.amp, pebal_model=pebal, density=density, channels_last=cfg.channels_last)
    if cfg.method not in SynBoostDetector.EXTRA and not cfg.dissimilarity:
        return PosthocDetector(model, cfg.method, sml, **common)
    gen = load_generator(_checkpoint(cfg.generator, "generator", "synthesis", base), dev)
    dissim, meta = load_dissimilarity(_checkpoint(cfg.dissimilarity, "dissimilarity", "dissimilarity", base), dev)
    vgg19 = perceptual_vgg(cfg.perceptual_vgg_pretrained, cfg.perceptual_vgg_path, dev)
    return SynBoostDetector(model, gen, dissim, vgg19, meta["size"], sml, cfg.ensemble,
                            cfg.ensemble_weights, cfg.method, **common)


def load_pipeline(path: str | os.PathLike, overrides: Sequence[str] = (), device: str | None = None) -> PosthocDetector:
    """``synboost.load_pipeline("runs/demo/pipeline.yaml")(images) -> [{"anomaly": ..., "segmentation": ...}]``."""
    cfg = load_config(PipelineConfig, path, overrides)
    return build_detector(cfg, Path(path).resolve().parent, device)


def write_pipeline_file(path: str | os.PathLike, **fields) -> Path:
    """Write a pipeline file (validated against :class:`PipelineConfig`)."""
    from synboost.config import save_config

    cfg = from_dict(PipelineConfig, fields)
    return save_config(cfg, path)


# ------------------------------------------------------------------------------------------------------ SynBoost


def _imagenet_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1),
            torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1))


def imagenet_normalize01(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> ImageNet-normalised."""
    mean, std = _imagenet_stats(x)
    return (x - mean) / std


def imagenet_denormalize01(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised images -> [0, 1] (the inverse of :func:`imagenet_normalize01`, clamped)."""
    mean, std = _imagenet_stats(x)
    return (x * std + mean).clamp(0, 1)


def dissimilarity_inputs(image01: torch.Tensor, labels: torch.Tensor, generator, vgg19, entropy=None,
                         distance=None, priors: Sequence[str] = ("entropy", "perceptual", "distance")) -> dict:
    """Everything the dissimilarity network takes, at the size of ``image01`` (B, 3, H, W) in [0, 1]:
    the resynthesis of ``labels`` (B, H, W train ids; the generator's style comes from the image), both images
    ImageNet-normalised, the one-hot label map, and the prior maps in the order of ``priors`` (entropy and
    distance given by the caller, the perceptual difference computed here). Shared by training and inference."""
    from synboost.models.generator import labels_to_onehot, resynthesize
    from synboost.perceptual import perceptual_difference

    size = tuple(image01.shape[-2:])
    syn01 = resynthesize(generator, labels, image01)
    if tuple(syn01.shape[-2:]) != size:
        syn01 = F.interpolate(syn01, size=size, mode="bilinear", align_corners=False)
    img_n, syn_n = imagenet_normalize01(image01), imagenet_normalize01(syn01)
    maps = {"entropy": entropy, "distance": distance}
    if "perceptual" in priors:
        maps["perceptual"] = perceptual_difference(vgg19, img_n, syn_n)
    pri = torch.stack([maps[p] for p in priors], 1).float() if priors else None
    onehot = labels_to_onehot(labels.long(), 19).to(image01.dtype)
    return {"image": img_n, "synthesis": syn_n, "onehot": onehot, "priors": pri, "synthesis01": syn01}


def resize_maps(size, labels=None, maps: Sequence[torch.Tensor] = (), image=None):
    """Labels nearest, float maps and images bilinear (antialiased when shrinking) to ``size``."""
    size = tuple(size)
    out = []
    if labels is not None:
        out.append(labels if tuple(labels.shape[-2:]) == size else
                   F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long())
    for m in maps:
        out.append(m if tuple(m.shape[-2:]) == size else
                   F.interpolate(m[:, None], size=size, mode="bilinear", align_corners=False, antialias=True)[:, 0])
    if image is not None:
        out.append(image if tuple(image.shape[-2:]) == size else
                   F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True))
    return out


class SynBoostDetector(PosthocDetector):
    """SynBoost: segmenter -> (label map, entropy, distance) -> resynthesis -> perceptual difference ->
    dissimilarity network -> fused with the entropy (``ensemble``) -> anomaly map at the input size. The
    post-hoc scores of the same segmenter pass come for free (``score_all``)."""

    EXTRA = ("synboost", "dissimilarity")

    def __init__(self, segmenter, generator, dissim, vgg19, size, sml_stats=None, ensemble: bool = True,
                 ensemble_weights=(0.75, 0.25), method: str = "synboost", **kw):
        super().__init__(segmenter, "entropy", sml_stats, **kw)
        self._check(method, POSTHOC_METHODS + OUTLIER_METHODS + DENSITY_METHODS + self.EXTRA)
        self.method = method
        self.generator, self.dissim, self.vgg19 = generator, dissim, vgg19
        self.size, self.ensemble, self.weights = tuple(size), ensemble, tuple(ensemble_weights)
        self.set_channels_last(self.channels_last)

    def _networks(self) -> list[torch.nn.Module]:
        return super()._networks() + [m for m in (getattr(self, "generator", None), getattr(self, "dissim", None),
                                                   getattr(self, "vgg19", None)) if m is not None]

    @property
    def methods(self) -> tuple[str, ...]:
        return super().methods + self.EXTRA

    def _maps(self, logits, methods, batch, pebal_logits=None, outputs=None):
        out = super()._maps(logits, [m for m in methods if m not in self.EXTRA], batch, pebal_logits, outputs)
        if not any(m in self.EXTRA for m in methods):
            return out
        image01 = imagenet_denormalize01(batch)
        ent, dist = scores.synboost_entropy(logits), scores.synboost_distance(logits)
        labels, ent, dist, image01 = resize_maps(self.size, logits.argmax(1), (ent, dist), image01)
        inp = dissimilarity_inputs(image01, labels, self.generator, self.vgg19, ent, dist, self.dissim.priors)
        p = F.softmax(self.dissim(inp["image"], inp["synthesis"], inp["onehot"], inp["priors"]).float(), 1)[:, 1]
        out["dissimilarity"] = p
        out["synboost"] = self.weights[0] * p + self.weights[1] * ent if self.ensemble else p
        return out
