"""The post-hoc detector: a segmenter plus one per-pixel score of its outputs, batched by image size.

A detector's ``__call__`` takes a list of RGB uint8 images (any sizes) and returns, per image, a dict of float32
maps at the image's size: ``anomaly`` (higher = more anomalous) for its method, plus ``segmentation`` (train ids).
``score_all`` gives every score the detector can compute from the same forward pass.
"""
from __future__ import annotations

from contextlib import ExitStack, nullcontext
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from synboost import scores
from synboost.detectors.adapter import SegmenterAdapter
from synboost.detectors.components import OUTLIER_METHODS, same_below_head
from synboost.detectors.freeze import WeightCast, fold_batchnorm_, fold_spectral_norm_
from synboost.detectors.precision import WarmUp, autocast, compile_networks, resolve_precision
from synboost.errors import ConfigError
from synboost.models.density import DENSITY_METHODS, DensityScorer, FeatureTap
from synboost.tensors import images_to_batch

POSTHOC_METHODS = ("msp", "maxlogit", "entropy", "energy", "sml", "mcdropout", "pebal")

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
    detector then runs the trunk once and both heads on it, so the PEBAL score costs two small convolutions.

    ``freeze=True`` says the networks are the detector's own (a pipeline file's detector): :meth:`freeze` then
    rewrites them for inference in place (:mod:`synboost.detectors.freeze`: spectral norm and BatchNorm folded
    into the weights, bf16 networks' weights kept in bf16). A detector given a caller's networks leaves them as
    they are unless :meth:`freeze` is called."""

    def __init__(self, segmenter: torch.nn.Module, method: str = "entropy", sml_stats=None, input_size=None,
                 batch_size: int = 4, mc_samples: int = 8, device: torch.device | str = "cpu", amp: bool = False,
                 pebal_model: torch.nn.Module | None = None, density: DensityScorer | None = None,
                 channels_last: bool | None = None, precision: str | Mapping[str, str] | None = "auto",
                 compile: bool = False, freeze: bool = False):
        self.model, self.method, self.sml_stats = segmenter, method, sml_stats
        self.frozen: tuple[str, ...] = ()  #: the networks :meth:`freeze` rewrote
        self._cast = WeightCast()
        self.pebal_model, self.density = pebal_model, density
        self.shared_trunk = pebal_model is not None and same_below_head(segmenter, pebal_model)
        self._tap = FeatureTap(segmenter, density.tap_layers) if density is not None else None
        self._check(method, POSTHOC_METHODS + OUTLIER_METHODS + DENSITY_METHODS, "post-hoc methods")
        self.input_size, self.batch_size, self.mc_samples = input_size or None, batch_size, mc_samples
        self.device = torch.device(device)
        self.amp = amp  #: with precision 'auto': bf16 autocast on CUDA (the scores are computed in float32)
        self.backend = "torch"  #: torch | onnxruntime | openvino | tensorrt (set by detectors.runtimes)
        self.set_precision(precision)
        # NHWC memory format for the networks and the input batches (faster convolutions on CUDA and on oneDNN
        # CPUs; the maps equal the NCHW ones up to float rounding); None: on where a network runs bf16 on the CPU
        # (oneDNN's bf16 convolutions are fast in NHWC)
        if channels_last is None:
            channels_last = self.device.type == "cpu" and "bf16" in self.precision.values()
        self.set_channels_last(channels_last)
        self.compiled, self._warmup = False, WarmUp()
        if freeze and type(self) is PosthocDetector:  # a subclass freezes once its own networks are set
            self.freeze()
        if compile:
            self.set_compile()

    def set_precision(self, precision: str | Mapping[str, str] | None = "auto") -> None:
        """Each network's dtype (:mod:`synboost.detectors.precision`: ``auto``, ``fp32``, ``bf16``, ``mixed`` or
        per network); bf16 where the device has no bf16 unit runs fp32, with one line that says so. Exported
        backends take theirs when they are built (``load_pipeline(..., precision=...)``)."""
        if self.backend != "torch":
            raise ConfigError(f"the networks run in {self.backend}, whose precision is set when the detector is "
                              "built: load_pipeline(..., precision=...)")
        self.precision = resolve_precision(precision, self.device, self.amp, self.backend)
        self._cast_weights()

    def _network_groups(self) -> dict[str, list[torch.nn.Module]]:
        """The torch modules of each network of :data:`~synboost.detectors.precision.NETWORKS` (PEBAL's
        fine-tune goes with the segmenter)."""
        return {"segmenter": [m for m in (self.model, self.pebal_model) if isinstance(m, torch.nn.Module)]}

    def _cast_weights(self) -> None:
        """A frozen detector keeps the weights of its bf16 networks in bf16 (and its fp32 ones in float32)."""
        if not getattr(self, "frozen", False) or self.backend != "torch":
            return
        for name, nets in self._network_groups().items():
            if name in self.frozen:
                self._cast.set(name, nets, self.precision.get(name, "fp32") == "bf16")

    def freeze(self, exclude: Sequence[str] = ()) -> "PosthocDetector":
        """Rewrite the networks for inference, in place (:mod:`synboost.detectors.freeze`): spectral norms and
        the BatchNorms that follow a convolution are folded into the weights, and the weights of the networks that
        run bf16 are kept in bf16 (float32 originals kept for a later ``set_precision``). The maps equal the
        unfrozen ones up to float rounding. ``exclude``: networks to leave as they are (a caller's segmenter). A
        foreign segmenter (a :class:`~synboost.detectors.adapter.SegmenterAdapter`: torchvision, TorchScript,
        ONNX, ...) is always left as its owner wrote it, so that its label maps equal a direct call's.
        Idempotent; for torch networks in eval mode only."""
        if self.frozen or self.backend != "torch":
            return self
        if isinstance(self.model, SegmenterAdapter):
            exclude = (*exclude, "segmenter")
        groups = {k: v for k, v in self._network_groups().items() if k not in exclude}
        for net in {id(n): n for g in groups.values() for n in g}.values():
            if net.training:
                raise ConfigError(f"freeze: {type(net).__name__} is in training mode; a detector's networks are "
                                  "in eval mode (call .eval() first)")
            fold_spectral_norm_(net)
            fold_batchnorm_(net)
        self.frozen = tuple(groups)
        self._cast_weights()
        return self

    def set_compile(self) -> None:
        """torch.compile every network in place (static shapes: partial batches are padded to ``batch_size``);
        the first batch of each shape compiles and prints how long it took."""
        if self.backend != "torch":
            raise ConfigError(f"defaults.compile: the networks run in {self.backend}, not torch; set compile: false")
        compile_networks(self._networks())
        self.compiled = True

    def _region(self, network: str):
        """The autocast region of one network (:data:`~synboost.detectors.precision.NETWORKS`), with its bf16
        weight copies swapped in when the detector is frozen."""
        region = autocast(self.device, self.precision.get(network, "fp32") if self.backend == "torch" else "fp32")
        if network not in self._cast:
            return region
        stack = ExitStack()
        stack.enter_context(self._cast.swapped(network))
        stack.enter_context(region)
        return stack

    def _networks(self) -> list[torch.nn.Module]:
        return [m for m in (self.model, self.pebal_model) if m is not None]

    def set_channels_last(self, on: bool) -> None:
        """Switch the networks (and the batches of later calls) to NHWC, or back to NCHW."""
        self.channels_last = on
        fmt = torch.channels_last if on else torch.contiguous_format
        for net in self._networks():
            if isinstance(net, torch.nn.Module):
                net.to(memory_format=fmt)
        self._cast_weights()  # the bf16 copies in the new layout

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
        feats = {k: v.float() for k, v in self._tap.features.items()} if dens else {}
        out = self.density(feats, batch.shape[2:], dens) if dens else {}
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
            with self._region("segmenter"):
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
            if self.compiled and len(part) < self.batch_size:  # static shapes: pad with the last image
                batch = torch.cat([batch, batch[-1:].expand(self.batch_size - len(part), -1, -1, -1)])
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            if self.compiled:
                maps = self._warmup(tuple(batch.shape), lambda: self._batch_maps(batch, methods))
            else:
                maps = self._batch_maps(batch, methods)
            maps = {k: v[:len(part)] for k, v in maps.items()}
            for name, arr in maps_at_size(maps, shape[:2]).items():
                for j, i in enumerate(part):
                    results[i][name] = arr[j]
        return results  # type: ignore[return-value]

    def _batch_maps(self, batch: torch.Tensor, methods: Sequence[str]) -> dict[str, torch.Tensor]:
        """The (B, h, w) maps of one batch: the segmenter in its precision region, every score in float32."""
        with self._region("segmenter"):
            with self._tap.capture() if self._tap and set(methods) & set(DENSITY_METHODS) else nullcontext():
                if set(methods) & set(OUTLIER_METHODS):
                    logits, pebal_logits, outputs = self._logits(batch, "pebal" in methods, outputs=True)
                else:
                    (logits, pebal_logits), outputs = self._logits(batch, "pebal" in methods), None
        logits, pebal_logits, outputs = (t.float() if t is not None else None for t in (logits, pebal_logits, outputs))
        maps = self._maps(logits, methods, batch, pebal_logits, outputs=outputs)
        maps["segmentation"] = logits.argmax(1).float()
        return maps

    def __call__(self, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        res = self.run(images, [self.method])
        for r in res:
            r["anomaly"] = r.pop(self.method)
        return res

    def score_all(self, images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        return self.run(images, self.methods)
