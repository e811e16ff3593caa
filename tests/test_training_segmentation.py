"""The segmentation stage trained for real on the synthetic world (small, CPU)."""
import json

import numpy as np
import pytest
import torch

from conftest import logged_steps, torchrun_cli
from conftest import seg_config as _cfg
from synboost.hub.checkpoint import load_model


def test_resume_equals_uninterrupted(tiny_world, tmp_path):
    from synboost.training.segmentation import train_segmentation

    common = ["train.epochs=2", "train.steps_per_epoch=3", "sml_stats=false"]
    train_segmentation(_cfg(tiny_world, tmp_path / "a", *common), progress=False)
    part = train_segmentation(_cfg(tiny_world, tmp_path / "b", *common, "train.stop_after=1"), progress=False)
    assert not part["finished"] and not (tmp_path / "b" / "segmenter.safetensors").exists()
    rest = train_segmentation(_cfg(tiny_world, tmp_path / "b", *common), resume=True, progress=False)
    assert rest["finished"]
    a, _ = load_model(tmp_path / "a" / "last.safetensors")
    b, meta = load_model(tmp_path / "b" / "last.safetensors")
    assert meta["epoch"] == 1
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = [json.loads(line) for line in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert any("val_score" in r for r in log) and any("lr" in r for r in log)
    assert (tmp_path / "a" / "config.yaml").is_file()


def test_trained_segmenter_beats_chance_and_baselines_find_anomalies(tiny_world, tiny_segmenter, tmp_path):
    """A small segmenter trained for a few CPU-minutes: mIoU floor on held-out scenes, and every post-hoc
    baseline ranks anomaly pixels above the anomaly pixel ratio (the AP of a random score)."""
    from synboost.data.kinds import open_dataset
    from synboost.detectors.detector import load_pipeline
    from synboost.jobs.evaluate import evaluate

    s = tiny_segmenter
    miou = s["val"]["score"]
    # always predicting the most frequent class (road) scores about 1/19 of road's IoU: ~0.02
    assert miou > 0.2, miou
    det = load_pipeline(s["pipeline"])
    rep = evaluate(det, open_dataset(f"synthetic:{tiny_world}"), ["msp", "maxlogit", "entropy", "energy", "sml"],
                   tmp_path / "eval", progress=False)
    ratio = rep["anomaly_pixel_ratio"]
    for row in rep["results"]:
        assert row["ap"] > 1.5 * ratio, row
        assert row["auroc"] > 0.6, row
    assert (tmp_path / "eval" / "curves.png").stat().st_size > 1000
    assert list((tmp_path / "eval" / "examples").glob("*.png"))


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_ddp_two_cpu_processes(tiny_world, tmp_path):
    """torchrun with 2 gloo processes: trains, rank 0 alone logs and checkpoints."""
    cfg = tmp_path / "c.yaml"
    out = tmp_path / "ddp"
    cfg.write_text(
        f"out: {out}\nsml_stats: false\nmodel: {{backbone: tiny, pretrained: false, aspp_dim: 32, decoder_dim: 32}}\n"
        f"data: {{train: 'synthetic:{tiny_world}@train', val: 'synthetic:{tiny_world}@val', crop: [64, 128]}}\n"
        "train: {epochs: 1, batch_size: 4, workers: 0, steps_per_epoch: 2, log_every: 1}\n")
    torchrun_cli(["train", "segmentation", "--config", cfg], port=29533)
    assert logged_steps(out) == [1, 2]  # rank 0 only
    sd, meta = load_model(out / "segmenter.safetensors", "segmenter")
    assert meta["epoch"] == 0 and np.isfinite(json.loads((out / "summary.json").read_text())["val"]["score"])


def test_divergence_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tiny_world, tmp_path, monkeypatch):
    from synboost.errors import SynboostError
    from synboost.training.segmentation import SegmentationTask, train_segmentation

    cfg = _cfg(tiny_world, tmp_path / "nan", "train.epochs=3", "train.steps_per_epoch=2", "sml_stats=false")
    real_step = SegmentationTask.train_step
    calls = {"n": 0}

    def step(self, model, batch, device):
        calls["n"] += 1
        loss, logs = real_step(self, model, batch, device)
        return (loss * float("nan"), logs) if calls["n"] == 4 else (loss, logs)  # epoch 2, step 2

    monkeypatch.setattr(SegmentationTask, "train_step", step)
    with pytest.raises(SynboostError, match=r"loss became nan at epoch 2 step 2; the last good checkpoint is .*last"):
        train_segmentation(cfg, progress=False)
    _, meta = load_model(tmp_path / "nan" / "last.safetensors")
    assert meta["epoch"] == 0  # epoch 1's checkpoint, untouched by the diverged epoch


def test_the_same_seed_twice_gives_bitwise_the_same_weights(tiny_world, tmp_path):
    """What the README's reproducibility claim rests on: a tiny stage trained twice, on this machine, from scratch."""
    from synboost.hub.checkpoint import load_model
    from synboost.training.segmentation import train_segmentation

    runs = [train_segmentation(_cfg(tiny_world, tmp_path / str(i), "train.epochs=1", "model.width=8"),
                               progress=False) for i in range(2)]
    a, _ = load_model(runs[0]["last"])
    b, _ = load_model(runs[1]["last"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
