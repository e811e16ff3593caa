"""Bring your own segmenter: any network through a segmenter spec file (or ``SegmenterAdapter`` in memory) is the
segmentation stage of the detectors and of the dissimilarity training data.

The end-to-end test runs SynBoost from the world writer to ``evaluate`` with a torchvision
``deeplabv3_mobilenet_v3_large`` (random weights: ``weights=None, weights_backbone=None``; only its BatchNorm
statistics are set, by one pass over training images, so that its label maps are not one class everywhere) and
checks that the label maps of the training data and of the detector are that network's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from synboost.errors import CheckpointError, ConfigError, SynboostError

SIZE = (64, 128)


def _spec(folder: Path, name: str = "seg.yaml", **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(yaml.safe_dump({"kind": "synboost-segmenter-adapter", **fields}, sort_keys=False))
    return p


def _images(n=2, size=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def _mobilenet(num_classes=19, seed=0):
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(seed)
    return deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes).eval()


@torch.no_grad()
def _set_batchnorm_statistics(model: nn.Module, images) -> nn.Module:
    """The BatchNorm running statistics of ``model`` from one pass over ``images`` (its weights stay random)."""
    from synboost.tensors import images_to_batch

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average
    model.train()(images_to_batch(images, "cpu"))
    return model.eval()


@torch.no_grad()
def _direct_labels(model, image, size=None):
    """The torchvision model called directly on one image: its train-id label map (at ``size``, nearest)."""
    from synboost.tensors import images_to_batch, resize_maps

    pred = model(images_to_batch([image], "cpu"))["out"].argmax(1)
    return (resize_maps(size, pred)[0] if size else pred)[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from synboost.config import SyntheticWorldConfig
    from synboost.data.synthetic import write_world

    out = tmp_path_factory.mktemp("byo-world")
    write_world(SyntheticWorldConfig(out=str(out), n=20, height=SIZE[0], width=SIZE[1], seed=3, workers=1),
                progress=False)
    return out


@pytest.fixture(scope="module")
def mobilenet(world, tmp_path_factory):
    """(spec file, the same network in memory): the mobilenet's weights saved as safetensors beside its spec."""
    from safetensors.torch import save_file

    from synboost.data.kinds import open_dataset

    train = open_dataset(f"synthetic:{world}@train")
    model = _set_batchnorm_statistics(_mobilenet(), [train[i]["image"] for i in range(8)])
    folder = tmp_path_factory.mktemp("byo-seg") / "mobilenet"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "mobilenet.safetensors"))
    spec = _spec(folder, "mobilenet.yaml", source="torchvision:deeplabv3_mobilenet_v3_large",
                 kwargs={"weights": None, "weights_backbone": None, "num_classes": 19},
                 weights="mobilenet.safetensors", output_key="out")
    return spec, model


# ------------------------------------------------------------------------------------------------ end to end


