"""`synboost train backbone`: VGG16 / VGG19 trunks pretrained on the world, saved in torchvision's key layout, and
taken by every VGG consumer (synthesis VGG loss, perceptual difference, LPIPS, dissimilarity encoder) through the
path that takes ImageNet weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import load_file

from synboost.errors import CheckpointError


def _cfg(world, out, *extra):
    from synboost.config import BackboneConfig, load_config

    return load_config(BackboneConfig, None, [
        f"out={out}", f"data.train=synthetic:{world}@train", f"data.val=synthetic:{world}@val", "data.crop=[32,64]",
        "data.scale_min=0.75", "data.scale_max=1.25", "data.val_images=4", "backbone.head_dim=16",
        "train.batch_size=2", "train.steps_per_epoch=2", "train.workers=0", "train.log_every=1", "train.lr=1e-4",
        *extra])


def _tv_keys(depth: int) -> set[str]:
    return {f"features.{k}" for k in getattr(torchvision.models, f"vgg{depth}")().features.state_dict()}


@pytest.fixture(scope="module")
def trained(tiny_world, tmp_path_factory):
    """Both trunks trained for real (1 epoch of 2 small steps each) on the tiny world: the run's summary."""
    from synboost.training.backbone import train_backbone

    out = tmp_path_factory.mktemp("backbone")
    return train_backbone(_cfg(tiny_world, out, "train.epochs=1"), progress=False)


def _trunk_file(tmp_path, depth: int, seed: int = 123):
    """A trunk file as the stage exports it, with weights no consumer's own initialisation can give."""
    from synboost.config import BackboneConfig
    from synboost.training.backbone import TrunkNet, export_trunk

    net = TrunkNet(depth, 8)
    g = torch.Generator().manual_seed(seed + depth)
    with torch.no_grad():
        for p in net.features.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    cfg = BackboneConfig(out=str(tmp_path))
    return export_trunk(net, tmp_path / f"vgg{depth}-world.safetensors", cfg, {"score": 0.5, "epoch": 1}, 1)


def _assert_holds(module, mapping: dict[str, str], sd: dict[str, torch.Tensor]) -> None:
    """Every weight of ``module`` (own key -> torchvision key) equals the file's."""
    own = module.state_dict()
    assert mapping and set(mapping) == set(own)
    for k, src in mapping.items():
        assert torch.equal(own[k].cpu(), sd[src]), k


# ------------------------------------------------------------------------------------------------ the stage


@pytest.mark.slow
def test_stage_trains_both_trunks_and_exports_torchvision_layout(trained):
    from synboost.hub.checkpoint import load_model, read_meta

    assert trained["finished"] and set(trained["trunks"]) == {16, 19}
    for depth, path in trained["trunks"].items():
        run = trained["runs"][depth]
        sd = load_file(path)
        assert set(sd) == _tv_keys(depth)  # exactly torchvision's features, no head, no classifier
        meta = read_meta(path)
        assert meta["kind"] == "vgg_trunk" and meta["depth"] == depth and meta["epochs"] == 1
        assert meta["world"]["train"].startswith("synthetic:") and meta["world"]["height"] == 64
        assert meta["val_miou"] == pytest.approx(run["best_val"]["score"]) and 0.0 <= meta["val_miou"] <= 1.0
        best, _ = load_model(run["best"], "backbone")  # the export is the best epoch's trunk
        assert {k for k in best if k.startswith("features.")} == set(sd)
        assert all(torch.equal(best[k], v) for k, v in sd.items())
        assert any(k.startswith("head.") for k in best)
        log = [json.loads(ln) for ln in open(f"{run['out']}/train_log.jsonl")]
        assert any("edge" in r and "ce" in r for r in log) and any("val_score" in r for r in log)


@pytest.mark.slow
def test_stage_trunks_change_from_their_initialisation(trained):
    from synboost.models.vgg import full_features

    torch.manual_seed(0)
    init = full_features(16).state_dict()
    sd = load_file(trained["trunks"][16])
    assert any(not torch.equal(sd[f"features.{k}"], v) for k, v in init.items())
    assert all(torch.isfinite(v).all() for v in sd.values())


