import pytest

from synboost.config import SegmentationConfig, SyntheticWorldConfig, from_dict, load_config, save_config, to_dict
from synboost.errors import ConfigError


def test_defaults_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  backbone: tiny\ntrain:\n  epochs: 3\n")
    cfg = load_config(SegmentationConfig, f, ["train.lr=0.5", "data.crop=[32,64]"])
    assert cfg.model.backbone == "tiny" and cfg.train.epochs == 3 and cfg.train.lr == 0.5
    assert cfg.data.crop == [32, 64]
    assert cfg.model.output_stride == 16  # default kept


def test_unknown_key_names_the_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match="train.epochz"):
        load_config(SegmentationConfig, f)
    with pytest.raises(ConfigError, match="model.bakbone"):
        load_config(SegmentationConfig, None, ["model.bakbone=tiny"])


def test_wrong_type_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(SegmentationConfig, None, ["train.lr=fast"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(SegmentationConfig, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(SegmentationConfig, None, ["train.lr"])


def test_save_roundtrip(tmp_path):
    cfg = load_config(SyntheticWorldConfig, None, ["n=7", "height=32"])
    p = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(SyntheticWorldConfig, p)
    assert to_dict(again) == to_dict(cfg)
    assert from_dict(SyntheticWorldConfig, to_dict(cfg)) == cfg


def test_every_shipped_config_loads():
    from pathlib import Path

    from synboost.config import PipelineConfig

    root = Path(__file__).resolve().parents[1]
    from synboost.config import (
        AblationConfig,
        BackboneConfig,
        CompareConfig,
        DensityConfig,
        DissimilarityConfig,
        OutlierTrainingConfig,
        PebalConfig,
        SynthesisConfig,
    )

    schemas = {"segmentation": SegmentationConfig, "synthesis": SynthesisConfig, "dissimilarity": DissimilarityConfig,
               "ablation": AblationConfig, "data": SyntheticWorldConfig, "pebal": PebalConfig,
               "density": DensityConfig, "compare": CompareConfig, "outlier": OutlierTrainingConfig,
               "backbone": BackboneConfig}
    assert {p.name for p in (root / "configs").iterdir() if p.is_dir()} <= set(schemas) | {"reproduce", "segmenter"}
    from synboost.detectors.segmenters import read_segmenter_spec

    specs = sorted((root / "configs" / "segmenter").glob("*.yaml"))
    assert specs
    for f in specs:  # segmenter specs (bring your own network) are read by their own reader
        read_segmenter_spec(f)
    for folder, schema in schemas.items():
        files = sorted((root / "configs" / folder).glob("*.yaml"))
        assert files, folder
        for f in files:
            load_config(schema, f)
    for f in sorted((root / "pipelines").glob("*.yaml")):
        load_config(PipelineConfig, f)
