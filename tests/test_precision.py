"""Per-network precision: bf16 on a CPU with bf16 units ranks pixels as fp32 does, the segmenter kept in fp32
keeps fp32's labels exactly, a CPU without bf16 units runs fp32 after one line, torch.compile agrees with eager,
and the training loop's amp_cpu reaches the engine."""
import numpy as np
import pytest
import torch

from conftest import synboost_pipe
from synboost import runtime
from synboost.detectors.precision import NETWORKS, parse_precision, resolve_precision
from synboost.errors import ConfigError
from synboost.jobs.export import spearman
from synboost.metrics.pixel import pixel_metrics

bf16_cpu = pytest.mark.skipif(not runtime.cpu_bf16_supported(), reason="this CPU has no bf16 units")


def scenes(n=3):
    from synboost.data.synthetic import generate_scene

    return [generate_scene(100 + i, 64, 128, n_ood=1).image for i in range(n)]


def stack(res, key):
    return np.stack([r[key] for r in res])


def top_pixel_ap(ref: np.ndarray, got: np.ndarray, share: float = 0.05) -> float:
    """AP of ``got`` at finding the ``share`` most anomalous pixels of ``ref`` (the ranking that matters)."""
    positives = ref >= np.quantile(ref, 1 - share)
    return pixel_metrics(got.ravel(), positives.ravel().astype(np.uint8)).ap


def test_precision_spellings():
    assert parse_precision("auto") is None and parse_precision("") is None
    assert parse_precision("bf16") == {n: "bf16" for n in NETWORKS}
    assert parse_precision("mixed") == {"segmenter": "fp32", "generator": "bf16", "vgg": "bf16",
                                        "dissimilarity": "bf16"}
    assert parse_precision("generator:bf16, dissimilarity=bfloat16") == {
        "segmenter": "fp32", "generator": "bf16", "vgg": "fp32", "dissimilarity": "bf16"}
    assert parse_precision({"vgg": "bf16"})["vgg"] == "bf16"
    for bad, word in (("fp16", "fp16"), ("decoder:bf16", "decoder"), ("generator:int8", "int8")):
        with pytest.raises(ConfigError, match=f"defaults.precision.*{word}") as e:
            parse_precision(bad)
        assert "\n" not in str(e.value)
    # auto, the default: bf16 where the device has bf16 units (when amp), else fp32
    bf16_here = {n: "bf16" if runtime.cpu_bf16_supported() else "fp32" for n in NETWORKS}
    assert resolve_precision("auto", "cpu", amp=True) == bf16_here
    assert resolve_precision("auto", "cpu", amp=False) == {n: "fp32" for n in NETWORKS}
    assert resolve_precision("auto", "cuda", amp=False) == {n: "fp32" for n in NETWORKS}


def test_the_default_is_bf16_and_channels_last_where_the_cpu_has_bf16_units(stages, tmp_path, monkeypatch):
    """The default precision ('auto'), chosen by the accuracy benchmark on the trained demo pipeline: bf16 and
    channels_last on a CPU with bf16 units; fp32 NCHW, silently (nothing was asked for), on one without; an
    explicit channels_last wins."""
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda: True)
    det = synboost_pipe(stages, tmp_path)
    assert det.precision == {n: "bf16" for n in NETWORKS} and det.channels_last
    conv = next(m for m in det.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not synboost_pipe(stages, tmp_path, channels_last=False).channels_last
    assert synboost_pipe(stages, tmp_path, amp=False).precision == {n: "fp32" for n in NETWORKS}
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda: False)
    det = synboost_pipe(stages, tmp_path)
    assert det.precision == {n: "fp32" for n in NETWORKS} and not det.channels_last
    assert not torch.is_autocast_enabled("cpu")


@bf16_cpu
def test_bf16_on_the_cpu_ranks_like_fp32(stages, tmp_path):
    """bf16 of every network (channels_last, the fast layout for the bf16 units): the anomaly maps rank pixels as
    fp32 does, within a ranking tolerance; the maps themselves move (bf16 really ran) and stay float32."""
    images = scenes()
    ref = synboost_pipe(stages, tmp_path, precision="fp32").score_all(images)
    det = synboost_pipe(stages, tmp_path, precision="bf16", channels_last=True)
    assert det.precision == {n: "bf16" for n in NETWORKS}
    got = det.score_all(images)
    a, b = stack(ref, "synboost"), stack(got, "synboost")
    assert b.dtype == np.float32 and not np.array_equal(a, b)
    assert spearman(torch.from_numpy(a), torch.from_numpy(b)) > 0.85
    assert top_pixel_ap(a, b) > 0.6
    assert (stack(ref, "segmentation") == stack(got, "segmentation")).mean() > 0.98
    assert spearman(torch.from_numpy(stack(ref, "entropy")), torch.from_numpy(stack(got, "entropy"))) > 0.98


