"""Importers of the official SynBoost / PEBAL checkpoints, on random files with the official names and shapes.

The official files are not downloaded: each test writes a random state dict under the official key names (derived
from our model by the inverse renaming, written out here independently of the importer, and cross-checked
against shapes read in the official code), wrapped as the official file is, then imports it and checks that
every tensor arrives under its new name and that the imported model runs.
"""
from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from synboost.errors import CheckpointError
from synboost.hub.checkpoint import read_meta
from synboost.importers.official import IMPORTERS, import_dissimilarity, import_pebal, import_segmenter
from synboost.models import create_model

DESIGN = Path(__file__).parent / "data"  # the official key list, derived from the official code
WRN38_PARAMS = 137_103_936  # DeepWV3Plus(19 classes); PEBAL's note: 137.10 M


# ------------------------------------------------------------------------------------------ official names

def official_seg_key(ours: str) -> str:
    """Our DeepLabV3+ (wrn38) key -> the official DeepWV3Plus key (without ``module.``)."""
    if ours.startswith("trunk."):
        return ours[len("trunk."):]
    if ours == "classifier.weight":
        return "final.6.weight"
    return ours


def meta_segmenter(abstention: bool = False, output_stride: int = 8):
    with torch.device("meta"):
        return create_model("deeplabv3plus", backbone="wrn38", output_stride=output_stride, abstention=abstention)


