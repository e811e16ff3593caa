"""Importers for the official SynBoost and PEBAL checkpoints -> our self-describing safetensors checkpoints.

Each importer reads the foreign ``.pth`` with ``weights_only=True`` (tensors and plain containers only; the numpy
scalar an NVIDIA training dict may carry as its ``mean_iu`` is allowed too), unwraps it, renames its keys, builds
our model, loads it STRICTLY and writes ``dst`` with metadata (``kind``, ``model`` config, ``imported_from``,
``importer``), which :func:`synboost.detectors.components.load_segmenter` / ``load_dissimilarity`` read like any
of ours.

Key renaming (official name, after the wrapper is stripped -> ours):

=========================================  ====================================================================
NVIDIA DeepWV3Plus (``cityscapes_best.pth``; ``{"state_dict": {"module." + key: ...}}`` or a bare state_dict)
---------------------------------------------------------------------------------------------------------------
``mod1.*`` .. ``mod7.*``                   ``trunk.mod1.*`` .. ``trunk.mod7.*`` (``pool2``/``pool3`` hold nothing)
``aspp.*``, ``bot_fine.*``, ``bot_aspp.*``  unchanged
``final.0|1|3|4.*``                        unchanged (3x3 conv, BN, 3x3 conv, BN)
``final.6.weight``                         ``classifier.weight`` (19 x 256 x 1 x 1; 20 rows for PEBAL)
``criterion.*``, ``dsn.*``, ``final2.*``   dropped: not part of DeepWV3Plus; SynBoost's ``forgiving_state_restore``
                                           ignores every key the network lacks, PEBAL's loader drops
                                           ``criterion.nll_loss.weight``, ``dsn.4(.0).bias``, ``final2.0.bias``
=========================================  ====================================================================

PEBAL (``best_ad_ckpt.pth``; ``{"model": {"branch1." + key: ...}, "optimizer": ..., ...}``): the same table after
stripping ``branch1.`` (and ``module.`` if present); ``final.6.weight`` has 20 rows, the last one the abstention
class, so the model config gets ``abstention: true``.

SynBoost dissimilarity (``best_net_*.pth``, a bare state_dict): names are kept 1:1 (our
:class:`~synboost.models.dissimilarity.DissimilarityNet` uses the official names).

BatchNorm ``num_batches_tracked`` counters missing from a file (saved before PyTorch 0.4.1) are set to 0, as
PyTorch's own loader does for such files; they take no part in inference.
"""
from __future__ import annotations

import os
import re
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from synboost.config import DissimModelConfig, SegModelConfig
from synboost.detectors.components import save_component
from synboost.errors import CheckpointError
from synboost.hub.checkpoint import load_foreign, load_into
from synboost.models import create_model

SEGMENTER_EXPECT = "NVIDIA's DeepWV3Plus WideResNet38 Cityscapes checkpoint (SynBoost's cityscapes_best.pth)"
PEBAL_EXPECT = "PEBAL's DeepWV3Plus checkpoint with 20 outputs (best_ad_ckpt.pth)"

#: prefixes of NVIDIA checkpoint keys that no official loader puts into DeepWV3Plus
SEGMENTER_SKIPPED = ("criterion.", "dsn.", "final2.")

#: the dissimilarity checkpoints of SynBoost's models.tar: our model config, the official experiment and whether
#: the official test config ensembles the output with the entropy (0.75 * dissimilarity + 0.25 * entropy)
DISSIM_VARIANTS: dict[str, dict[str, Any]] = {
    "main": {
        "model": {"priors": ["entropy", "perceptual", "distance"], "semantic": True, "correlation": True,
                  "spade": "decoder"},
        "file": "best_net_baseline_void_prior_spadedecoder_mult_3.pth", "ensemble": True,
        "class": "DissimNetPrior(vgg16, semantic, correlation, prior, spade='decoder')",
    },
    "baseline": {
        "model": {"priors": [], "semantic": True, "correlation": True, "spade": "none"},
        "file": "best_net_baseline_mult_3.pth", "ensemble": False,
        "class": "DissimNet(vgg16, semantic, correlation, prior=False, spade='')",
    },
}
#: (H, W) at which the official dissimilarity network runs and was trained
DISSIM_SIZE = (256, 512)


