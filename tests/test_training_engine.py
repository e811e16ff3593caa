"""The training engine alone, with a toy task (noisy linear regression through dropout): resume, the ``last``
checkpoint as one unit, divergence, the scheduler, the hooks, ``stop_after``, the folder lock and CPU autocast."""
import dataclasses
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from synboost.config import LoopConfig
from synboost.errors import SynboostError
from synboost.hub.checkpoint import load_model, load_state
from synboost.runtime import FolderLock
from synboost.training import engine as engine_mod
from synboost.training import snapshot
from synboost.training.engine import Engine
from synboost.training.task import SeededDataset, Task

LOCK = FolderLock.NAME
W = torch.tensor([[1.5], [-2.0], [0.5]])


class Points(SeededDataset):
    def __getitem__(self, i):
        x = torch.from_numpy(self.rng(i).normal(size=3)).float()  # a fresh draw every epoch
        return x, x @ W + 0.1


class Toy(Task):
    kind = "density"  # a free-form kind of the component table

    def __init__(self, nan_at=0):
        self.nan_at, self.calls, self.steps, self.ended, self.started = nan_at, 0, [], [], 0

    def build_model(self):
        return nn.Sequential(nn.Dropout(0.2), nn.Linear(3, 1))

    def build_optimizer(self, model):
        return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def build_scheduler(self, opt, total_steps):
        return torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    def train_dataset(self):
        return Points(list(range(16)), seed=5)

    def train_step(self, model, batch, device):
        self.calls += 1
        loss = F.mse_loss(model(batch[0]), batch[1])
        self.autocast = torch.is_autocast_enabled("cpu")
        return (loss * float("nan") if self.calls == self.nan_at else loss), {"calls": self.calls}

    def validate(self, model, device):
        x = torch.linspace(-1, 1, 9).reshape(3, 3)
        with torch.no_grad():
            return {"score": -float(F.mse_loss(model.eval()(x), x @ W + 0.1))}

    def checkpoint_meta(self):
        return {"kind": self.kind, "model": {"toy": True}}

    def after_step(self, model, global_step, out_dir):
        self.steps.append(global_step)

    def on_fit_start(self, engine):
        self.started += 1

    def summary_fields(self):
        return {"toy_calls": self.calls}

    def on_fit_end(self, model, summary, engine):
        self.ended.append(dict(summary))
        summary["product"] = "made"


def loop(**kw):
    return LoopConfig(**{"epochs": 3, "batch_size": 4, "workers": 0, "device": "cpu", "log_every": 1, **kw})


def fit(out, task=None, resume=False, **kw):
    task = task or Toy()
    return Engine(task, loop(**kw), out, progress=False).fit(resume=resume), task


def weights(out, name="last"):
    return load_model(Path(out) / f"{name}.safetensors")[0]


def assert_same(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    summary, task = fit(out)
    return out, summary, task


def test_hooks_scheduler_and_summary(uninterrupted):
    out, summary, task = uninterrupted
    assert task.steps == list(range(1, 13))  # 16 samples / 4 per batch = 4 steps, 3 epochs
    assert task.started == 1 and len(task.ended) == 1 and task.ended[0]["finished"]
    assert summary["product"] == "made" and summary["toy_calls"] == 12 and summary["finished"]
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in log if "step" in r]
    assert lrs == [0.1 * 0.5 ** (k // 2) for k in range(1, 13)]  # StepLR(2, 0.5), stepped after every step
    assert load_state(out / "last_state.pt")["scheduler"]["last_epoch"] == 12
    assert [r["epoch"] for r in log if "train_loss" in r] == [1, 2, 3]
    assert not (out / LOCK).exists()
    idx = json.loads((out / "last.json").read_text())
    assert idx["epoch"] == 2 and idx["files"]["last.safetensors"] == snapshot.sha256_of(out / "last.safetensors")


def test_stop_after_and_resume_equal_uninterrupted(uninterrupted, tmp_path, capsys):
    part, task = fit(tmp_path, stop_after=1)
    assert not part["finished"] and task.steps == [1, 2, 3, 4] and task.ended == []
    assert load_model(tmp_path / "last.safetensors")[1]["epoch"] == 0
    rest, task = fit(tmp_path, resume=True)
    assert rest["finished"] and task.steps == list(range(5, 13)) and len(task.ended) == 1
    assert "(epoch 1 of 3)" in capsys.readouterr().out
    assert_same(uninterrupted[0], tmp_path)
    log = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in log if "step" in r] == [0.1 * 0.5 ** (k // 2) for k in range(1, 13)]


def test_nan_loss_stops_naming_the_last_good_checkpoint(tmp_path):
    with pytest.raises(SynboostError, match=r"loss became nan at epoch 2 step 3; the last good checkpoint is "
                                            r".*last\.safetensors; lower train\.lr and resume") as e:
        fit(tmp_path, Toy(nan_at=7))
    assert "\n" not in str(e.value)
    assert load_model(tmp_path / "last.safetensors")[1]["epoch"] == 0
    assert not (tmp_path / LOCK).exists()  # released on errors too


def _fail_on(monkeypatch, name, when):
    real = getattr(snapshot, name)
    seen = {"n": 0}

    def patched(*a, **kw):
        seen["n"] += 1
        if when(seen["n"], a):
            raise KeyboardInterrupt("killed")
        return real(*a, **kw)

    monkeypatch.setattr(snapshot, name, patched)


def test_kill_between_weights_and_state_resumes_from_the_previous_pair(uninterrupted, tmp_path, monkeypatch, capsys):
    _fail_on(monkeypatch, "save_state", lambda n, a: n == 2)  # the state after epoch 2
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path)
    monkeypatch.undo()
    assert load_model(tmp_path / "last.safetensors")[1]["epoch"] == 1  # new weights ...
    assert load_state(tmp_path / "last_state.pt")["epoch"] == 0  # ... beside the old state
    _, task = fit(tmp_path, resume=True)
    out = capsys.readouterr().out
    assert "interrupted while being written; resuming from the one after epoch 1" in out
    assert "(epoch 1 of 3)" in out and task.steps == list(range(5, 13))
    assert_same(uninterrupted[0], tmp_path)
    assert not list(tmp_path.glob("*.prev.*"))


def test_kill_before_the_index_resumes_from_the_previous_pair(uninterrupted, tmp_path, monkeypatch):
    _fail_on(monkeypatch, "write_json", lambda n, a: a[1].get("epoch") == 1)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path)
    monkeypatch.undo()
    _, task = fit(tmp_path, resume=True)
    assert task.steps == list(range(5, 13))
    assert_same(uninterrupted[0], tmp_path)


def test_kill_in_the_first_checkpoint_starts_afresh(uninterrupted, tmp_path, monkeypatch, capsys):
    _fail_on(monkeypatch, "save_state", lambda n, a: n == 1)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "last.safetensors").is_file()  # weights without their state: not trusted
    _, task = fit(tmp_path, resume=True)
    assert "starting afresh" in capsys.readouterr().out and task.steps == list(range(1, 13))
    assert_same(uninterrupted[0], tmp_path)


