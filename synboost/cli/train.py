"""``synboost train STAGE``: one generic command over :data:`STAGES` (stage -> config class, train function,
summary lines); ``synboost fit density``: the post-hoc density fit (no gradient training)."""
from __future__ import annotations

import argparse
import importlib
from typing import Any, Callable, NamedTuple

from synboost.cli.common import RESUMES, add_config, add_fresh, no_resume
from synboost.config import (
    BackboneConfig,
    DissimilarityConfig,
    OutlierTrainingConfig,
    PebalConfig,
    SegmentationConfig,
    SynthesisConfig,
)


def _lazy(module: str, name: str) -> Callable[..., dict]:
    """``module.name``, imported at the first call (so that ``synboost --help`` does not import torch)."""

    def call(*args: Any, **kw: Any) -> dict:
        return getattr(importlib.import_module(module), name)(*args, **kw)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{module}.{name}"
    return call


def _segmentation(s: dict) -> list[str]:
    return [f"segmenter: {s.get('segmenter', s['last'])}; validation {s['val']}"] \
        + ([f"pipeline file: {s['pipeline']}"] if "pipeline" in s else [])


def _synthesis(s: dict) -> list[str]:
    return [f"generator: {s.get('generator', s['last'])}; validation {s['val']}"]


def _dissimilarity(s: dict) -> list[str]:
    return [f"dissimilarity: {s.get('dissimilarity', s['last'])}; held-out {s['val']}"] \
        + ([f"SynBoost pipeline file: {s['pipeline']}"] if "pipeline" in s else [])


def _pebal(s: dict) -> list[str]:
    return [f"PEBAL: {s.get('pebal', s['last'])}; validation {s['best_val']}"] \
        + ([f"pipeline file: {s['pipeline']} (method pebal, the base segmenter's baselines beside it)"]
           if "pipeline" in s else [])


def _outlier(s: dict) -> list[str]:
    return ([f"re-trained segmenter: {s.get('segmenter', s['last'])}; validation {s['best_val']}"]
            + ([f"the starting segmenter: {s['base_val']}"] if s.get("base_val") else [])
            + ([f"pipeline file: {s['pipeline']}"] if "pipeline" in s else []))


class Stage(NamedTuple):
    """A trainable stage: its config schema, ``train(cfg, resume=...) -> summary`` and the summary's lines."""

    config: type
    train: Callable[..., dict]
    summary: Callable[[dict], list[str]]


#: stage name -> how `synboost train NAME` runs it
STAGES: dict[str, Stage] = {
    "segmentation": Stage(SegmentationConfig, _lazy("synboost.training.segmentation", "train_segmentation"),
                          _segmentation),
    "synthesis": Stage(SynthesisConfig, _lazy("synboost.training.synthesis", "train_synthesis"), _synthesis),
    "dissimilarity": Stage(DissimilarityConfig, _lazy("synboost.training.dissimilarity", "train_dissimilarity"),
                           _dissimilarity),
    "pebal": Stage(PebalConfig, _lazy("synboost.training.pebal", "train_pebal"), _pebal),
    "outlier": Stage(OutlierTrainingConfig, _lazy("synboost.training.outlier", "train_outlier"), _outlier),
    "backbone": Stage(BackboneConfig, _lazy("synboost.training.backbone", "train_backbone"),
                      lambda s: [f"VGG{d} trunk: {s['trunks'].get(d, r['last'])}; validation {r['best_val']}"
                                 for d, r in s["runs"].items()]),
}


def register(sub) -> None:
    """``train STAGE`` and ``fit density``."""
    t = sub.add_parser("train", help="train one stage (resumes the run folder's last checkpoint by default)")
    t.add_argument("stage", choices=list(STAGES),
                   help="outlier: re-train the whole segmenter with outlier data for method void, outlier_head or "
                        "dirichlet (configs/outlier/)")
    add_config(t, required=True)
    add_fresh(t, "ignore the run folder's last checkpoint", "train", old="--resume")
    t.add_argument("--logger", choices=["jsonl", "tensorboard"],
                   help="tensorboard: also log scalars, validation and sample grids to <out>/tensorboard/ "
                        "(pip install tensorboard); train_log.jsonl is always written (= --set train.logger=...)")
    t.set_defaults(run=run, interrupt=RESUMES)

    f = sub.add_parser("fit", help="fit a post-hoc model on a trained segmenter's features (no gradient training)")
    f.add_argument("what", choices=["density"], help="density: the Fishyscapes embedding-density baselines "
                                                     "(per-layer Gaussians, kNN bank, logistic regression)")
    add_config(f, required=True)
    f.set_defaults(run=run, interrupt=no_resume("fit density"))


def run(a: argparse.Namespace) -> None:
    """``train``: the stage's config -> its train function -> its summary lines; ``fit density``."""
    from synboost.config import load_config

    if a.verb == "fit":
        return _fit_density(a)
    stage = STAGES[a.stage]
    overrides = list(a.overrides) + ([f"train.logger={a.logger}"] if a.logger and a.logger != "jsonl" else [])
    summary = stage.train(load_config(stage.config, a.config, overrides), resume=not a.fresh)
    for line in stage.summary(summary):
        print(line)


def _fit_density(a: argparse.Namespace) -> None:
    from synboost.config import DensityConfig, load_config
    from synboost.training.density import fit_density

    s = fit_density(load_config(DensityConfig, a.config, a.overrides))
    print(f"density: {s['density']} ({s['images']} images; kNN bank {s['bank_size']} rows, {s['bank_mb']:.1f} MB; "
          f"{s['seconds']['statistics'] + s['seconds']['regression']:.0f} s)")
    print(f"pipeline file: {s['pipeline']} (methods knn, nll_single, nll_min, density_logreg beside the baselines)")
