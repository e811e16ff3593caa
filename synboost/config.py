"""Typed configs: dataclasses per stage, read from YAML, with dotted command-line overrides.

Every job takes a dataclass config. :func:`load_config` builds it from the dataclass defaults, merged with a YAML
file, merged with ``key.sub=value`` overrides (``--set train.lr=1e-4`` on the command line). Unknown keys and
wrong types are a :class:`ConfigError` naming the key. :func:`save_config` writes the resolved config beside a
run's outputs so that the run explains itself.

omegaconf does the merging and the type checks (structured configs); the dataclasses stay plain.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from synboost.errors import ConfigError

T = TypeVar("T")


def _one_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _explain(exc: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    if isinstance(exc, ConfigKeyError):
        return ConfigError(f"{source}: unknown config key '{key}'")
    if isinstance(exc, ValidationError):
        return ConfigError(f"{source}: bad value for '{key}': {_one_line(exc)}")
    return ConfigError(f"{source}: {_one_line(exc)}")


def load_config(schema: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Build a ``schema`` dataclass from its defaults, an optional YAML file and dotted overrides."""
    base = OmegaConf.structured(schema)
    OmegaConf.set_struct(base, True)
    merged: DictConfig = base
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found (see configs/ for examples)")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {_one_line(e)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping of config keys at the top level")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.create(data))
        except OmegaConfBaseException as e:
            raise _explain(e, str(p)) from None
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override '{ov}': expected key=value, e.g. train.lr=1e-4")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([ov]))
        except OmegaConfBaseException as e:
            raise _explain(e, f"override '{ov}'") from None
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise _explain(e, str(path or schema.__name__)) from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config dataclass (nested)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (atomically)."""
    from synboost.data.io import write_text

    path = Path(path)
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def from_dict(schema: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config dataclass from a dict (e.g. a checkpoint's metadata), with the same key checks."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(data))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise _explain(e, schema.__name__) from None


# ------------------------------------------------------------------------------------------------ the schemas


@dataclasses.dataclass
class SyntheticWorldConfig:
    """The procedural driving world (``synboost data synth``)."""

    out: str = "data/synthetic"
    n: int = 500  #: total number of scenes over all splits
    height: int = 256
    width: int = 512
    seed: int = 0
    val_fraction: float = 0.1  #: clean scenes held out for segmentation validation (mIoU)
    test_fraction: float = 0.2  #: scenes with out-of-distribution objects, written in the anomaly-folder layout
    ego_vehicle_prob: float = 0.3  #: scenes with the ego vehicle's bonnet (void) at the bottom
    max_ood_objects: int = 3  #: per test scene (at least one)
    workers: int = 0  #: processes (0 = one per core)


@dataclasses.dataclass
class LoopConfig:
    """The part of every stage's config that the engine reads."""

    epochs: int = 10
    batch_size: int = 8
    lr: float = 0.01
    weight_decay: float = 1e-4
    seed: int = 0
    amp: bool = True  #: bf16 autocast on CUDA (ignored on the CPU)
    device: str = "auto"  #: auto | cpu | cuda
    workers: int = 2  #: data-loader processes per rank
    log_every: int = 20  #: steps between log lines
    steps_per_epoch: int = 0  #: 0 = one pass over the training set
    stop_after: int = 0  #: end this run after so many epochs (pre-emptible job slots; resume continues)
    channels_last: bool = False


@dataclasses.dataclass
class SegModelConfig:
    backbone: str = "resnet50"  #: resnet50 | resnet101 | mobilenet_v3_large | tiny
    output_stride: int = 16  #: 8 or 16
    pretrained: bool = True  #: ImageNet trunk weights (from a local file, see pretrained_path)
    pretrained_path: str = ""  #: the torchvision file or its folder; default $TORCH_HOME/hub/checkpoints
    num_classes: int = 19
    aspp_dim: int = 256
    decoder_dim: int = 256
    head_dropout: float = 0.1
    width: int = 16  #: channels of the tiny backbone


@dataclasses.dataclass
class SegDataConfig:
    train: str = "cityscapes:data/cityscapes@train"  #: dataset spec (see synboost.data.datasets.open_dataset)
    val: str = "cityscapes:data/cityscapes@val"
    crop: list[int] = dataclasses.field(default_factory=lambda: [512, 1024])  #: training crop (H, W)
    scale_min: float = 0.5
    scale_max: float = 2.0
    flip: bool = True
    val_size: list[int] = dataclasses.field(default_factory=list)  #: resize validation images to (H, W); [] = native


@dataclasses.dataclass
class SegmentationConfig:
    """``synboost train segmentation``: DeepLabV3+ on Cityscapes or the synthetic world."""

    out: str = "runs/segmentation"
    model: SegModelConfig = dataclasses.field(default_factory=SegModelConfig)
    data: SegDataConfig = dataclasses.field(default_factory=SegDataConfig)
    train: LoopConfig = dataclasses.field(default_factory=LoopConfig)
    momentum: float = 0.9
    poly_power: float = 0.9
    sml_stats: bool = True  #: fit the standardized-max-logit class statistics on the training set at the end


@dataclasses.dataclass
class PipelineConfig:
    """A pipeline file (``pipelines/*.yaml``): how trained stages compose into one anomaly detector."""

    method: str = "entropy"  #: msp | maxlogit | entropy | energy | sml | mcdropout (later: synboost, pebal)
    segmenter: str = ""  #: our segmenter checkpoint (.safetensors); relative paths are relative to the file
    input_size: list[int] = dataclasses.field(default_factory=list)  #: resize inputs to (H, W); [] = native
    batch_size: int = 4
    device: str = "auto"
    mc_samples: int = 8  #: passes for mcdropout


@dataclasses.dataclass
class DemoConfig:
    """``synboost demo``: the whole job on the embedded synthetic world, on the CPU, in minutes."""

    out: str = "runs/demo"
    world: SyntheticWorldConfig = dataclasses.field(
        default_factory=lambda: SyntheticWorldConfig(out="runs/demo/world", n=360, height=128, width=256))
    segmentation: SegmentationConfig = dataclasses.field(default_factory=lambda: SegmentationConfig(
        out="runs/demo/segmentation",
        model=SegModelConfig(backbone="tiny", pretrained=False, aspp_dim=64, decoder_dim=64, width=24),
        data=SegDataConfig(train="synthetic:runs/demo/world@train", val="synthetic:runs/demo/world@val",
                           crop=[128, 256], scale_min=0.75, scale_max=1.5),
        train=LoopConfig(epochs=12, batch_size=8, lr=0.05, workers=0, log_every=10),
    ))
    methods: list[str] = dataclasses.field(default_factory=lambda: ["msp", "maxlogit", "entropy", "energy", "sml"])