@pytest.mark.slow
def test_resume_continues_and_equals_an_uninterrupted_run(tiny_world, tmp_path):
    from synboost.training.backbone import train_backbone

    whole = train_backbone(_cfg(tiny_world, tmp_path / "a", "train.epochs=2", "backbone.depth=[16]"),
                           progress=False)
    part = train_backbone(_cfg(tiny_world, tmp_path / "b", "train.epochs=2", "train.stop_after=1"), progress=False)
    assert not part["finished"] and set(part["runs"]) == {16} and not part["trunks"]  # VGG19 waits for VGG16
    assert not (tmp_path / "b" / "vgg16-world.safetensors").exists()
    rest = train_backbone(_cfg(tiny_world, tmp_path / "b", "train.epochs=2", "backbone.depth=[16]"),
                          resume=True, progress=False)
    assert rest["finished"]
    epochs = [json.loads(ln)["epoch"] for ln in open(tmp_path / "b" / "vgg16" / "train_log.jsonl")
              if "train_loss" in ln]
    assert epochs == [1, 2]
    a, b = load_file(whole["trunks"][16]), load_file(rest["trunks"][16])
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    # the demo reuses a finished run of exactly its config, and nothing else
    from synboost.jobs.stages import backbone_done

    assert backbone_done(_cfg(tiny_world, tmp_path / "a", "train.epochs=2", "backbone.depth=[16]"))
    assert not backbone_done(_cfg(tiny_world, tmp_path / "a", "train.epochs=3", "backbone.depth=[16]"))
    assert not backbone_done(_cfg(tiny_world, tmp_path / "a", "train.epochs=2"))  # VGG19 never trained there


def test_train_set_edges_follow_the_labels_through_augmentation(tiny_world):
    from synboost.data.kinds import open_dataset
    from synboost.training.backbone import BackboneTrainSet

    ds = BackboneTrainSet(open_dataset(f"synthetic:{tiny_world}@train", with_instances=True), None, [48, 112],
                          (0.6, 1.3), True, True, seed=5)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        for i in range(4):
            x, y, e = ds[i]
            assert x.shape == (3, 48, 112) and y.shape == e.shape == (48, 112)
            y, e = y.numpy(), e.numpy()
            assert set(np.unique(e)) <= {0, 1, 255}
            assert ((e == 255) == ((y == 255) & (e == 255))).all()  # padding is ignored in both
            # a class change between two real neighbours is always an instance edge
            real = e != 255
            dw = (y[:, 1:] != y[:, :-1]) & real[:, 1:] & real[:, :-1]
            assert (e[:, 1:][dw] == 1).all() and (e[:, :-1][dw] == 1).all()
            assert ds[i][2].equal(torch.from_numpy(e))  # a function of (seed, epoch, index)


def test_boundary_targets():
    from synboost.training.backbone import boundary_targets

    ids = np.array([[300, 300, 301], [300, 300, 301], [255, 255, 301]], np.uint16)
    np.testing.assert_array_equal(boundary_targets(ids, 255),
                                  [[0, 1, 1], [0, 1, 1], [255, 255, 0]])


def test_config_refuses_unknown_depths(tmp_path):
    from synboost.errors import ConfigError
    from synboost.training.backbone import train_backbone

    with pytest.raises(ConfigError, match="backbone.depth"):
        train_backbone(_cfg(tmp_path, tmp_path / "o", "backbone.depth=[11]"), progress=False)


def test_cli_lists_the_stage():
    from synboost.cli.train import STAGES
    from synboost.config import BackboneConfig

    assert STAGES["backbone"].config is BackboneConfig
    lines = STAGES["backbone"].summary({"runs": {16: {"last": "l", "best_val": {"score": 0.1}}},
                                        "trunks": {16: "t.safetensors"}})
    assert lines == ["VGG16 trunk: t.safetensors; validation {'score': 0.1}"]


# ----------------------------------------------------------------------------------------- torchvision itself


@pytest.mark.parametrize("depth", [16, 19])
def test_torchvision_takes_the_file(tmp_path, depth):
    path = _trunk_file(tmp_path, depth)
    sd = load_file(str(path))
    tv = getattr(torchvision.models, f"vgg{depth}")()
    tv.features.load_state_dict({k.removeprefix("features."): v for k, v in sd.items()}, strict=True)
    res = tv.load_state_dict(sd, strict=False)
    assert not res.unexpected_keys
    assert set(res.missing_keys) == {k for k in tv.state_dict() if k.startswith("classifier.")}
    assert all(torch.equal(tv.state_dict()[k], v) for k, v in sd.items())


# -------------------------------------------------------------------------------------------- the consumers