def test_synboost_end_to_end_with_a_torchvision_mobilenet_segmenter(world, mobilenet, tmp_path):
    from synboost.config import DissimilarityConfig, SynthesisConfig, load_config
    from synboost.data.kinds import open_dataset
    from synboost.detectors.adapter import SegmenterAdapter
    from synboost.detectors.detector import load_pipeline, read_pipeline, resolve_component
    from synboost.jobs.evaluate import evaluate
    from synboost.training.dissimilarity import prepare_samples, train_dissimilarity
    from synboost.training.synthesis import train_synthesis

    spec, model = mobilenet
    # the synthesis stage, trained for two steps (it reads ground-truth labels, not the segmenter)
    syn = train_synthesis(load_config(SynthesisConfig, None, [
        f"out={tmp_path / 'syn'}", f"data.train=synthetic:{world}@train", f"data.val=synthetic:{world}@val",
        "data.size=[32,64]", "model.ngf=8", "model.num_upsampling=4", "model.z_dim=16", "model.nef=8",
        "model.encoder_size=128", "model.spade_hidden=16", "model.ndf=8", "model.n_layers_d=2", "lambda_vgg=0",
        "vgg_pretrained=false", "train.batch_size=2", "train.workers=0", "train.epochs=1", "train.steps_per_epoch=2",
        "val_images=2", "sample_every=1000"]), progress=False)

    # the dissimilarity stage: its anomaly data made through the mobilenet's spec
    cfg = load_config(DissimilarityConfig, None, [
        f"out={tmp_path / 'dis'}", f"segmenter={spec}", f"generator={syn['generator']}",
        "perceptual_vgg_pretrained=false", "model.width=0.125", "model.vgg_pretrained=false",
        f"data.train=synthetic:{world}@train", "data.size=[32,64]", "data.variants=2", "data.max_images=6",
        "data.heldout_fraction=0.34", "train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=2",
        "train.workers=0", "train.device=cpu"])
    samples = prepare_samples(cfg, torch.device("cpu"), progress=False)
    train = open_dataset(f"synthetic:{world}@train")
    n_train = 6 - 2  # max_images 6, two held out
    assert len(samples["train"]) == 2 * n_train
    for k in range(n_train):  # variant 0 of each image is the segmenter's label map: the mobilenet's
        direct = _direct_labels(model, train[k]["image"], (32, 64))
        assert torch.equal(samples["train"][2 * k]["labels"], direct)
    assert len(torch.unique(samples["train"][0]["labels"])) >= 3  # not one class everywhere
    summary = train_dissimilarity(cfg, samples=samples, progress=False)

    # the pipeline the stage wrote: its segmenter is the spec file, relative to the pipeline's folder
    pipe = Path(summary["pipeline"])
    written = yaml.safe_load(pipe.read_text())["components"]["segmenter"]
    assert not Path(written).is_absolute() and written.endswith("mobilenet.yaml")
    assert Path(resolve_component(read_pipeline(pipe).components.segmenter, pipe.parent)).resolve() == spec.resolve()
    det = load_pipeline(pipe, device="cpu", batch_size=2, precision="fp32")  # labels compared with a direct call
    assert isinstance(det.model, SegmenterAdapter) and det.method == "synboost"
    # frozen by default, but a foreign segmenter runs as its owner wrote it (nothing folded into its weights)
    assert "dissimilarity" in det.frozen and "segmenter" not in det.frozen

    test = open_dataset(f"synthetic:{world}")
    image = test[0]["image"]
    maps = det([image])[0]
    assert maps["anomaly"].shape == image.shape[:2] and np.isfinite(maps["anomaly"]).all()
    direct = _direct_labels(model, image).numpy()
    assert np.array_equal(maps["segmentation"], direct) and len(np.unique(direct)) >= 3

    report = evaluate(det, test, ["synboost", "entropy"], tmp_path / "eval", progress=False, html=False)
    assert report["images"] == len(test) > 0
    for row in report["results"]:
        assert np.isfinite([row["ap"], row["fpr95"], row["auroc"]]).all(), row
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_the_example_spec_loads_and_segments():
    from synboost.detectors.components import load_segmenter
    from synboost.detectors.posthoc import PosthocDetector

    example = Path(__file__).resolve().parents[1] / "configs" / "segmenter" / "torchvision-mobilenet.yaml"
    model, sml = load_segmenter(example)
    assert sml is None and model.num_classes == 19
    out = PosthocDetector(model, "energy")(_images(1, (48, 80)))[0]
    assert out["anomaly"].shape == (48, 80) and out["segmentation"].max() < 19


# ------------------------------------------------------------------------------------------------ class maps