def test_hard_kill_between_the_writes(uninterrupted, tmp_path):
    """A real ``os._exit`` (no handler runs) right after the weights of epoch 2 are written."""
    script = (f"import os, sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
              "import test_training_engine as t\nfrom synboost.training import snapshot\n"
              "real, n = snapshot.save_state, [0]\n"
              "def save_state(*a):\n    n[0] += 1\n    os._exit(9) if n[0] == 2 else real(*a)\n"
              f"snapshot.save_state = save_state\nt.fit({str(tmp_path)!r})\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 9, r.stderr[-2000:]
    _, task = fit(tmp_path, resume=True)
    assert task.steps == list(range(5, 13))
    assert_same(uninterrupted[0], tmp_path)


def test_files_that_match_no_index_are_refused(tmp_path):
    fit(tmp_path, stop_after=2)
    (tmp_path / "last.safetensors").write_bytes((tmp_path / "best.safetensors").read_bytes() + b" ")
    with pytest.raises(SynboostError, match=r"last\.json: no last\.safetensors in .* matches the sha256") as e:
        fit(tmp_path, resume=True)
    assert "\n" not in str(e.value)


def test_a_folder_without_index_is_trusted_only_when_weights_and_state_agree(uninterrupted, tmp_path, capsys):
    fit(tmp_path, stop_after=1)
    state_epoch0 = (tmp_path / "last_state.pt").read_bytes()
    (tmp_path / "last.json").unlink()  # as an older version left it
    _, task = fit(tmp_path, resume=True, stop_after=1)
    assert "has no last.json" in capsys.readouterr().out and task.steps == [5, 6, 7, 8]
    (tmp_path / "last.json").unlink()
    (tmp_path / "last_state.pt").write_bytes(state_epoch0)  # weights of epoch 2, state of epoch 1
    with pytest.raises(SynboostError, match=r"last\.safetensors \(epoch 1\) and last_state\.pt \(epoch 0\) do not "
                                            "belong together"):
        fit(tmp_path, resume=True)


def test_a_live_run_holding_the_folder_is_refused_and_a_dead_one_taken_over(tmp_path, capsys):
    lock = tmp_path / LOCK
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": live.pid, "verb": "train"}))
        with pytest.raises(SynboostError, match=rf"another run \(train, pid {live.pid}\) is writing into this folder"
                           ) as e:
            fit(tmp_path)
        assert "\n" not in str(e.value) and not (tmp_path / "last.safetensors").exists()
    finally:
        live.kill()
        live.wait()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "verb": "train"}))
    summary, _ = fit(tmp_path, stop_after=1)
    assert "taking over the lock" in capsys.readouterr().err
    assert (tmp_path / "last.safetensors").is_file() and not lock.exists()


