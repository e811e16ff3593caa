import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_configure(config):
    """Keep freed memory for reuse, as the ``synboost`` command does (``synboost.runtime.tune_malloc``)."""
    from synboost.runtime import tune_malloc

    tune_malloc()


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


@pytest.fixture(scope="session")
def stages(tmp_path_factory):
    """Randomly initialised small SynBoost stages saved as checkpoints, as training would write them (the
    pipeline tests and the CUDA tests)."""
    import torch

    from synboost.config import DissimModelConfig, SegModelConfig, SynthesisModelConfig
    from synboost.detectors.components import build_dissimilarity, build_generator, save_component
    from synboost.models import create_model

    d = tmp_path_factory.mktemp("stages")
    torch.manual_seed(0)
    sm = SegModelConfig(backbone="tiny", pretrained=False, aspp_dim=16, decoder_dim=16, width=8)
    seg = create_model("deeplabv3plus", backbone="tiny", aspp_dim=16, decoder_dim=16, width=8)
    save_component(d / "seg.safetensors", seg, "segmenter", sm)
    gm = SynthesisModelConfig(ngf=8, num_upsampling=4, z_dim=16, nef=8, encoder_size=128, spade_hidden=16)
    gen = build_generator(gm, [32, 64])
    save_component(d / "gen.safetensors", gen, "generator", gm, size=[32, 64])
    dm = DissimModelConfig(width=0.125, vgg_pretrained=False)
    dis = build_dissimilarity(dm)
    save_component(d / "dis.safetensors", dis, "dissimilarity", dm, size=[32, 64], priors=list(dm.priors))
    return d


def synboost_pipe(stages, tmp_path, **kw):
    """A SynBoost detector over the ``stages`` fixture's checkpoints, with pipeline fields ``kw``."""
    from synboost.detectors.detector import load_pipeline, write_pipeline_file

    fields = dict(method="synboost", segmenter=str(stages / "seg.safetensors"),
                  generator=str(stages / "gen.safetensors"),
                  dissimilarity=str(stages / "dis.safetensors"), perceptual_vgg_pretrained=False, device="cpu")
    fields.update(kw)
    return load_pipeline(write_pipeline_file(tmp_path / "p.yaml", **fields))


def torchrun_cli(argv, port: int, nproc: int = 2, timeout: int = 300):
    """``synboost <argv>`` under torchrun with ``nproc`` gloo processes on the CPU (one thread each); fails the
    test with the end of stderr unless it exits 0."""
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                        "--master_port", str(port), "-m", "synboost.cli", *map(str, argv)],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def logged_steps(out) -> list[int]:
    """The step numbers of a run's ``train_log.jsonl`` (under DDP rank 0 alone writes it)."""
    import json
    from pathlib import Path

    rows = [json.loads(x) for x in (Path(out) / "train_log.jsonl").read_text().splitlines()]
    return [x["step"] for x in rows if "step" in x]


#: test modules that train stages (or run the demo, the ablation, the comparison table, torchrun): `slow`
SLOW_MODULES = ("test_demo", "test_ablation", "test_compare", "test_inference_torchrun", "test_training_")
#: the training engine's own test trains a ten-line toy task in seconds: it stays in the fast lane
FAST_MODULES = ("test_training_engine",)
#: fixtures that train a stage for real
TRAINING_FIXTURES = ("tiny_segmenter",)
#: other single tests that train a stage, time a whole benchmark, export every network, start a browser or
#: build the official-size networks in fresh processes (each over ~5 s)
SLOW_TESTS = ("test_a_moved_trained_run_infers_from_another_working_directory",
              "test_bench_pipeline_quick_writes_every_variant",
              "test_every_network_runs_in_onnxruntime_outside_pytorch",
              "test_dynamic_segmenter_checkpoint_runs_at_any_size",
              "test_the_front_door_is_lazy_and_complete", "test_report_in_headless_chromium",
              "test_random_perceptual_vgg_is_the_same_in_every_process", "test_import_pebal",
              "test_import_nvidia_segmenter", "test_synboost_end_to_end_with_a_torchvision_mobilenet_segmenter")


def pytest_collection_modifyitems(config, items):
    """Mark as ``slow`` the tests that train stages: ``make test-fast`` (``-m "not slow"``) runs the rest."""
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        slow_module = module.startswith(SLOW_MODULES) and module not in FAST_MODULES
        trains = any(f in getattr(item, "fixturenames", ()) for f in TRAINING_FIXTURES)
        if slow_module or trains or getattr(item, "originalname", "") in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
