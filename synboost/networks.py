"""The pipeline's networks: each built from its typed config, or loaded (eval mode, on a device) from one of our
checkpoints, which say what they hold; a checkpoint of another kind or one that does not fit is one clear error.
:mod:`synboost.pipeline` assembles detectors from them, the training jobs build and save them.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from synboost import scores
from synboost.config import SegModelConfig, from_dict
from synboost.errors import CheckpointError, ConfigError
from synboost.hub.checkpoint import load_into, load_model
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


def load_segmenter(path: str | os.PathLike, device: torch.device | str = "cpu"):
    """(model in eval mode, SML statistics or None) from one of our segmenter checkpoints (a PEBAL fine-tune
    included: its ``forward`` gives the inlier logits)."""
    sd, meta = load_model(path, expect_kind="segmenter")
    stats = {k[len("_stats."):]: v for k, v in sd.items() if k.startswith("_stats.")}
    weights = {k: v for k, v in sd.items() if not k.startswith("_stats.")}
    model = build_segmenter(from_dict(SegModelConfig, meta["model"]))
    load_into(model, weights, str(path))
    sml = (stats["sml_mean"], stats["sml_std"]) if "sml_mean" in stats else None
    return model.to(device).eval(), sml


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

    sd, meta = load_model(path, expect_kind="density")
    if meta.get("segmenter_sha256") != sha256_of(Path(segmenter_path)):
        raise CheckpointError(f"{path}: fitted on the segmenter {meta.get('segmenter')}, not on {segmenter_path}; "
                              "refit with `synboost fit density` for this segmenter")
    try:
        scorer = DensityScorer(meta["layers"], meta["dims"], meta["single_layer"], meta["knn_layer"], meta["k"],
                               meta["knn_reduce"], meta["bank_capacity"], meta["bank_size"], meta["knn_index"],
                               meta["knn_backend"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: density metadata does not build a scorer ({e!r})") from None
    load_into(scorer, sd, str(path))
    return scorer.to(device).eval()


def build_generator(m, size) -> torch.nn.Module:
    """The SPADE generator of a :class:`SynModelConfig` at output ``size`` (H, W)."""
    return create_model("spade_generator", label_nc=19, ngf=m.ngf, num_upsampling=m.num_upsampling, z_dim=m.z_dim,
                        use_vae=m.use_vae, edge_channel=m.edge_channel, out_size=tuple(size), nef=m.nef,
                        encoder_size=m.encoder_size, spectral=m.spectral, spade_hidden=m.spade_hidden)


def build_dissimilarity(m) -> torch.nn.Module:
    """The dissimilarity network of a :class:`DissimModelConfig`."""
    return create_model("dissimilarity", semantic=m.semantic, priors=tuple(m.priors), correlation=m.correlation,
                        spade=m.spade, width=m.width)


def build_ccfpse(**kwargs) -> torch.nn.Module:
    """SynBoost's official CC-FPSE generator (``kwargs``: its constructor's), taking our pipeline's train-id input
    through the Cityscapes train id -> label id table."""
    from synboost.data.labels import TRAIN_ID_LABEL_IDS

    return create_model("ccfpse_generator", **kwargs, train_to_label_id=TRAIN_ID_LABEL_IDS)


def load_generator(path: str | os.PathLike, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A trained generator (eval mode) from ``generator.safetensors``."""
    from synboost.config import SynModelConfig

    sd, meta = load_model(path, expect_kind="generator")
    arch = meta.get("architecture", "spade")
    if arch == "ccfpse":  # the official SynBoost synthesis net (synboost.importers.ccfpse.import_ccfpse)
        try:
            gen = build_ccfpse(**meta["model"], out_size=tuple(meta["size"]))
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: CC-FPSE metadata does not build a model ({e})") from None
    elif arch == "spade":
        gen = build_generator(from_dict(SynModelConfig, meta["model"]), meta["size"])
    else:
        raise CheckpointError(f"{path}: unknown generator architecture '{arch}' (known: spade, ccfpse)")
    load_into(gen, sd, str(path))
    return gen.to(device).eval()


def load_dissimilarity(path: str | os.PathLike, device: torch.device | str = "cpu"):
    """(dissimilarity network in eval mode, its metadata) from ``dissimilarity.safetensors``."""
    from synboost.config import DissimModelConfig

    sd, meta = load_model(path, expect_kind="dissimilarity")
    net = build_dissimilarity(from_dict(DissimModelConfig, meta["model"]))
    load_into(net, sd, str(path))
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