def random_like(shapes: dict[str, tuple[torch.Size, torch.dtype]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, (shape, dtype) in shapes.items():
        if dtype == torch.long:  # num_batches_tracked
            out[k] = torch.randint(1, 10_000, shape, generator=g)
        elif k.endswith("running_var"):
            out[k] = torch.rand(shape, generator=g) + 0.5
        else:
            out[k] = torch.randn(shape, generator=g) * 0.02
    return out


def official_segmenter_sd(abstention: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    shapes = {official_seg_key(k): (v.shape, v.dtype) for k, v in meta_segmenter(abstention).state_dict().items()}
    return random_like(shapes, seed)


# shapes read in the official wider_resnet.py / deepv3.py (bn1 is a Sequential(BatchNorm2d, ReLU), hence ".0")
OFFICIAL_SEG_SHAPES = {
    "mod1.conv1.weight": (64, 3, 3, 3),
    "mod2.block1.bn1.0.weight": (64,),
    "mod2.block1.convs.conv1.weight": (128, 64, 3, 3),
    "mod2.block1.convs.bn2.0.running_var": (128,),
    "mod2.block1.proj_conv.weight": (128, 64, 1, 1),
    "mod3.block3.convs.conv2.weight": (256, 256, 3, 3),
    "mod4.block1.proj_conv.weight": (512, 256, 1, 1),
    "mod4.block6.convs.conv2.weight": (512, 512, 3, 3),
    "mod5.block1.convs.conv2.weight": (1024, 512, 3, 3),
    "mod6.block1.convs.conv1.weight": (512, 1024, 1, 1),
    "mod6.block1.convs.bn3.0.weight": (1024,),
    "mod6.block1.convs.conv3.weight": (2048, 1024, 1, 1),
    "mod7.block1.convs.conv3.weight": (4096, 2048, 1, 1),
    "mod7.block1.proj_conv.weight": (4096, 2048, 1, 1),
    "aspp.img_conv.0.weight": (256, 4096, 1, 1),
    "aspp.features.3.0.weight": (256, 4096, 3, 3),
    "bot_fine.weight": (48, 128, 1, 1),
    "bot_aspp.weight": (256, 1280, 1, 1),
    "final.0.weight": (256, 304, 3, 3),
    "final.4.running_mean": (256,),
    "final.6.weight": (19, 256, 1, 1),
}


def test_wrn38_trunk_has_the_official_names_shapes_and_size():
    m = meta_segmenter()
    sd = {official_seg_key(k): tuple(v.shape) for k, v in m.state_dict().items()}
    for k, shape in OFFICIAL_SEG_SHAPES.items():
        assert sd[k] == shape, k
    assert len(sd) == 268  # 139 parameters + 43 BatchNorms x 3 buffers, as DeepWV3Plus(19).state_dict()
    assert not any(k.startswith(("bn_out", "classifier", "mod1.bn")) for k in sd)  # DeepWV3Plus drops bn_out / fc
    n = sum(p.numel() for p in m.parameters())
    assert n == WRN38_PARAMS and abs(n / 137.10e6 - 1) < 0.01, f"{n / 1e6:.3f} M parameters vs 137.10 M"
    assert m.trunk.imagenet_weights is None
    assert (m.trunk.low_channels, m.trunk.out_channels, m.trunk.low_stride) == (128, 4096, 2)


@pytest.mark.parametrize("os_", [8, 16])
def test_wrn38_strides(os_):
    m = meta_segmenter(output_stride=os_).eval()
    x = torch.empty(1, 3, 64, 128, device="meta")
    low, high = m.trunk(x)
    assert tuple(low.shape) == (1, 128, 32, 64)  # mod2 at stride 2, as DeepWV3Plus
    assert tuple(high.shape) == (1, 4096, 64 // os_, 128 // os_)
    assert tuple(m(x).shape) == (1, 19, 64, 128)


# ------------------------------------------------------------------------------------------ segmenter / PEBAL

def test_import_nvidia_segmenter(tmp_path):
    from synboost.detectors.components import load_segmenter

    src_sd = official_segmenter_sd(seed=1)
    kept = {k: v for k, v in src_sd.items() if not k.endswith("num_batches_tracked")}  # a pre-0.4.1 file
    wrapped = {"module." + k: v for k, v in kept.items()}
    wrapped["module.criterion.nll_loss.weight"] = torch.ones(19)  # skipped, as the official loaders do
    src = tmp_path / "cityscapes_best.pth"
    torch.save({"state_dict": wrapped, "epoch": 3, "mean_iu": np.float64(0.83), "command": "train.py",
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.002, "params": [0, 1]}]}}, src)
    del wrapped
    out = import_segmenter(src, tmp_path / "seg.safetensors")
    meta = read_meta(out)
    assert meta["kind"] == "segmenter" and meta["importer"] == "segmenter"
    assert meta["imported_from"] == "cityscapes_best.pth"
    assert meta["model"]["backbone"] == "wrn38" and meta["model"]["output_stride"] == 8
    assert meta["model"]["abstention"] is False and meta["model"]["pretrained"] is False

    model, sml = load_segmenter(out)
    assert sml is None
    got = model.state_dict()
    for k, v in got.items():
        off = official_seg_key(k)
        if off in kept:
            assert torch.equal(v, kept[off]), k
        else:  # absent counters are 0
            assert k.endswith("num_batches_tracked") and int(v) == 0, k
    del got, kept
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 19, 64, 64) and torch.isfinite(logits).all()
    del model

    # the 19-class file is not a PEBAL file: one line naming the file, the expectation and the mismatch
    with pytest.raises(CheckpointError) as e:
        import_pebal(src, tmp_path / "pebal.safetensors")
    msg = str(e.value)
    assert "\n" not in msg and "cityscapes_best.pth" in msg and "PEBAL" in msg
    assert re.search(r"classifier.weight \(19, 256, 1, 1\) vs model \(20, 256, 1, 1\)", msg)
    assert "the NVIDIA 19-class segmenter (importer 'segmenter')" in msg
    assert not (tmp_path / "pebal.safetensors").exists()