def test_synthesis_vgg_loss_takes_the_file(tmp_path):
    from synboost.config import SynthesisConfig, SynthesisDataConfig, SynthesisModelConfig
    from synboost.training.synthesis import SynthesisTask

    path = _trunk_file(tmp_path, 19)
    cfg = SynthesisConfig(model=SynthesisModelConfig(ngf=8, num_upsampling=4), data=SynthesisDataConfig(size=[64, 128]),
                          vgg_pretrained=True, vgg_path=str(path))
    vgg = SynthesisTask(cfg)._vgg(torch.device("cpu"))
    _assert_holds(vgg, vgg.torchvision_keys(), load_file(str(path)))
    assert not any(p.requires_grad for p in vgg.parameters())


def test_perceptual_difference_takes_the_file(tmp_path, stages):
    from conftest import synboost_pipe
    from synboost.detectors.components import perceptual_vgg

    path = _trunk_file(tmp_path, 19)
    sd = load_file(str(path))
    vgg = perceptual_vgg(True, str(path))  # the dissimilarity stage's perceptual_vgg_path
    _assert_holds(vgg, vgg.torchvision_keys(), sd)
    pipe = synboost_pipe(stages, tmp_path, perceptual_vgg_path=str(path))  # components.perceptual_vgg: <file>
    _assert_holds(pipe.vgg19, pipe.vgg19.torchvision_keys(), sd)


def test_lpips_takes_the_vgg16_file(tmp_path):
    from synboost.detectors.perceptual import build_lpips, lpips_map

    path = _trunk_file(tmp_path, 16)
    sd = load_file(str(path))
    model = build_lpips("vgg", path=path, linear=False)
    own = model.net.state_dict()
    assert set(own) and all(torch.equal(v, sd["features." + k.split(".", 1)[1]]) for k, v in own.items())
    assert not hasattr(model, "lins")  # uniform channel weights: lpips' calibrated layers fit ImageNet channels
    calibrated = build_lpips("vgg", path=path)
    assert all(torch.equal(v, calibrated.net.state_dict()[k]) for k, v in own.items())
    x, y = torch.rand(1, 3, 32, 64), torch.rand(1, 3, 32, 64)
    d = lpips_map(x, y, net=model)
    assert d.shape == (1, 32, 64) and float(d.min()) >= 0 and float(lpips_map(x, x, net=model).abs().max()) == 0


def test_dissimilarity_encoder_takes_the_file(tmp_path):
    from synboost.config import DissimilarityConfig, DissimModelConfig
    from synboost.training.dissimilarity import DissimilarityTask

    path = _trunk_file(tmp_path, 16)
    cfg = DissimilarityConfig(segmenter="s", generator="g",
                              model=DissimModelConfig(width=1.0, vgg_pretrained=True, vgg_path=str(path)))
    enc = DissimilarityTask(cfg).build_model().vgg_encoder
    _assert_holds(enc, enc.torchvision_keys(), load_file(str(path)))


def test_pth_files_keep_loading(tmp_path):
    from synboost.models.vgg import VGG16Encoder, load_imagenet_vgg

    sd = load_file(str(_trunk_file(tmp_path, 16)))
    torch.save(sd, tmp_path / "vgg16-397923af.pth")
    enc = load_imagenet_vgg(VGG16Encoder(), 16, tmp_path)  # a folder holding torchvision's file name
    _assert_holds(enc, enc.torchvision_keys(), sd)


# ------------------------------------------------------------------------------------------------ refusals


def _one_line(err: pytest.ExceptionInfo, *words: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_a_segmenter_checkpoint_is_refused_as_a_vgg_file(tmp_path, stages):
    from synboost.models.vgg import VGG16Encoder, VGG19Pyramid, load_imagenet_vgg

    seg = stages / "seg.safetensors"
    with pytest.raises(CheckpointError) as err:
        load_imagenet_vgg(VGG19Pyramid(), 19, seg)
    _one_line(err, str(seg), "'segmenter' checkpoint", "synboost train backbone")
    with pytest.raises(CheckpointError) as err:
        load_imagenet_vgg(VGG16Encoder(), 16, _trunk_file(tmp_path, 19))
    _one_line(err, "a VGG19 trunk", "not VGG16")


def test_foreign_files_with_other_keys_or_no_safetensors_are_refused(tmp_path):
    from safetensors.torch import save_file

    from synboost.models.vgg import VGG19Pyramid, load_imagenet_vgg

    other = tmp_path / "other.safetensors"
    save_file({"conv.weight": torch.zeros(1)}, str(other))
    with pytest.raises(CheckpointError) as err:
        load_imagenet_vgg(VGG19Pyramid(), 19, other)
    _one_line(err, str(other), "lacks", "features.0.weight")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError) as err:
        load_imagenet_vgg(VGG19Pyramid(), 19, broken)
    _one_line(err, str(broken))
