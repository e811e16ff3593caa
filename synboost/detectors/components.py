"""The pipeline's components: each kind built from its typed config, saved with :func:`save_component` and
loaded (eval mode, on a device) with :func:`load_component`; a checkpoint says what it holds, and one of another
kind or one that does not fit is one clear error. :data:`COMPONENT_KINDS` is the one table from a kind to its
config class and builder. :mod:`synboost.detectors.detector` assembles detectors from them; the training stages
and the importers save through :func:`save_component`.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from synboost import scores
from synboost.config import DissimModelConfig, SegModelConfig, SynthesisModelConfig, from_dict, to_dict
from synboost.data.labels import CLASS_NAMES
from synboost.detectors.segmenters import SPEC_KIND, is_segmenter_spec, load_segmenter_spec
from synboost.errors import CheckpointError, ConfigError
from synboost.hub.checkpoint import load_into, load_model, read_meta, save_model
from synboost.models import create_model
from synboost.models.density import DensityScorer

#: methods of a segmenter re-trained with outlier data (`synboost train outlier`): each needs a segmenter
#: trained for it (its checkpoint's model.outlier_training) and reads all of its outputs
OUTLIER_METHODS = tuple(scores.OUTLIER_SCORES)


def build_segmenter(m: SegModelConfig) -> torch.nn.Module:
    """The DeepLabV3+ of a :class:`SegModelConfig` (random weights)."""
    return create_model("deeplabv3plus", backbone=m.backbone, num_classes=m.num_classes,
                        output_stride=m.output_stride, aspp_dim=m.aspp_dim, decoder_dim=m.decoder_dim,
                        head_dropout=m.head_dropout, width=m.width, abstention=m.abstention,
                        outlier_training=_outlier_training(m))


def _outlier_training(m: SegModelConfig) -> str:
    if m.outlier_training and m.outlier_training not in OUTLIER_METHODS:
        raise ConfigError(f"model.outlier_training '{m.outlier_training}' is not one of "
                          f"{', '.join(OUTLIER_METHODS)} (or empty)")
    return m.outlier_training


#: files of other frameworks that a segmenter path may name by mistake: they come in through a segmenter spec
FOREIGN_SEGMENTER_SUFFIXES = {
    ".onnx": "'source: onnx:FILE'", ".ts": "'source: torchscript:FILE'", ".jit": "'source: torchscript:FILE'",
    ".pt": "'source: torchscript:FILE' (or 'weights: FILE' with the source that builds the network)",
    ".pth": "'weights: FILE' and the source that builds the network (torchvision:, timm:, python:)",
    ".bin": "'weights: FILE' and the source that builds the network (or huggingface:FOLDER)"}


def load_segmenter(path: str | os.PathLike, device: torch.device | str = "cpu"):
    """(model in eval mode, SML statistics or None) from one of our segmenter checkpoints (a PEBAL fine-tune
    included: its ``forward`` gives the inlier logits), or from a segmenter spec file (``.yaml``: any network
    through :class:`~synboost.detectors.adapter.SegmenterAdapter`, see :mod:`synboost.detectors.segmenters`; no SML
    statistics). The statistics are stored beside the weights as ``_stats.sml_mean`` / ``_stats.sml_std``."""
    if is_segmenter_spec(path):
        return load_segmenter_spec(path, device), None
    how = FOREIGN_SEGMENTER_SUFFIXES.get(Path(path).suffix.lower())
    if how and Path(path).is_file():
        raise CheckpointError(f"{path}: not a synboost checkpoint; to use your own network as the segmenter, give a "
                              f"segmenter spec instead: a .yaml with 'kind: {SPEC_KIND}' and {how} (README "
                              "'Bring your own segmenter')")
    model, meta = load_component(path, "segmenter", device)
    stats = meta.get("_stats", {})
    sml = (stats["sml_mean"], stats["sml_std"]) if "sml_mean" in stats else None
    return model, sml


def same_below_head(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether two segmenters hold the same weights and BatchNorm statistics everywhere below the head."""
    head = getattr(a, "HEAD", ())
    sa, sb = a.state_dict(), b.state_dict()
    below = [k for k in sa if k.split(".")[0] not in head]
    return all(k in sb and sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k].to(sa[k].device)) for k in below)


