import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A small synthetic world shared by the tests (64x128 scenes)."""
    from synboost.config import SyntheticWorldConfig
    from synboost.data.synthetic import write_world

    out = tmp_path_factory.mktemp("world")
    write_world(SyntheticWorldConfig(out=str(out), n=60, height=64, width=128, seed=3, workers=1), progress=False)
    return out


def seg_config(world, out, *extra):
    """A small segmentation config on a synthetic world (shared by the segmentation and PEBAL tests)."""
    from synboost.config import SegmentationConfig, load_config

    return load_config(SegmentationConfig, None, [
        f"out={out}", "model.backbone=tiny", "model.pretrained=false", "model.aspp_dim=32", "model.decoder_dim=32",
        f"data.train=synthetic:{world}@train", f"data.val=synthetic:{world}@val", "data.crop=[64,128]",
        "data.scale_min=0.75", "data.scale_max=1.25", "train.batch_size=6", "train.workers=0", "train.lr=0.05",
        "train.log_every=2", *extra])


@pytest.fixture(scope="session")
def tiny_segmenter(tiny_world, tmp_path_factory):
    """A small segmenter trained for real on the tiny world (30 epochs): the summary of its run."""
    from synboost.training.segmentation import train_segmentation

    out = tmp_path_factory.mktemp("segmenter")
    return train_segmentation(seg_config(tiny_world, out, "train.epochs=30", "model.width=16"), progress=False)
