"""PEBAL fine-tuning for real on the tiny synthetic world: it must beat the plain energy of the same segmenter."""
import json

import numpy as np
import torch

from conftest import logged_steps, torchrun_cli
from synboost.config import PebalConfig, load_config
from synboost.hub.checkpoint import load_model


def _cfg(world, segmenter, out, *extra):
    return load_config(PebalConfig, None, [
        f"out={out}", f"segmenter={segmenter}", f"data.train=synthetic:{world}@train",
        f"data.val=synthetic:{world}@val", "data.outliers=synthetic", "data.mix_ratio=1.0", "data.crop=[64,128]",
        "data.scale_min=0.75", "data.scale_max=1.25", "data.val_images=0", "loss.m_in=-9", "loss.m_out=-4",
        "train.batch_size=6", "train.workers=0", "train.lr=0.002", "train.log_every=2",
        "data.object_shapes=[blob,poly,box]", "data.object_fills=[solid,noise,gradient]", *extra])


def test_pebal_beats_the_energy_on_held_out_outliers_and_finds_unseen_objects(tiny_world, tiny_segmenter, tmp_path):
    from synboost.data.kinds import open_dataset
    from synboost.detectors.detector import load_pipeline
    from synboost.jobs.evaluate import evaluate
    from synboost.training.pebal import train_pebal

    seg = tiny_segmenter["segmenter"]
    s = train_pebal(_cfg(tiny_world, seg, tmp_path / "pebal", "train.epochs=6"), progress=False)
    assert s["finished"] and s["best_val"]["ap"] > s["base_val"]["ap"]
    sd, meta = load_model(s["pebal"], "segmenter")
    assert meta["model"]["abstention"] and sd["classifier.weight"].shape[0] == 20
    base, _ = load_model(seg, "segmenter")
    for k, v in base.items():  # below the head nothing moved, BatchNorm statistics included
        if k.split(".")[0] not in ("final", "classifier") and not k.startswith("_stats."):
            assert torch.equal(v, sd[k]), k
    det = load_pipeline(s["pipeline"])
    assert det.method == "pebal" and det.shared_trunk
    # the test scenes also hold object shapes and fills that PEBAL never saw in training
    rep = evaluate(det, open_dataset(f"synthetic:{tiny_world}"), ["energy", "pebal"], progress=False)
    rows = {r["method"]: r for r in rep["results"]}
    # Against the plain energy PEBAL is asserted where it trains: on the held-out validation scenes with pasted
    # outliers (best_val against base_val above). On this world's 12 test scenes the margin is too small to assert
    # and flips with the world: v3 gave AP 6.2 against 4.9, v4 (clutter across the road) 10.0 against 10.2; on the
    # demo-size world (72 test scenes) tests/test_demo.py asserts 1.5x the energy. Here the pipeline's PEBAL map
    # must find the unseen objects far above chance (v4: 7.5x the pixel ratio).
    ratio = rep["anomaly_pixel_ratio"]
    assert rows["pebal"]["ap"] > 5 * ratio and rows["pebal"]["auroc"] > 0.7, (ratio, rows)
    log = [json.loads(line) for line in (tmp_path / "pebal" / "train_log.jsonl").read_text().splitlines()]
    assert {"pal_in", "pal_mix", "energy_margin"} <= set(log[0])


def test_pebal_resumes_and_refuses_the_wrong_checkpoint(tiny_world, tiny_segmenter, tmp_path):
    import pytest

    from synboost.errors import ConfigError
    from synboost.training.pebal import train_pebal

    seg = tiny_segmenter["segmenter"]
    common = ["train.epochs=2", "train.steps_per_epoch=2"]
    a = train_pebal(_cfg(tiny_world, seg, tmp_path / "a", *common), progress=False)
    part = train_pebal(_cfg(tiny_world, seg, tmp_path / "b", *common, "train.stop_after=1"), progress=False)
    assert not part["finished"]
    b = train_pebal(_cfg(tiny_world, seg, tmp_path / "b", *common), resume=True, progress=False)
    sa, _ = load_model(a["last"])
    sb, _ = load_model(b["last"])
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    with pytest.raises(ConfigError, match="already a PEBAL fine-tune"):
        train_pebal(_cfg(tiny_world, a["pebal"], tmp_path / "c", *common), progress=False)
    gen_like = tmp_path / "g.safetensors"
    from synboost.hub.checkpoint import save_model
    save_model(gen_like, {"w": torch.zeros(1)}, {"kind": "generator"})
    with pytest.raises(ConfigError, match="is a 'generator' checkpoint"):
        train_pebal(_cfg(tiny_world, gen_like, tmp_path / "d", *common), progress=False)


def test_anomaly_mix_training_set_is_deterministic_per_epoch(tiny_world):
    from synboost.data.anomalies import OUTLIER
    from synboost.data.kinds import open_dataset
    from synboost.training.pebal import AnomalyMixTrainSet, open_outliers

    cfg = _cfg(tiny_world, "unused", "unused", "data.mix_ratio=0.5")
    reader = open_dataset(cfg.data.train)
    ds = AnomalyMixTrainSet(reader, open_outliers(cfg.data), cfg, seed=0)
    n = len(reader)
    assert len(ds) == n + round(0.5 * n)
    x1, y1 = ds[n + 1]
    x2, y2 = ds[n + 1]
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    mixed = [int((ds[i][1] == OUTLIER).any()) for i in range(n, len(ds))]
    assert np.mean(mixed) > 0.5  # most mixed samples keep their object after the crop
    assert not any((ds[i][1] == OUTLIER).any() for i in range(5))  # plain samples have none
    ds.set_epoch(1)
    assert not torch.equal(ds[n + 1][0], x1)  # re-drawn every epoch


def test_pebal_ddp_two_cpu_processes(tiny_world, tiny_segmenter, tmp_path):
    """torchrun with 2 gloo processes: the head trains under DDP, rank 0 alone logs, checkpoints and writes the
    pipeline file, and the trunk stays frozen on every rank."""
    out = tmp_path / "ddp"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"out: {out}\nsegmenter: {tiny_segmenter['segmenter']}\nloss: {{m_in: -9, m_out: -4}}\n"
        f"data: {{train: 'synthetic:{tiny_world}@train', val: 'synthetic:{tiny_world}@val', outliers: synthetic, "
        "mix_ratio: 1.0, crop: [64, 128], val_images: 4}\n"
        "train: {epochs: 1, batch_size: 4, workers: 0, steps_per_epoch: 2, log_every: 1, lr: 0.001}\n")
    torchrun_cli(["train", "pebal", "--config", cfg], port=29537)
    assert logged_steps(out) == [1, 2]  # rank 0 only
    sd, meta = load_model(out / "pebal.safetensors", "segmenter")
    base, _ = load_model(tiny_segmenter["segmenter"], "segmenter")
    assert meta["model"]["abstention"]
    below = [k for k in base if k.split(".")[0] not in ("final", "classifier") and not k.startswith("_stats.")]
    assert below and all(torch.equal(base[k], sd[k]) for k in below)
    assert not torch.equal(sd["classifier.weight"][:19], base["classifier.weight"])
    assert (out / "pipeline.yaml").is_file()
