"""Typed configs: dataclasses per stage, read from YAML, with dotted command-line overrides.

Every job takes a dataclass config. :func:`load_config` builds it from the dataclass defaults, merged with a YAML
file, merged with ``key.sub=value`` overrides (``--set train.lr=1e-4`` on the command line). Unknown keys and
wrong types are a :class:`ConfigError` naming the key. :func:`save_config` writes the resolved config beside a
run's outputs so that the run explains itself.

omegaconf does the merging and the type checks (structured configs); the dataclasses stay plain.
:mod:`~synboost.config.loading` reads and writes them, :mod:`~synboost.config.stages` holds the training stages'
schemas and :mod:`~synboost.config.jobs` those of the jobs that compose them; all are importable from here.
"""
from synboost.config.jobs import (
    AblationConfig,
    CompareConfig,
    DemoConfig,
    ExpectedResult,
    PipelineComponents,
    PipelineConfig,
    PipelineDefaults,
    PipelineScore,
    ReproduceConfig,
    ReproduceData,
)
from synboost.config.loading import from_dict, load_config, merge_config, save_config, to_dict
from synboost.config.stages import (
    BackboneConfig,
    BackboneDataConfig,
    BackboneNetConfig,
    DensityConfig,
    DensityDataConfig,
    DensityModelConfig,
    DissimDataConfig,
    DissimilarityConfig,
    DissimModelConfig,
    LoopConfig,
    OutlierDataConfig,
    OutlierLossConfig,
    OutlierTrainingConfig,
    PebalConfig,
    PebalDataConfig,
    PebalLossConfig,
    SegDataConfig,
    SegmentationConfig,
    SegModelConfig,
    SynthesisConfig,
    SynthesisDataConfig,
    SynthesisModelConfig,
    SyntheticWorldConfig,
)

__all__ = [
    "AblationConfig",
    "BackboneConfig",
    "BackboneDataConfig",
    "BackboneNetConfig",
    "CompareConfig",
    "DemoConfig",
    "DensityConfig",
    "DensityDataConfig",
    "DensityModelConfig",
    "DissimDataConfig",
    "DissimModelConfig",
    "DissimilarityConfig",
    "ExpectedResult",
    "LoopConfig",
    "OutlierDataConfig",
    "OutlierLossConfig",
    "OutlierTrainingConfig",
    "PebalConfig",
    "PebalDataConfig",
    "PebalLossConfig",
    "PipelineComponents",
    "PipelineConfig",
    "PipelineDefaults",
    "PipelineScore",
    "ReproduceConfig",
    "ReproduceData",
    "SegDataConfig",
    "SegModelConfig",
    "SegmentationConfig",
    "SynthesisDataConfig",
    "SynthesisModelConfig",
    "SynthesisConfig",
    "SyntheticWorldConfig",
    "from_dict",
    "load_config",
    "merge_config",
    "save_config",
    "to_dict",
]

#: the names of version 0.1 (``Syn...`` read as "synthetic" beside :class:`SyntheticWorldConfig`)
SynModelConfig = SynthesisModelConfig
SynDataConfig = SynthesisDataConfig
