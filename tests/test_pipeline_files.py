"""Pipeline files that say what they are and travel with their run; one save / load pair for components; every
registered model builds."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import yaml

from conftest import seg_config
from synboost.errors import CheckpointError, ConfigError


def _images(n=2, size=(64, 128), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def test_a_moved_trained_run_infers_from_another_working_directory(tiny_world, tmp_path, monkeypatch):
    from synboost.cli import main
    from synboost.training.segmentation import train_segmentation

    run = tmp_path / "runs" / "seg"
    summary = train_segmentation(seg_config(tiny_world, run, "train.epochs=1", "model.width=8"), progress=False)
    written = yaml.safe_load((run / "pipeline.yaml").read_text())
    assert written["detector"] == "posthoc"
    assert written["components"]["segmenter"] == "segmenter.safetensors"  # relative to the file, not absolute
    assert summary["pipeline"].endswith("pipeline.yaml")
    images = tiny_world / "anomaly" / "test" / "original"
    before = main(["infer", "--pipeline", str(run / "pipeline.yaml"), "--images", str(images),
                   "--out", str(tmp_path / "before")])
    moved = tmp_path / "shared" / "copy-of-seg"
    moved.parent.mkdir()
    shutil.move(str(run), str(moved))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["infer", "--pipeline", str(moved / "pipeline.yaml"), "--images", str(images),
                 "--out", "maps"]) == before == 0
    for f in sorted((tmp_path / "before" / "maps").glob("*.npy")):
        assert np.array_equal(np.load(f), np.load(elsewhere / "maps" / "maps" / f.name))


def test_a_decoy_checkpoint_in_the_working_directory_is_never_loaded(stages, tmp_path, monkeypatch):
    from synboost.detectors.components import save_component
    from synboost.detectors.detector import load_pipeline, write_pipeline_file
    from synboost.models import create_model

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(stages / "seg.safetensors", run / "seg.safetensors")
    pipe = write_pipeline_file(run / "pipeline.yaml", method="entropy", segmenter=str(run / "seg.safetensors"))
    assert yaml.safe_load(pipe.read_text())["components"]["segmenter"] == "seg.safetensors"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    torch.manual_seed(123)
    decoy = create_model("deeplabv3plus", backbone="tiny", aspp_dim=16, decoder_dim=16, width=8)
    from synboost.config import SegModelConfig

    save_component(cwd / "seg.safetensors", decoy, "segmenter",
                   SegModelConfig(backbone="tiny", pretrained=False, aspp_dim=16, decoder_dim=16, width=8))
    monkeypatch.chdir(cwd)  # a file of the same relative name under the working directory
    det = load_pipeline(pipe, device="cpu", freeze=False)  # the weights as loaded (freezing folds BatchNorm in)
    real = load_pipeline(pipe, device="cpu", freeze=False)
    from synboost.hub.checkpoint import load_model

    sd_real, _ = load_model(run / "seg.safetensors")
    sd_decoy, _ = load_model(cwd / "seg.safetensors")
    loaded = det.model.state_dict()
    k = next(k for k in sd_real if k.endswith("weight") and sd_real[k].ndim == 4)
    assert torch.equal(loaded[k], sd_real[k]) and not torch.equal(loaded[k], sd_decoy[k])
    assert torch.equal(real.model.state_dict()[k], sd_real[k])
    (run / "seg.safetensors").unlink()  # gone from the run folder: an error naming the run's path, not the decoy
    with pytest.raises(CheckpointError, match=str(run / "seg.safetensors")):
        load_pipeline(pipe, device="cpu")


def test_flat_files_of_version_0_1_load_with_one_line_and_upgrade(stages, tmp_path, capsys):
    from synboost.detectors.detector import read_pipeline, upgrade_pipeline_file

    flat = tmp_path / "old.yaml"
    shutil.copy(stages / "seg.safetensors", tmp_path / "seg.safetensors")
    shutil.copy(stages / "gen.safetensors", tmp_path / "gen.safetensors")
    shutil.copy(stages / "dis.safetensors", tmp_path / "dis.safetensors")
    flat.write_text("method: synboost\nsegmenter: seg.safetensors\ngenerator: gen.safetensors\n"
                    "dissimilarity: dis.safetensors\nperceptual_vgg_pretrained: false\nbatch_size: 3\n"
                    "ensemble_weights: [0.5, 0.5]\n")
    cfg = read_pipeline(flat)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "flat pipeline file" in err and "components:" in err
    assert (cfg.detector, cfg.components.segmenter, cfg.components.perceptual_vgg) == \
        ("synboost", "seg.safetensors", "random")
    assert cfg.score.ensemble_weights == [0.5, 0.5] and cfg.defaults.batch_size == 3
    new = upgrade_pipeline_file(flat, tmp_path / "new.yaml")
    assert set(yaml.safe_load(new.read_text())) == {"detector", "components", "score", "defaults"}
    assert read_pipeline(new) == cfg
    assert capsys.readouterr().err == ""  # the upgraded file loads without the note


def test_runtime_settings_are_arguments_and_flat_overrides_name_their_section(stages, tmp_path):
    from synboost.detectors.detector import load_pipeline, read_pipeline, write_pipeline_file

    pipe = write_pipeline_file(tmp_path / "p.yaml", method="synboost", segmenter=str(stages / "seg.safetensors"),
                               generator=str(stages / "gen.safetensors"),
                               dissimilarity=str(stages / "dis.safetensors"), perceptual_vgg_pretrained=False,
                               batch_size=2)
    assert yaml.safe_load(pipe.read_text())["defaults"]["batch_size"] == 2
    det = load_pipeline(pipe, device="cpu", batch_size=5, channels_last=True)
    assert (det.batch_size, det.channels_last, det.device.type) == (5, True, "cpu")
    assert load_pipeline(pipe).batch_size == 2
    assert read_pipeline(pipe, ["method=entropy", "ensemble=false"]).score.method == "entropy"
    assert read_pipeline(pipe, ["score.ensemble=false"]).score.ensemble is False
    maps = det(_images(3, (32, 64)))
    assert len(maps) == 3 and maps[0]["anomaly"].shape == (32, 64)
    with pytest.raises(ConfigError, match="unknown config key"):
        read_pipeline(pipe, ["components.nope=1"])
    with pytest.raises(ConfigError, match="needs 'detector: synboost'"):
        load_pipeline(pipe, ["detector=posthoc"])


def test_save_and_load_component_round_trip_and_refuse_another_kind(stages, tmp_path):
    from synboost.config import DissimModelConfig
    from synboost.detectors.components import COMPONENT_KINDS, load_component, save_component
    from synboost.detectors.detector import DETECTORS

    net, meta = load_component(stages / "dis.safetensors")
    assert meta["kind"] == "dissimilarity" and not net.training and meta["size"] == [32, 64]
    out = save_component(tmp_path / "again.safetensors", net, "dissimilarity", DissimModelConfig(**meta["model"]),
                         size=meta["size"], note="x")
    net2, meta2 = load_component(out, "dissimilarity")
    assert meta2["note"] == "x" and meta2["model"] == meta["model"] and list(meta2["classes"])[0] == "road"
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), net2.state_dict().values()))
    with pytest.raises(CheckpointError, match="is a 'generator' checkpoint, expected 'segmenter'"):
        load_component(stages / "gen.safetensors", "segmenter")
    with pytest.raises(ValueError, match="unknown component kind"):
        save_component(tmp_path / "x.safetensors", net, "nonsense")
    stats = {"sml_mean": torch.arange(19.0), "sml_std": torch.ones(19)}
    from synboost.config import SegModelConfig
    from synboost.detectors.components import load_segmenter

    seg, _ = load_component(stages / "seg.safetensors", "segmenter")
    save_component(tmp_path / "s.safetensors", seg, "segmenter",
                   SegModelConfig(backbone="tiny", pretrained=False, aspp_dim=16, decoder_dim=16, width=8), stats=stats)
    _, sml = load_segmenter(tmp_path / "s.safetensors")
    assert torch.equal(sml[0], stats["sml_mean"])
    assert set(DETECTORS) == {"posthoc", "synboost"} and {"segmenter", "generator"} <= set(COMPONENT_KINDS)


#: small arguments for every registered model (a new model must be added here: the test below checks that)
SMALL = {
    "deeplabv3plus": dict(backbone="tiny", aspp_dim=16, decoder_dim=16, width=8),
    "dissimilarity": dict(width=0.125),
    "spade_generator": dict(ngf=8, num_upsampling=4, z_dim=16, nef=8, encoder_size=128, spade_hidden=16,
                            out_size=(32, 64)),
    "ccfpse_generator": dict(ngf=8, z_dim=16, num_upsampling=5, out_size=(64, 128)),
    "multiscale_discriminator": dict(ndf=8, n_layers=2),
}


def test_every_registered_model_builds_and_runs():
    import synboost
    from synboost.models.generator import labels_to_onehot

    names = synboost.list_models()
    assert set(names) == set(SMALL), "give each registered model small arguments in SMALL"
    labels = torch.randint(0, 19, (1, 64, 128))
    for name in names:
        net = synboost.create_model(name, **SMALL[name]).eval()
        assert sum(p.numel() for p in net.parameters()) > 0
        with torch.no_grad():
            if name == "deeplabv3plus":
                assert net(torch.randn(1, 3, 64, 128)).shape == (1, 19, 64, 128)
            elif name == "dissimilarity":
                x = torch.randn(1, 3, 64, 128)
                out = net(x, x, labels_to_onehot(labels, 19), torch.rand(1, len(net.priors), 64, 128))
                assert out.shape == (1, 2, 64, 128)
            elif name == "spade_generator":
                assert net(labels_to_onehot(labels[:, :32, :64], 19)).shape == (1, 3, 32, 64)
            elif name == "ccfpse_generator":
                assert net(labels_to_onehot(labels, net.semantic_nc)).shape[-2:] == (64, 128)
            elif name == "multiscale_discriminator":
                outs = net(labels_to_onehot(labels, 19), torch.randn(1, 3, 64, 128))
                assert len(outs) >= 1 and all(len(o) >= 1 for o in outs)
    with pytest.raises(KeyError, match="unknown model"):
        synboost.create_model("no_such_model")


def test_upgrade_into_another_folder_keeps_pointing_at_the_same_files(stages, tmp_path, capsys):
    from synboost.detectors.detector import load_pipeline, upgrade_pipeline_file

    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(stages / "seg.safetensors", old / "seg.safetensors")
    (old / "p.yaml").write_text("method: energy\nsegmenter: seg.safetensors\n")
    new = upgrade_pipeline_file(old / "p.yaml", tmp_path / "elsewhere" / "p.yaml")
    assert "note:" not in capsys.readouterr().err  # upgrading does not tell the user to upgrade
    assert yaml.safe_load(new.read_text())["components"]["segmenter"] == "../old/seg.safetensors"
    assert load_pipeline(new, device="cpu").method == "energy"
