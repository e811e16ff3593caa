"""Training curves: the engine's records in TensorBoard (scalars at the global step, validation per epoch, the
sample grids a task writes), the same numbers and JSONL with or without it, one line when tensorboard is missing,
and ``synboost plot-log`` from the JSONL alone."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from synboost.cli import main
from synboost.config import LoopConfig
from synboost.data.io import read_image, write_image
from synboost.errors import ConfigError, SynboostError
from synboost.training.engine import Engine
from synboost.training.loggers import parse_loggers, read_train_log
from synboost.training.task import SeededDataset, Task

W = torch.tensor([[1.5], [-2.0], [0.5]])


class Points(SeededDataset):
    def __getitem__(self, i):
        x = torch.from_numpy(self.rng(i).normal(size=3)).float()
        return x, x @ W


class Toy(Task):
    """Linear regression; writes a sample grid every 3 steps, as the synthesis stage does."""

    kind = "density"

    def build_model(self):
        return nn.Linear(3, 1)

    def build_optimizer(self, model):
        return torch.optim.SGD(model.parameters(), lr=0.05)

    def train_dataset(self):
        return Points(list(range(16)), seed=1)

    def train_step(self, model, batch, device):
        loss = F.mse_loss(model(batch[0]), batch[1])
        return loss, {"half": float(loss.detach()) / 2}

    def validate(self, model, device):
        x = torch.eye(3)
        with torch.no_grad():
            err = float(F.mse_loss(model(x), x @ W))
        return {"score": -err, "err": err}

    def after_step(self, model, global_step, out_dir):
        if global_step % 3 == 0:
            grid = np.full((8, 12, 3), global_step * 10, np.uint8)
            write_image(out_dir / "samples" / f"step{global_step:07d}.png", grid)


def fit(out, **kw):
    loop = LoopConfig(epochs=2, batch_size=4, workers=0, device="cpu", log_every=1)
    return Engine(Toy(), loop, out, progress=False, **kw).fit()


def records(out):
    return [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]


def tensorboard_events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_tensorboard_gets_the_jsonl_numbers_and_the_sample_grids(tmp_path):
    pytest.importorskip("tensorboard")
    fit(tmp_path / "tb", logger="tensorboard")
    fit(tmp_path / "plain")
    tb, plain = records(tmp_path / "tb"), records(tmp_path / "plain")
    drop = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert drop(tb) == drop(plain)  # the same training, the same log
    steps = [r for r in tb if "step" in r]
    assert [r["global_step"] for r in steps] == list(range(1, 9))  # 4 steps per epoch, 2 epochs
    acc = tensorboard_events(tmp_path / "tb" / "tensorboard")
    tags = acc.Tags()
    assert {"train/loss", "train/lr", "train/half", "val/score", "val/err", "epoch/train_loss"} <= set(tags["scalars"])
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 9))
    np.testing.assert_allclose([e.value for e in loss], [r["loss"] for r in steps], rtol=1e-6)
    val = acc.Scalars("val/err")
    epochs = [r for r in tb if "train_loss" in r]
    assert [e.step for e in val] == [4, 8]
    np.testing.assert_allclose([e.value for e in val], [r["val_err"] for r in epochs], rtol=1e-6)
    images = acc.Images("samples")
    assert [e.step for e in images] == [3, 6]
    import cv2

    decoded = cv2.imdecode(np.frombuffer(images[1].encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (8, 12, 3) and (decoded == 60).all()
    assert not (tmp_path / "plain" / "tensorboard").exists()


def test_missing_tensorboard_is_one_line_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as without the package
    with pytest.raises(SynboostError, match=r"pip install tensorboard") as e:
        fit(tmp_path / "x", logger="tensorboard")
    assert "\n" not in str(e.value) and not (tmp_path / "x").exists()
    monkeypatch.setenv("SYNBOOST_LOGGER", "tensorboard")
    with pytest.raises(SynboostError, match=r"pip install tensorboard"):
        fit(tmp_path / "y")
    with pytest.raises(ConfigError, match="choose one of jsonl, tensorboard"):
        parse_loggers("wandb")
    assert parse_loggers("") == ("jsonl",) and parse_loggers("tensorboard") == ("jsonl", "tensorboard")


def test_plot_log_draws_steps_and_epochs_from_the_jsonl(tmp_path, capsys):
    fit(tmp_path / "run")
    log = tmp_path / "run" / "train_log.jsonl"
    rows = records(tmp_path / "run")
    # a resumed run repeats epoch 2 with other numbers, and a killed writer left half a line
    redo = [{**r, "loss": r["loss"] + 1} if "step" in r else {**r, "val_err": 9.0} for r in rows if r["epoch"] == 2]
    log.write_text(log.read_text() + "".join(json.dumps(r) + "\n" for r in redo) + '{"epoch": 3, "st')
    steps, epochs, notes = read_train_log(tmp_path / "run")
    assert [x for x, _ in steps["train loss"]] == list(range(1, 9))
    want = [r["loss"] for r in rows if "step" in r and r["epoch"] == 1] + [r["loss"] for r in redo if "step" in r]
    assert [v for _, v in steps["train loss"]] == pytest.approx(want)  # the later run's records replace
    assert epochs["val_err"][-1] == (2, 9.0) and "val_score" in epochs and "train loss (epoch mean)" in epochs
    assert len(notes) == 1 and "line" in notes[0]
    assert main(["plot-log", str(tmp_path / "run")]) == 0
    png = tmp_path / "run" / "train_log.png"
    assert read_image(png).shape[2] == 3 and "train_log.png" in capsys.readouterr().out
    assert main(["plot-log", str(tmp_path)]) == 2
    assert "no training log" in capsys.readouterr().err