def test_import_pebal(tmp_path):
    from synboost.detectors.components import load_pebal

    src_sd = official_segmenter_sd(abstention=True, seed=2)
    assert src_sd["final.6.weight"].shape == (20, 256, 1, 1)
    src = tmp_path / "best_ad_ckpt.pth"
    torch.save({"model": OrderedDict(("branch1." + k, v) for k, v in src_sd.items()),
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "params": [0]}]},
                "epoch": 7, "iteration": 100}, src)
    out = IMPORTERS["pebal"](src, tmp_path / "pebal.safetensors")
    meta = read_meta(out)
    assert meta["kind"] == "segmenter" and meta["model"]["abstention"] is True
    assert meta["importer"] == "pebal" and meta["imported_from"] == "best_ad_ckpt.pth"
    model = load_pebal(out)  # refuses a segmenter without the abstention output
    for k, v in model.state_dict().items():
        assert torch.equal(v, src_sd[official_seg_key(k)]), k
    del src_sd
    with torch.no_grad():
        x = torch.randn(1, 3, 32, 32)
        every = model(x, all_outputs=True)
    assert every.shape == (1, 20, 32, 32) and torch.isfinite(every).all()


# ------------------------------------------------------------------------------------------ dissimilarity

DISSIM_KW = {"main": dict(semantic=True, priors=("entropy", "perceptual", "distance"), correlation=True,
                          spade="decoder"),
             "baseline": dict(semantic=True, priors=(), correlation=True, spade="none")}


def official_dissim_shapes_from_notes() -> dict[str, dict[str, tuple[int, ...]]]:
    path = DESIGN / "synboost-dissim-keys.txt"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    sections: list[dict[str, tuple[int, ...]]] = []
    for line in path.read_text().splitlines():
        if line.startswith("# === "):
            sections.append({})
        elif line.strip() and not line.startswith("#"):
            name, shape = line.split(" ", 1)
            sections[-1][name] = tuple(int(s) for s in re.findall(r"\d+", shape))
    assert len(sections) == 2
    return {"main": sections[0], "baseline": sections[1]}


@pytest.mark.parametrize("variant", ["main", "baseline"])
def test_dissimilarity_names_match_the_official_list(variant):
    notes = official_dissim_shapes_from_notes()[variant]
    with torch.device("meta"):
        net = create_model("dissimilarity", **DISSIM_KW[variant])
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == notes


@pytest.mark.parametrize("variant", ["main", "baseline"])
def test_import_dissimilarity(tmp_path, variant):
    from synboost.detectors.components import load_dissimilarity

    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in create_model("dissimilarity", **DISSIM_KW[variant])
                  .state_dict().items()}
    src_sd = random_like(shapes, seed=3)
    name = {"main": "best_net_baseline_void_prior_spadedecoder_mult_3.pth",
            "baseline": "best_net_baseline_mult_3.pth"}[variant]
    src = tmp_path / name
    torch.save(OrderedDict(src_sd), src)  # the official file is a bare state dict
    out = IMPORTERS[f"dissimilarity-{variant}"](src, tmp_path / "d.safetensors")
    net, meta = load_dissimilarity(out)
    assert meta["kind"] == "dissimilarity" and meta["size"] == [256, 512]
    assert meta["priors"] == list(DISSIM_KW[variant]["priors"]) == meta["model"]["priors"]
    assert meta["importer"] == f"dissimilarity-{variant}" and meta["imported_from"] == name
    assert meta["official"]["ensemble"] is (variant == "main")
    got = net.state_dict()
    assert set(got) == set(src_sd)
    for k, v in src_sd.items():
        assert torch.equal(got[k], v), k
    x = torch.randn(1, 3, 64, 64)
    onehot = torch.nn.functional.one_hot(torch.randint(0, 19, (1, 64, 64)), 19).permute(0, 3, 1, 2).float()
    priors = torch.rand(1, 3, 64, 64) if variant == "main" else None
    with torch.no_grad():
        logits = net(x, x.flip(-1), onehot, priors)
    assert logits.shape == (1, 2, 64, 64) and torch.isfinite(logits).all()


# ------------------------------------------------------------------------------------------ clear errors