def load_pebal(path: str | os.PathLike, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A PEBAL fine-tune (eval mode) from ``pebal.safetensors``; a segmenter without the abstention output is
    refused with the fix."""
    model, _ = load_segmenter(path, device)
    if not getattr(model, "abstention", False):
        raise CheckpointError(f"{path}: a plain segmenter, not a PEBAL fine-tune (no abstention output); "
                              "give the pebal.safetensors of `synboost train pebal`")
    return model


def load_density(path: str | os.PathLike, segmenter_path: str | os.PathLike,
                 device: torch.device | str = "cpu") -> DensityScorer:
    """The embedding-density scorer (eval mode) of ``density.safetensors``; refused unless it was fitted on the
    segmenter file given (same sha256)."""
    from synboost.hub.registry import sha256_of

    meta = read_meta(path)
    if meta.get("kind") == "density" and meta.get("segmenter_sha256") != sha256_of(Path(segmenter_path)):
        raise CheckpointError(f"{path}: fitted on the segmenter {meta.get('segmenter')}, not on {segmenter_path}; "
                              "refit with `synboost fit density` for this segmenter")
    return load_component(path, "density", device)[0]


def _build_density(meta: Mapping[str, Any]) -> torch.nn.Module:
    return DensityScorer(meta["layers"], meta["dims"], meta["single_layer"], meta["knn_layer"], meta["k"],
                         meta["knn_reduce"], meta["bank_capacity"], meta["bank_size"], meta["knn_index"],
                         meta["knn_backend"])


def build_generator(m: SynthesisModelConfig, size) -> torch.nn.Module:
    """The SPADE generator of a :class:`SynthesisModelConfig` at output ``size`` (H, W)."""
    return create_model("spade_generator", label_nc=19, ngf=m.ngf, num_upsampling=m.num_upsampling, z_dim=m.z_dim,
                        use_vae=m.use_vae, edge_channel=m.edge_channel, out_size=tuple(size), nef=m.nef,
                        encoder_size=m.encoder_size, spectral=m.spectral, spade_hidden=m.spade_hidden)


def build_dissimilarity(m: DissimModelConfig) -> torch.nn.Module:
    """The dissimilarity network of a :class:`DissimModelConfig`."""
    return create_model("dissimilarity", semantic=m.semantic, priors=tuple(m.priors), correlation=m.correlation,
                        spade=m.spade, width=m.width, encoder_width=m.encoder_width or None)


def build_ccfpse(**kwargs) -> torch.nn.Module:
    """SynBoost's official CC-FPSE generator (``kwargs``: its constructor's), taking our pipeline's train-id input
    through the Cityscapes train id -> label id table."""
    from synboost.data.labels import TRAIN_ID_LABEL_IDS

    return create_model("ccfpse_generator", **kwargs, train_to_label_id=TRAIN_ID_LABEL_IDS)


def _build_any_generator(meta: Mapping[str, Any]) -> torch.nn.Module:
    arch = meta.get("architecture", "spade")
    if arch == "ccfpse":  # the official SynBoost synthesis net (synboost.importers.ccfpse.import_ccfpse)
        return build_ccfpse(**meta["model"], out_size=tuple(meta["size"]))
    if arch == "spade":
        return build_generator(from_dict(SynthesisModelConfig, meta["model"]), meta["size"])
    raise ValueError(f"unknown generator architecture '{arch}' (known: spade, ccfpse)")


def load_generator(path: str | os.PathLike, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A trained generator (eval mode) from ``generator.safetensors``."""
    return load_component(path, "generator", device)[0]


def load_dissimilarity(path: str | os.PathLike, device: torch.device | str = "cpu"):
    """(dissimilarity network in eval mode, its metadata) from ``dissimilarity.safetensors``."""
    return load_component(path, "dissimilarity", device)


# ---------------------------------------------------------------------------------------------- save / load


@dataclasses.dataclass(frozen=True)
class ComponentKind:
    """One kind of checkpoint: the schema of its ``model`` metadata (None: a free-form mapping), how to build
    the network from the metadata (None: a training checkpoint that only its stage reads), and the command that
    makes one (for the error of a missing or wrong file)."""

    config: type | None
    build: Callable[[Mapping[str, Any]], torch.nn.Module] | None
    made_by: str