@bf16_cpu
def test_mixed_keeps_the_segmenter_in_fp32(stages, tmp_path):
    """mixed: the segmenter's outputs (labels, entropy, every post-hoc score) equal fp32's exactly; only the
    resynthesis, perceptual and dissimilarity stages run in bf16."""
    images = scenes()
    # in one memory layout (mixed's default on such a CPU is channels_last, and NHWC rounds apart from NCHW)
    ref = synboost_pipe(stages, tmp_path, precision="fp32", channels_last=True).score_all(images)
    got = synboost_pipe(stages, tmp_path, precision="mixed").score_all(images)
    for key in ("segmentation", "entropy", "msp", "energy"):
        np.testing.assert_array_equal(stack(got, key), stack(ref, key), err_msg=key)
    a, b = stack(ref, "synboost"), stack(got, "synboost")
    assert not np.array_equal(a, b)
    assert spearman(torch.from_numpy(a), torch.from_numpy(b)) > 0.85 and top_pixel_ap(a, b) > 0.6


def test_no_bf16_unit_falls_back_to_fp32_with_one_line(stages, tmp_path, monkeypatch, capsys):
    """A CPU without bf16 units: precision bf16 says so once and runs fp32, so the maps equal fp32's exactly."""
    images = scenes(2)
    ref = synboost_pipe(stages, tmp_path, precision="fp32", channels_last=False).score_all(images)
    capsys.readouterr()
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda: False)
    det = synboost_pipe(stages, tmp_path, precision="bf16", channels_last=False)
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "bf16" in line]
    assert len(notes) == 1 and "no bf16 units" in notes[0] and "fp32" in notes[0], err
    assert det.precision == {n: "fp32" for n in NETWORKS}
    got = det.score_all(images)
    assert "bf16" not in capsys.readouterr().err  # once, at build time, not per call
    for key in ref[0]:
        np.testing.assert_array_equal(stack(got, key), stack(ref, key), err_msg=key)


def test_load_pipeline_precision_overrides_the_file(stages, tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda: True)
    det = synboost_pipe(stages, tmp_path, precision="mixed")
    assert det.precision["segmenter"] == "fp32" and det.precision["dissimilarity"] == "bf16"
    from synboost.detectors.detector import load_pipeline

    det = load_pipeline(tmp_path / "p.yaml", precision="fp32")
    assert det.precision == {n: "fp32" for n in NETWORKS}
    with pytest.raises(ConfigError, match="defaults.precision"):
        load_pipeline(tmp_path / "p.yaml", ["precision=half"])


@pytest.mark.slow
def test_compiled_agrees_with_eager(stages, tmp_path, capsys):
    """compile: true (inductor, static shapes): 3 images at batch 2 (the last batch padded to the compiled
    shape) give eager's maps within float rounding; the first batch prints its compile time once."""
    images = scenes(3)
    ref = synboost_pipe(stages, tmp_path, batch_size=2, precision="fp32").score_all(images)
    capsys.readouterr()
    det = synboost_pipe(stages, tmp_path, batch_size=2, compile=True, precision="fp32")
    got = det.score_all(images)
    err = capsys.readouterr().err
    assert err.count("note: torch.compile: the first batch of shape 2x3x64x128") == 1, err
    assert [r["synboost"].shape for r in got] == [(64, 128)] * 3
    for key in ("synboost", "entropy"):
        a, b = stack(ref, key), stack(got, key)
        assert spearman(torch.from_numpy(a), torch.from_numpy(b)) > 0.999, key
        np.testing.assert_allclose(b, a, atol=1e-3, err_msg=key)
    assert (stack(ref, "segmentation") == stack(got, "segmentation")).mean() > 0.999