def test_class_map_combines_logits_by_logsumexp_and_drops_void():
    from synboost import scores
    from synboost.detectors.adapter import ABSENT_LOGIT, SegmenterAdapter

    z = torch.randn(2, 5, 4, 6) * 3

    class Net(nn.Module):
        def forward(self, x):
            return z

    # classes 0 and 1 are road, 2 is car, 3 is void by name, 4 is not listed (void)
    ad = SegmenterAdapter(Net(), class_map={0: "road", 1: 0, 2: "car", 3: "void"})
    out = ad(torch.zeros(2, 3, 4, 6))
    assert out.shape == (2, 19, 4, 6)
    assert torch.allclose(out[:, 0], torch.logsumexp(z[:, :2], 1))
    assert torch.equal(out[:, 13], z[:, 2])
    absent = [t for t in range(19) if t not in (0, 13)]
    assert ad.absent_train_ids == tuple(absent) and (out[:, absent] == ABSENT_LOGIT).all()
    # the softmax over the train ids = the network's softmax restricted to its mapped classes, renormalised
    p = z.softmax(1)
    kept = p[:, 0] + p[:, 1] + p[:, 2]
    q = out.softmax(1)
    assert torch.allclose(q[:, 0], (p[:, 0] + p[:, 1]) / kept, atol=1e-6)
    assert torch.allclose(q[:, 13], p[:, 2] / kept, atol=1e-6)
    assert torch.isfinite(scores.softmax_entropy(out)).all() and torch.isfinite(scores.synboost_entropy(out)).all()
    # the list form (one entry per class) and names with underscores say the same
    same = SegmenterAdapter(Net(), class_map=["road", "road", 13, None, "ignore"])(torch.zeros(2, 3, 4, 6))
    assert torch.equal(same, out)
    assert SegmenterAdapter(Net(), class_map={0: "traffic_light"}).class_map == {0: 6}


def test_a_spec_class_map_maps_a_21_class_torchvision_network(tmp_path):
    from synboost.detectors.adapter import combine_classes
    from synboost.detectors.components import load_segmenter
    from synboost.tensors import images_to_batch

    voc = {2: "bicycle", 6: "bus", 7: "car", 14: "motorcycle", 15: "person", 19: "train", 0: "road"}
    spec = _spec(tmp_path, source="torchvision:deeplabv3_mobilenet_v3_large",
                 kwargs={"weights": None, "weights_backbone": None}, class_map=voc)
    torch.manual_seed(123)  # the spec builds its random weights under its own seed (0): the same as _mobilenet's
    ad, _ = load_segmenter(spec)
    x = images_to_batch(_images(1), "cpu")
    with torch.no_grad():
        out = ad(x)
        raw = _mobilenet(num_classes=21)(x)["out"]
    groups = [[] for _ in range(19)]
    for k, t in {0: 0, 2: 18, 6: 15, 7: 13, 14: 17, 15: 11, 19: 16}.items():
        groups[t].append(k)
    assert out.shape == (1, 19, *SIZE)
    assert torch.allclose(out, combine_classes(raw, groups), atol=1e-5)