#: kind -> its config class, builder and maker: the one table :func:`save_component` / :func:`load_component` use
COMPONENT_KINDS: dict[str, ComponentKind] = {
    "segmenter": ComponentKind(SegModelConfig, lambda m: build_segmenter(from_dict(SegModelConfig, m["model"])),
                               "synboost train segmentation (or pebal / outlier)"),
    "generator": ComponentKind(None, _build_any_generator, "synboost train synthesis"),
    "dissimilarity": ComponentKind(
        DissimModelConfig, lambda m: build_dissimilarity(from_dict(DissimModelConfig, m["model"])),
        "synboost train dissimilarity"),
    "density": ComponentKind(None, _build_density, "synboost fit density"),
    "synthesis": ComponentKind(SynthesisModelConfig, None, "synboost train synthesis (its generator + discriminator)"),
    "backbone": ComponentKind(None, None, "synboost train backbone (VGG trunks + their training head)"),
}

#: state-dict keys with this prefix are statistics stored beside the weights (the segmenter's SML statistics);
#: :func:`load_component` returns them as ``meta["_stats"]``
STATS_PREFIX = "_stats."


def save_component(path: str | os.PathLike, model: torch.nn.Module | Mapping[str, torch.Tensor], kind: str,
                   config: Any = None, /, *, stats: Mapping[str, torch.Tensor] | None = None, **extra) -> Path:
    """Write one component as safetensors with its metadata: ``{"kind": kind, "model": config, "classes": ...,
    **extra}``. ``model``: a network or its state dict; ``config``: its config dataclass (or the mapping a free-form
    kind takes); ``stats``: tensors stored beside the weights (``_stats.<name>``). Atomic."""
    if kind not in COMPONENT_KINDS:
        raise ValueError(f"unknown component kind '{kind}'; kinds: {', '.join(COMPONENT_KINDS)}")
    sd = dict(model.state_dict() if isinstance(model, torch.nn.Module) else model)
    sd.update({f"{STATS_PREFIX}{k}": v for k, v in (stats or {}).items()})
    cfg = to_dict(config) if dataclasses.is_dataclass(config) else (dict(config) if config is not None else None)
    meta = {"kind": kind, **({"model": cfg} if cfg is not None else {}), "classes": list(CLASS_NAMES), **extra}
    return save_model(path, sd, meta)


def load_component(path: str | os.PathLike, kind: str | None = None, device: torch.device | str = "cpu"
                   ) -> tuple[torch.nn.Module, dict]:
    """(network in eval mode on ``device``, metadata) of a checkpoint written by :func:`save_component`.
    ``kind``: the kind expected; a checkpoint of another kind is one error naming both."""
    meta = read_meta(path)
    have = meta.get("kind")
    if kind is not None and have != kind:
        spec = COMPONENT_KINDS.get(kind)
        raise CheckpointError(f"{path}: is a '{have}' checkpoint, expected '{kind}'"
                              + (f" (made by `{spec.made_by}`)" if spec else ""))
    spec = COMPONENT_KINDS.get(have)
    if spec is None or spec.build is None:
        raise CheckpointError(f"{path}: a '{have}' checkpoint is not a loadable component (kinds: "
                              f"{', '.join(k for k, s in COMPONENT_KINDS.items() if s.build)})")
    sd, meta = load_model(path, expect_kind=have)
    stats = {k[len(STATS_PREFIX):]: v for k, v in sd.items() if k.startswith(STATS_PREFIX)}
    weights = {k: v for k, v in sd.items() if not k.startswith(STATS_PREFIX)}
    try:
        net = spec.build(meta)
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise CheckpointError(f"{path}: its '{have}' metadata does not build a model ({e})") from None
    load_into(net, weights, str(path))
    if stats:
        meta["_stats"] = stats
    return net.to(device).eval(), meta


#: seed of the random-initialised VGG19 used when no ImageNet weights are given: training and inference must
#: compute the perceptual difference with the same network, so it is a fixed function of this seed
RANDOM_VGG_SEED = 0


def perceptual_vgg(pretrained: bool, path: str = "", device="cpu") -> torch.nn.Module:
    """The frozen VGG19 of the perceptual difference: ImageNet weights from a local file, or (explicitly asked
    for with ``pretrained=False``) a random initialisation that is the same in every process."""
    from synboost.models.vgg import VGG19Pyramid, load_imagenet_vgg

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_VGG_SEED)
        vgg19 = VGG19Pyramid(frozen=True)
    if pretrained:
        load_imagenet_vgg(vgg19, 19, path or None, disable_hint="perceptual_vgg_pretrained=false")
    return vgg19.to(device).eval()