def test_wrong_files_give_one_clear_line(tmp_path):
    assert set(IMPORTERS) == {"segmenter", "pebal", "dissimilarity-main", "dissimilarity-baseline"}
    garbage = tmp_path / "notes.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes.pth: cannot be read .*expected NVIDIA's DeepWV3Plus"):
        import_segmenter(garbage, tmp_path / "x.safetensors")

    empty = tmp_path / "meta_only.pth"
    torch.save({"epoch": 3, "note": "no weights"}, empty)
    with pytest.raises(CheckpointError, match=r"meta_only.pth: expected .*found a dict with no tensors \(keys: "
                                              r"epoch, note\)"):
        import_dissimilarity(empty, tmp_path / "x.safetensors")

    # a segmentation-like file given to the dissimilarity importer: names the file, what it looks like, the keys
    seg_like = tmp_path / "cityscapes_best.pth"
    torch.save({"state_dict": {"module.mod1.conv1.weight": torch.zeros(64, 3, 3, 3),
                               "module.final.6.weight": torch.zeros(19, 256, 1, 1)}}, seg_like)
    with pytest.raises(CheckpointError) as e:
        import_dissimilarity(seg_like, tmp_path / "x.safetensors", "main")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(seg_like))
    assert "best_net_baseline_void_prior_spadedecoder_mult_3.pth" in msg
    assert "the NVIDIA 19-class segmenter (importer 'segmenter')" in msg
    assert re.search(r"missing 116 of \d+ keys: vgg_encoder\.layer1\.0\.weight", msg)
    assert "unexpected 2 keys: mod1.conv1.weight, final.6.weight" in msg
    with pytest.raises(CheckpointError, match="unknown dissimilarity variant 'light'"):
        import_dissimilarity(seg_like, tmp_path / "x.safetensors", "light")
    assert not (tmp_path / "x.safetensors").exists()


def test_dissimilarity_file_given_to_the_segmenter_importer(tmp_path):
    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in create_model("dissimilarity", **DISSIM_KW["main"])
                  .state_dict().items()}
    src = tmp_path / "best_net_baseline_void_prior_spadedecoder_mult_3.pth"
    torch.save(OrderedDict(random_like(shapes)), src)
    with pytest.raises(CheckpointError) as e:
        import_segmenter(src, tmp_path / "seg.safetensors")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(src))
    assert "expected NVIDIA's DeepWV3Plus" in msg
    assert "a SynBoost dissimilarity checkpoint (importer 'dissimilarity-main')" in msg
    assert re.search(r"missing \d+ of \d+ keys: trunk\.mod1\.conv1\.weight", msg) and "unexpected 116 keys" in msg
    assert not (tmp_path / "seg.safetensors").exists()


class Evil:
    def __reduce__(self):
        return (print, ("this ran while loading a checkpoint",))


@pytest.mark.parametrize("how", ["raw_pickle", "inside_torch_save"])
def test_pickles_with_arbitrary_objects_are_refused(tmp_path, how, capsys):
    src = tmp_path / "evil.pth"
    if how == "raw_pickle":
        src.write_bytes(pickle.dumps(Evil(), protocol=2))
    else:
        torch.save({"state_dict": {"module.mod1.conv1.weight": torch.zeros(1)}, "hook": Evil()}, src)
    for name, fn in IMPORTERS.items():
        with pytest.raises(CheckpointError, match=r"evil.pth: cannot be read safely .*; expected ") as e:
            fn(src, tmp_path / f"{name}.safetensors")
        msg = str(e.value)
        assert "\n" not in msg and "it holds the Python object print " in msg  # what the unpickler refused
        assert f"convert it once: torch.save(torch.load('{src}', weights_only=False)['state_dict'], 'clean.pth')" in msg
        assert "will likely succeed" not in msg and "\x1b" not in msg  # not torch's own advice
        assert not (tmp_path / f"{name}.safetensors").exists()
    assert "this ran" not in capsys.readouterr().out


def test_a_checkpoint_with_a_class_instance_names_the_class(tmp_path):
    import argparse

    from synboost.hub.checkpoint import load_foreign

    src = tmp_path / "with_args.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, src)
    with pytest.raises(CheckpointError) as e:
        load_foreign(src)
    assert "it holds the Python object argparse.Namespace (not tensors or plain data" in str(e.value)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(src.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"truncated.pth: cannot be read as a PyTorch checkpoint \(.+\); is "
                                              r"the file complete"):
        load_foreign(truncated)