def test_cpu_bf16_autocast_is_opt_in_and_needs_bf16_units(tmp_path, monkeypatch):
    assert isinstance(engine_mod.cpu_bf16_supported(), bool)
    for have, cpu_amp, amp, used in [(True, True, True, True), (True, False, True, False),
                                     (False, True, True, False), (True, True, False, False)]:
        monkeypatch.setattr(engine_mod, "cpu_bf16_supported", lambda have=have: have)
        task = Toy()
        eng = Engine(task, loop(epochs=1, amp=amp), tmp_path / f"{have}{cpu_amp}{amp}", progress=False,
                     cpu_amp=cpu_amp)
        eng.fit()
        assert task.autocast is used, (have, cpu_amp, amp)


class Recording(Toy):
    """Toy that keeps the trained weights after every step (the moving average is checked against them)."""

    def __init__(self):
        super().__init__()
        self.trained = []

    def after_step(self, model, global_step, out_dir):
        super().after_step(model, global_step, out_dir)
        self.trained.append({k: v.detach().clone() for k, v in model.state_dict().items()})


def test_ema_is_what_is_validated_saved_as_best_and_resumed(tmp_path):
    decay = 0.8
    summary, task = fit(tmp_path / "whole", Recording(), ema=decay)
    avg, per_step = None, []  # W_1 = w_1, W_t = decay W_(t-1) + (1 - decay) w_t (torch's get_ema_multi_avg_fn)
    for w in task.trained:
        avg = dict(w) if avg is None else {k: decay * avg[k] + (1 - decay) * w[k] for k in w}
        per_step.append(avg)
    best, meta = load_model(tmp_path / "whole" / "best.safetensors")
    expect = per_step[4 * (meta["epoch"] + 1) - 1]  # 4 steps per epoch
    for k in expect:
        assert torch.allclose(best[k], expect[k], atol=1e-6), k
        assert torch.equal(weights(tmp_path / "whole")[k], task.trained[-1][k])  # last: the trained weights
        assert not torch.allclose(task.trained[-1][k], per_step[-1][k])  # so the two really differ
    x = torch.linspace(-1, 1, 9).reshape(3, 3)
    model = nn.Sequential(nn.Dropout(0.2), nn.Linear(3, 1))
    model.load_state_dict(best)
    with torch.no_grad():
        assert summary["best_val"]["score"] == pytest.approx(-float(F.mse_loss(model.eval()(x), x @ W + 0.1)))
    assert task.ended and set(load_state(tmp_path / "whole" / "last_state.pt")["ema"]) >= {"n_averaged"}
    # stopped after one epoch and resumed: the same average as the run that never stopped
    fit(tmp_path / "parts", Recording(), ema=decay, stop_after=1)
    fit(tmp_path / "parts", Recording(), resume=True, ema=decay)
    again = load_model(tmp_path / "parts" / "best.safetensors")[0]
    assert all(torch.equal(again[k], best[k]) for k in best)
    # the moving average switched on or off mid-run is refused, naming the key
    fit(tmp_path / "plain", stop_after=1)
    with pytest.raises(SynboostError, match=r"last_state\.pt: this run was started without a moving average.*"
                                            r"train\.ema is now 0\.8"):
        fit(tmp_path / "plain", resume=True, ema=decay)
    with pytest.raises(SynboostError, match=r"started with a moving average.*train\.ema is now 0\.0"):
        fit(tmp_path / "parts", resume=True, stop_after=0, epochs=4)


def test_ema_outside_its_range_is_refused(tmp_path):
    with pytest.raises(SynboostError, match=r"train\.ema is 1\.0; give a decay in \[0, 1\)"):
        fit(tmp_path, ema=1.0)


@dataclasses.dataclass
class ToyConfig:
    out: str = ""
    width: int = 1
    train: LoopConfig = dataclasses.field(default_factory=loop)


def test_resume_refuses_another_config_and_keeps_the_run(tmp_path, capsys):
    """Resuming under another config would continue the old weights under the new config's name: refused in one
    line naming the key, before anything is written; epochs (and device, workers, logging) may change."""
    def fit_with(cfg, resume, **kw):
        return Engine(Toy(), cfg.train, tmp_path, config=cfg, progress=False).fit(resume=resume)

    first = ToyConfig(out=str(tmp_path), train=loop(stop_after=1))
    assert not fit_with(first, False)["finished"]
    saved = (tmp_path / "config.yaml").read_text()
    kept = weights(tmp_path)
    with pytest.raises(SynboostError, match=r"config\.yaml: the run there was started with another config "
                                            r"\(width: 1 -> 2\); .*--fresh") as e:
        fit_with(ToyConfig(out=str(tmp_path), width=2, train=loop(stop_after=1)), True)
    assert "\n" not in str(e.value)
    assert (tmp_path / "config.yaml").read_text() == saved  # nothing overwritten
    assert all(torch.equal(kept[k], weights(tmp_path)[k]) for k in kept)
    with pytest.raises(SynboostError, match=r"train\.lr: 0\.01 -> 0\.02"):
        fit_with(ToyConfig(out=str(tmp_path), train=loop(stop_after=1, lr=0.02)), True)
    more = fit_with(ToyConfig(out=str(tmp_path), train=loop(epochs=4, log_every=5)), True)  # longer: allowed
    assert more["finished"] and "(epoch 1 of 4)" in capsys.readouterr().out