# ---------------------------------------------------------------------------------------------- renaming

def segmenter_key(official: str) -> str:
    """An official DeepWV3Plus key (no wrapper prefix) -> our DeepLabV3+ key."""
    if re.match(r"mod\d+\.", official):
        return "trunk." + official
    if official.startswith("final.6."):
        return "classifier." + official[len("final.6."):]
    return official


# ---------------------------------------------------------------------------------------------- importers

def import_segmenter(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """NVIDIA's DeepWV3Plus (WideResNet38, output stride 8, 19 classes) -> our segmenter checkpoint ``dst``.

    ``criterion.*``, ``dsn.*`` and ``final2.*`` keys are dropped (see the module table); any other key that
    does not fit is an error."""
    return _import_segmenter(src, dst, abstention=False, importer="segmenter", expect=SEGMENTER_EXPECT,
                             strip=("module.",))


def import_pebal(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """PEBAL's ``best_ad_ckpt.pth`` -> our segmenter checkpoint with ``abstention: true`` (20 outputs; ``forward``
    gives the 19 inlier logits, whose free energy is PEBAL's score)."""
    return _import_segmenter(src, dst, abstention=True, importer="pebal", expect=PEBAL_EXPECT,
                             strip=("module.", "branch1."))


def import_dissimilarity(src: str | os.PathLike, dst: str | os.PathLike, variant: str = "main") -> Path:
    """An official dissimilarity ``best_net_*.pth`` -> our dissimilarity checkpoint ``dst`` (input size 256x512).

    ``variant``: ``main`` = ``best_net_baseline_void_prior_spadedecoder_mult_3.pth`` (priors entropy, perceptual
    difference, distance; SPADE decoder), ``baseline`` = ``best_net_baseline_mult_3.pth`` (no priors, plain
    decoder)."""
    if variant not in DISSIM_VARIANTS:
        raise CheckpointError(f"unknown dissimilarity variant '{variant}'; choose from {', '.join(DISSIM_VARIANTS)}")
    v = DISSIM_VARIANTS[variant]
    expect = f"the official SynBoost dissimilarity checkpoint {v['file']} ({v['class']})"
    src = Path(src)
    sd = _state_dict(_read(src, expect), src, expect, strip=("module.",))
    cfg = DissimModelConfig(**v["model"], width=1.0, vgg_pretrained=False)
    net = create_model("dissimilarity", semantic=cfg.semantic, priors=tuple(cfg.priors),
                       correlation=cfg.correlation, spade=cfg.spade, width=cfg.width)
    _load(net, sd, src, expect)
    importer = f"dissimilarity-{variant}"
    return save_component(dst, net, "dissimilarity", cfg, size=list(DISSIM_SIZE), priors=list(cfg.priors),
                          imported_from=src.name, importer=importer,
                          official={"file": v["file"], "ensemble": v["ensemble"],
                                    "ensemble_weights": [0.75, 0.25] if v["ensemble"] else None})


def _import_segmenter(src, dst, *, abstention: bool, importer: str, expect: str, strip: tuple[str, ...]) -> Path:
    src = Path(src)
    raw = _state_dict(_read(src, expect), src, expect, strip)
    sd = {segmenter_key(k): v for k, v in raw.items() if not k.startswith(SEGMENTER_SKIPPED)}
    # the official head has no dropout before final.6 (ours is parameter-free, so 0 keeps the net identical)
    cfg = SegModelConfig(backbone="wrn38", output_stride=8, pretrained=False, num_classes=19, aspp_dim=256,
                         decoder_dim=256, head_dropout=0.0, abstention=abstention)
    model = create_model("deeplabv3plus", backbone=cfg.backbone, num_classes=cfg.num_classes,
                         output_stride=cfg.output_stride, aspp_dim=cfg.aspp_dim, decoder_dim=cfg.decoder_dim,
                         head_dropout=cfg.head_dropout, width=cfg.width, abstention=cfg.abstention)
    _load(model, sd, src, expect)
    return save_component(dst, model, "segmenter", cfg, architecture="deeplabv3plus", imported_from=src.name,
                          importer=importer)


#: importer name -> ``(src, dst) -> Path`` (the names used by the weights manifest and the CLI)
IMPORTERS: dict[str, Callable[[str | os.PathLike, str | os.PathLike], Path]] = {
    "segmenter": import_segmenter,
    "pebal": import_pebal,
    "dissimilarity-main": partial(import_dissimilarity, variant="main"),
    "dissimilarity-baseline": partial(import_dissimilarity, variant="baseline"),
}


# ---------------------------------------------------------------------------------------------- helpers

def _numpy_safe_globals() -> list:
    """The numpy scalar reconstructors (under the numpy 1 and 2 module names) and numeric dtypes: what a training
    dict's metrics (``mean_iu``) need; data only, no code."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1
        from numpy.core.multiarray import scalar
    allowed = [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in ("Float64DType", "Float32DType", "Float16DType", "Int64DType",
                                                 "Int32DType", "BoolDType") if hasattr(dtypes, n)]
    return allowed


def _read(src: Path, expect: str) -> Any:
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return load_foreign(src)
    except CheckpointError as e:
        raise CheckpointError(f"{e}; expected {expect}") from None


def _state_dict(obj: Any, src: Path, expect: str, strip: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors of a foreign checkpoint, unwrapped from ``state_dict`` / ``model`` and without the prefixes
    ``strip`` (each removed where present, in order)."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{src}: expected {expect}, found {_describe(obj)}")
    out = {}
    for k, v in obj.items():
        k = str(k)
        for p in strip:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def _load(model: torch.nn.Module, sd: dict[str, torch.Tensor], src: Path, expect: str) -> None:
    """Strict load; absent BatchNorm counters become 0; a misfit names the file, what was expected and what the
    file looks like."""
    own = model.state_dict()
    sd = dict(sd)
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = torch.zeros_like(v)
    hint = _looks_like(sd)
    load_into(model, sd, f"{src} (expected {expect}{'; the file looks like ' + hint if hint else ''})")


def _looks_like(sd: Mapping[str, torch.Tensor]) -> str:
    keys = list(sd)
    if any(k.startswith("vgg_encoder.") for k in keys):
        variant = "main" if any(k.startswith("prior_encoder.") for k in keys) else "baseline"
        return f"a SynBoost dissimilarity checkpoint (importer 'dissimilarity-{variant}')"
    if any(k.startswith("branch1.") for k in keys):
        return "a PEBAL checkpoint (importer 'pebal')"
    head = sd.get("classifier.weight", sd.get("final.6.weight"))
    if any(k.startswith(("mod1.", "trunk.mod1.")) for k in keys) and head is not None and head.dim() == 4:
        n = head.shape[0]
        known = {19: "the NVIDIA 19-class segmenter (importer 'segmenter')",
                 20: "a 20-output PEBAL segmenter (importer 'pebal')"}
        return known.get(n, f"a WideResNet38 segmenter with {n} outputs")
    if any(k.startswith("trunk.") for k in keys):
        return "a state dict of synboost's own segmenter (not an official file)"
    return ""


def _describe(obj: Any) -> str:
    if not isinstance(obj, Mapping):
        return f"a {type(obj).__name__}"
    if not obj:
        return "an empty dict"
    keys = [str(k) for k in obj]
    shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
    what = "non-tensor entries" if any(isinstance(v, torch.Tensor) for v in obj.values()) else "no tensors"
    return f"a dict with {what} (keys: {shown})"