def test_amp_cpu_reaches_the_engine(monkeypatch):
    """LoopConfig.amp_cpu is what run_stage gives Engine(cpu_amp=...) (off by default); an explicit keyword wins."""
    from synboost.config import LoopConfig
    from synboost.training import stage

    seen = []

    class FakeEngine:
        def __init__(self, task, loop, out, config=None, progress=True, cpu_amp=False):
            seen.append(cpu_amp)

        def fit(self, resume=False):
            return {}

    class Cfg:
        def __init__(self, loop):
            self.train, self.out = loop, "unused"

    monkeypatch.setattr(stage, "Engine", FakeEngine)
    assert LoopConfig().amp_cpu is False
    stage.run_stage(None, Cfg(LoopConfig()))
    stage.run_stage(None, Cfg(LoopConfig(amp_cpu=True)))
    stage.run_stage(None, Cfg(LoopConfig(amp_cpu=True)), cpu_amp=False)
    assert seen == [False, True, False]


@pytest.mark.parametrize("amp_device", [None, "cpu"])
def test_the_gan_step_trains_under_the_engines_cpu_autocast(amp_device):
    """The synthesis stage does its own backward passes (manual_step): with the engine's amp device "cpu" its
    generator and discriminator run in bf16 (as the other stages do under the engine's autocast), without it in
    float32; the weights stay float32 either way."""
    if amp_device and not runtime.cpu_bf16_supported():
        pytest.skip("this CPU has no bf16 units")
    from synboost.config import SynthesisConfig, load_config
    from synboost.training.synthesis import SynthesisTask

    cfg = load_config(SynthesisConfig, None, ["model.ngf=8", "model.nef=8", "model.z_dim=8", "model.spade_hidden=8",
                                              "model.num_upsampling=4", "model.ndf=8", "data.size=[32,64]",
                                              "lambda_vgg=0", "lambda_l1=1"])
    task = SynthesisTask(cfg)
    torch.manual_seed(0)
    model = task.build_model()
    opts = task.build_optimizer(model)
    task.amp_device = amp_device
    seen = {}
    convs = {"G": next(m for m in model.generator.modules() if isinstance(m, torch.nn.Conv2d)),
             "D": next(m for m in model.discriminator.modules() if isinstance(m, torch.nn.Conv2d))}
    for name, conv in convs.items():
        conv.register_forward_hook(lambda _m, _i, out, name=name: None if seen.setdefault(name, out.dtype) else None)
    real = torch.rand(2, 3, 32, 64) * 2 - 1
    labels = torch.randint(0, 19, (2, 32, 64))
    loss, logs = task.train_step(model, (real, labels), torch.device("cpu"), opts)
    want = torch.bfloat16 if amp_device else torch.float32
    assert seen == {"G": want, "D": want}
    assert torch.isfinite(loss) and logs
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_an_engine_hands_its_autocast_device_to_the_task():
    """Engine(cpu_amp=True) on a CPU with bf16 units sets task.amp_device = "cpu"; without cpu_amp it is None."""
    from synboost.config import LoopConfig
    from synboost.training.engine import Engine
    from synboost.training.task import Task

    for cpu_amp in (False, True):
        task = Task()
        Engine(task, LoopConfig(device="cpu"), "unused-out", cpu_amp=cpu_amp, progress=False)
        assert task.amp_device == ("cpu" if cpu_amp and runtime.cpu_bf16_supported() else None)


@pytest.mark.parametrize("units", [False, True])
def test_amp_cpu_without_bf16_units_is_said_not_silent(monkeypatch, capsys, units):
    """Engine(cpu_amp=True) on a CPU without bf16 units trains in float32 and says so in one line naming the stage;
    with bf16 units it autocasts and says nothing. Its precision is what the run's summary records."""
    from synboost.config import LoopConfig
    from synboost.training import engine as engine_mod
    from synboost.training.engine import Engine
    from synboost.training.task import Task

    monkeypatch.setattr(engine_mod, "cpu_bf16_supported", lambda: units)
    task = Task()
    task.name = "segmenter"
    eng = Engine(task, LoopConfig(device="cpu"), "unused-out", cpu_amp=True, progress=False)
    out = capsys.readouterr().out
    assert eng.precision == ("bf16" if units else "fp32")
    assert task.amp_device == ("cpu" if units else None)
    lines = [ln for ln in out.splitlines() if "no bf16 units" in ln]
    if units:
        assert lines == [], out
    else:
        assert len(lines) == 1 and lines[0].startswith("note: segmenter:"), out
    Engine(Task(), LoopConfig(device="cpu"), "unused-out", cpu_amp=False, progress=False)
    assert "bf16" not in capsys.readouterr().out