def test_normalisation_and_input_size_are_the_networks():
    from synboost.detectors.adapter import SegmenterAdapter
    from synboost.tensors import images_to_batch

    seen = {}

    class Net(nn.Module):
        def forward(self, x):
            seen["x"] = x
            return torch.zeros(x.shape[0], 19, x.shape[2] // 4, x.shape[3] // 4)

    img = _images(1)
    ad = SegmenterAdapter(Net(), mean=[0, 0, 0], std=[1, 1, 1], input_size=[32, 48])
    out = ad(images_to_batch(img, "cpu"))
    assert out.shape == (1, 19, *SIZE)  # the logits come back at the batch's size
    assert seen["x"].shape == (1, 3, 32, 48)
    x01 = torch.from_numpy(img[0]).permute(2, 0, 1)[None].float() / 255
    want = torch.nn.functional.interpolate(x01, size=(32, 48), mode="bilinear", align_corners=False)
    assert torch.allclose(seen["x"], want, atol=1e-5)
    SegmenterAdapter(Net())(images_to_batch(img, "cpu"))  # ImageNet's normalisation: the batch as it is
    assert torch.equal(seen["x"], images_to_batch(img, "cpu"))


# ------------------------------------------------------------------------------------ TorchScript and ONNX files


class TinySeg(nn.Module):
    """A small 21-class network with logits at half resolution (so the adapter resizes them)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.Conv2d(8, 21, 3, padding=1))

    def forward(self, x):
        return self.body(x)


def test_torchscript_and_onnx_files_give_the_eager_label_maps(tmp_path):
    from synboost.detectors.adapter import SegmenterAdapter
    from synboost.detectors.components import load_segmenter
    from synboost.detectors.posthoc import PosthocDetector

    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    net = TinySeg().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        net.body[1].running_mean.uniform_(-0.5, 0.5)
        net.body[1].running_var.uniform_(0.5, 2.0)
    class_map = {i: i % 19 for i in range(21)}  # 19 and 20 share train ids 0 and 1 with classes 0 and 1
    images = _images(3)
    eager = PosthocDetector(SegmenterAdapter(net, class_map=class_map), "entropy").score_all(images)

    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, *SIZE)), str(tmp_path / "tiny.pt"))
    torch.onnx.export(net, (torch.zeros(1, 3, *SIZE),), str(tmp_path / "tiny.onnx"), input_names=["image"],
                      output_names=["logits"], dynamo=True, verbose=False)
    for source, extra in (("torchscript:tiny.pt", {}), ("onnx:tiny.onnx", {"input_size": list(SIZE)})):
        model, _ = load_segmenter(_spec(tmp_path, f"{source.split(':')[0]}.yaml", source=source, class_map=class_map,
                                        **extra))
        # batch 2 over 3 images: the fixed-batch ONNX file is chunked and padded
        got = PosthocDetector(model, "entropy", batch_size=2).score_all(images)
        for a, b in zip(eager, got):
            assert np.array_equal(a["segmentation"], b["segmentation"]), source
            for m in ("entropy", "energy", "maxlogit"):
                assert np.allclose(a[m], b[m], atol=1e-4), (source, m)
    assert len(np.unique(eager[0]["segmentation"])) >= 3
    # the fixed-shape ONNX file without its input_size: one line with the fix
    with pytest.raises(ConfigError, match=r"fixed input of 64x128; set input_size: \[64, 128\]"):
        load_segmenter(_spec(tmp_path, "fixed.yaml", source="onnx:tiny.onnx", class_map=class_map))


# ------------------------------------------------------------------------------------------- Python API


def test_an_adapter_in_memory_is_a_pipelines_segmenter(stages, tmp_path):
    import synboost
    from synboost.detectors.detector import write_pipeline_file
    from synboost.tensors import images_to_batch

    net = TinySeg().eval()
    seg = synboost.SegmenterAdapter(net, class_map={i: i % 19 for i in range(21)})
    pipe = write_pipeline_file(tmp_path / "p.yaml", method="synboost", segmenter=str(stages / "seg.safetensors"),
                               generator=str(stages / "gen.safetensors"),
                               dissimilarity=str(stages / "dis.safetensors"), perceptual_vgg_pretrained=False)
    det = synboost.load_pipeline(pipe, device="cpu", segmenter=seg, precision="fp32")  # labels compared exactly
    assert det.model is seg
    out = det(_images(1))[0]
    assert out["anomaly"].shape == SIZE and np.isfinite(out["anomaly"]).all()
    with torch.no_grad():
        want = seg(images_to_batch(_images(1), "cpu")).argmax(1)[0].numpy()
    assert np.array_equal(out["segmentation"], want)
    assert synboost.load_segmenter is not None and "SegmenterAdapter" in dir(synboost)


# ------------------------------------------------------------------------------------------------- errors


def _one_line(err: pytest.ExceptionInfo, *names) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    for n in names:
        assert str(n) in msg, msg
    return msg


def test_errors_are_one_line_naming_the_file_and_the_fix(tmp_path, stages):
    from synboost.detectors.components import load_pebal, load_segmenter
    from synboost.detectors.detector import write_pipeline_file

    tv = {"source": "torchvision:deeplabv3_mobilenet_v3_large", "kwargs": {"weights": None, "weights_backbone": None}}
    # a spec of another kind (a pipeline file given as the segmenter)
    pipe = write_pipeline_file(tmp_path / "pipeline.yaml", method="entropy", segmenter=str(stages / "seg.safetensors"))
    with pytest.raises(ConfigError) as e:
        load_segmenter(pipe)
    _one_line(e, pipe, "not a segmenter spec", "kind: synboost-segmenter-adapter")
    (tmp_path / "k.yaml").write_text("kind: segmenter\nsource: onnx:x.onnx\n")
    with pytest.raises(ConfigError) as e:
        load_segmenter(tmp_path / "k.yaml")
    _one_line(e, "k.yaml", "kind 'segmenter'")
    # missing files: the spec, its weights, its ONNX file (relative to the spec's folder)
    with pytest.raises(CheckpointError) as e:
        load_segmenter(tmp_path / "none.yaml")
    _one_line(e, "none.yaml", "not found")
    sub = tmp_path / "specs"
    with pytest.raises(ConfigError) as e:
        load_segmenter(_spec(sub, "w.yaml", **tv, weights="missing.safetensors"))
    _one_line(e, "w.yaml", sub / "missing.safetensors", "relative to its folder")
    with pytest.raises(ConfigError) as e:
        load_segmenter(_spec(sub, "o.yaml", source="onnx:net.onnx"))
    _one_line(e, "o.yaml", sub / "net.onnx", "not found")
    # 21 channels and no class_map; a class_map that names a class the network does not have
    with pytest.raises(ConfigError) as e:
        load_segmenter(_spec(tmp_path, "c.yaml", **tv))
    _one_line(e, "c.yaml", "21 channels", "class_map")
    with pytest.raises(ConfigError) as e:
        load_segmenter(_spec(tmp_path, "c2.yaml", **tv, class_map={30: "car"}))
    _one_line(e, "c2.yaml", "names class 30", "21 channels")
    with pytest.raises(ConfigError) as e:
        load_segmenter(_spec(tmp_path, "c3.yaml", **tv, class_map={0: "lamp post"}))
    _one_line(e, "c3.yaml", "'lamp post' is not a Cityscapes train class")
    # a dict output and no output key
    with pytest.raises(ConfigError) as e:
        load_segmenter(_spec(tmp_path, "k2.yaml", **{**tv, "kwargs": {**tv["kwargs"], "num_classes": 19}},
                             output_key=""))
    _one_line(e, "k2.yaml", "returns a dict (keys: out)", "output_key")
    # unknown key, unknown source, unknown torchvision model
    with pytest.raises(ConfigError) as e:
        load_segmenter(_spec(tmp_path, "u.yaml", **tv, outputs="out"))
    _one_line(e, "u.yaml", "unknown key 'outputs'")
    with pytest.raises(ConfigError) as e:
        load_segmenter(_spec(tmp_path, "s.yaml", source="keras:model.h5"))
    _one_line(e, "s.yaml", "torchvision:", "onnx:")
    with pytest.raises(ConfigError) as e:
        load_segmenter(_spec(tmp_path, "t.yaml", source="torchvision:deeplabv4"))
    _one_line(e, "t.yaml", "no model 'deeplabv4'", "deeplabv3_mobilenet_v3_large")
    # an ONNX file given where a checkpoint goes
    (tmp_path / "net.onnx").write_bytes(b"not really")
    with pytest.raises(CheckpointError) as e:
        load_segmenter(tmp_path / "net.onnx")
    _one_line(e, "net.onnx", "segmenter spec", "source: onnx:FILE")
    # an adapter is no PEBAL fine-tune and cannot become one
    ok = _spec(tmp_path, "ok.yaml", **{**tv, "kwargs": {**tv["kwargs"], "num_classes": 19}})
    with pytest.raises(CheckpointError) as e:
        load_pebal(ok)
    _one_line(e, "ok.yaml", "not a PEBAL fine-tune")
    with pytest.raises(ConfigError) as e:
        load_segmenter(ok)[0].add_abstention()
    _one_line(e, "ok.yaml", "cannot be fine-tuned by PEBAL")


@pytest.mark.parametrize("source,package", [("timm:resnet18", "timm"), ("huggingface:hf-model", "transformers")])
def test_optional_sources_say_what_to_install(tmp_path, source, package):
    import importlib.util

    from synboost.detectors.components import load_segmenter

    if importlib.util.find_spec(package) is not None:
        pytest.skip(f"{package} is installed")
    (tmp_path / "hf-model").mkdir()
    with pytest.raises(ConfigError) as e:
        load_segmenter(_spec(tmp_path, source=source))
    _one_line(e, "seg.yaml", f"needs the '{package}' package", "pip install")


def test_a_bad_spec_through_the_cli_is_one_line_and_status_2(tmp_path, capsys):
    from synboost.cli import main
    from synboost.data.io import write_image
    from synboost.detectors.detector import write_pipeline_file

    spec = _spec(tmp_path / "seg", source="torchvision:deeplabv3_mobilenet_v3_large",
                 kwargs={"weights": None, "weights_backbone": None})
    pipe = write_pipeline_file(tmp_path / "pipeline.yaml", method="entropy", segmenter=str(spec))
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "a.png", _images(1)[0])
    status = main(["infer", "--pipeline", str(pipe), "--images", str(images), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2, err
    assert err[-1].startswith("error: ") and "seg.yaml" in err[-1] and "class_map" in err[-1]


def test_python_sources_and_weights_files(tmp_path):
    from synboost.detectors.components import load_segmenter

    (tmp_path / "mynet.py").write_text(
        "import torch\n"
        "def build(channels=19):\n"
        "    return torch.nn.Conv2d(3, channels, 1)\n")
    torch.manual_seed(1)
    ref = nn.Conv2d(3, 19, 1)
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "w.pth")
    model, _ = load_segmenter(_spec(tmp_path, source="python:mynet.py:build", weights="w.pth",
                                    weights_key="state_dict"))
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x))
    # a torch file holding code is refused, never unpickled
    torch.save({"state_dict": ref.state_dict(), "oops": SynboostError}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as e:
        load_segmenter(_spec(tmp_path, "bad.yaml", source="python:mynet.py:build", weights="bad.pth",
                             weights_key="state_dict"))
    _one_line(e, "bad.yaml", "bad.pth")
    # a wrong state dict: one line with the mismatched keys
    torch.save({"weight": torch.zeros(5, 3, 1, 1)}, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError) as e:
        load_segmenter(_spec(tmp_path, "wrong.yaml", source="python:mynet.py:build", weights="wrong.pth"))
    _one_line(e, "wrong.pth")


def test_the_stages_that_fine_tune_the_segmenter_refuse_a_spec_in_one_line(tmp_path):
    """PEBAL and outlier re-training fine-tune the package's own segmenter, the density fit reads its features:
    each refuses a segmenter spec with one line naming it (before reading it as a checkpoint)."""
    from synboost.config import OutlierTrainingConfig, PebalConfig
    from synboost.training.density import _check_segmenter
    from synboost.training.outlier import OutlierTask
    from synboost.training.pebal import PebalTask

    spec = tmp_path / "mine.yaml"
    spec.write_text("kind: synboost-segmenter-adapter\nsource: torchvision:deeplabv3_mobilenet_v3_large\n")
    for make in (lambda: PebalTask(PebalConfig(segmenter=str(spec))),
                 lambda: OutlierTask(OutlierTrainingConfig(segmenter=str(spec))),
                 lambda: _check_segmenter(str(spec))):
        with pytest.raises(ConfigError) as e:
            make()
        msg = str(e.value)
        assert "\n" not in msg and str(spec) in msg and "is a segmenter spec" in msg
