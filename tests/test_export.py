"""`synboost export`: each SynBoost network and a segmenter alone to ONNX (and OpenVINO IR), run outside PyTorch,
agreeing with PyTorch; the sidecars' check figures; the pipeline on the onnxruntime / OpenVINO backends; the
refusals, each one line."""
import importlib.util
import json

import numpy as np
import pytest
import torch

from conftest import synboost_pipe
from synboost.cli import main
from synboost.jobs.export import INPUTS, OUTPUTS, Graph, _capture, spearman

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'synboost[export]')")
pytest.importorskip("onnxscript", reason="onnxscript not installed (pip install 'synboost[export]')")
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed (pip install 'synboost[export]')")
NETWORKS = ("segmenter", "generator", "vgg", "dissimilarity")


def scenes(n=3, size=(64, 128)):
    from synboost.data.synthetic import generate_scene

    return [generate_scene(200 + i, *size, n_ood=1).image for i in range(n)]


def write_pipe(stages, path, **kw):
    from synboost.detectors.detector import write_pipeline_file

    fields = dict(method="synboost", segmenter=str(stages / "seg.safetensors"),
                  generator=str(stages / "gen.safetensors"), dissimilarity=str(stages / "dis.safetensors"),
                  perceptual_vgg_pretrained=False, device="cpu")
    return write_pipeline_file(path, **{**fields, **kw})


@pytest.fixture(scope="module")
def exported(stages, tmp_path_factory):
    """The ``stages`` pipeline exported at fixed shapes (64x128, batch 2), ONNX and (if installed) OpenVINO."""
    d = tmp_path_factory.mktemp("export")
    pipe = write_pipe(stages, d / "p.yaml")
    argv = ["export", str(pipe), "--out", str(d / "out"), "--size", "64", "128", "--batch", "2"]
    assert main(argv + (["--format", "onnx", "--format", "openvino"] if HAS_OPENVINO else [])) == 0
    return pipe, d / "out"


def test_every_network_runs_in_onnxruntime_outside_pytorch(exported, stages, tmp_path):
    """Each ONNX file, opened by onnxruntime alone and fed numpy arrays (the real inputs of each network while the
    torch pipeline scores scenes), gives the torch network's outputs."""
    pipe, out = exported
    det = synboost_pipe(stages, tmp_path)
    inputs = _capture(det, scenes(2))
    nets = {"segmenter": det.model, "generator": det.generator, "vgg": det.vgg19, "dissimilarity": det.dissim}
    for name, net in nets.items():
        sess = ort.InferenceSession(str(out / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == list(INPUTS[name][:len(inputs[name])])
        assert [o.name for o in sess.get_outputs()] == list(OUTPUTS[name])
        fixed = sess.get_inputs()[0].shape[0]
        feeds = {i.name: t[:fixed].numpy() for i, t in zip(sess.get_inputs(), inputs[name])}
        got = sess.run(None, feeds)
        with torch.no_grad():
            ref = Graph(net, name)(*(t[:fixed] for t in inputs[name]))
        ref = list(ref) if isinstance(ref, (list, tuple)) else [ref]
        for r, g in zip(ref, got):
            r = r.numpy()
            assert g.shape == r.shape, name
            assert np.abs(g - r).max() <= 1e-4 * max(1.0, np.abs(r).max()), name
            assert spearman(torch.from_numpy(r), torch.from_numpy(g)) > 0.9999, name
            if name in ("segmenter", "dissimilarity"):
                assert (r.argmax(1) == g.argmax(1)).mean() > 0.999, name


def test_sidecars_hold_the_checks(exported, stages):
    from synboost.hub.registry import sha256_of

    _, out = exported
    formats = ("onnx", "xml") if HAS_OPENVINO else ("onnx",)
    for name in NETWORKS:
        for ext in formats:
            side = json.loads((out / f"{name}.{ext}.json").read_text())
            assert side["network"] == name and side["dynamic"] is False
            assert "synthetic-world scenes" in side["check"]["inputs"]
            for fig in side["check"]["outputs"].values():
                assert fig["spearman"] > 0.9999 and fig["max_abs_diff"] < 1e-3
                assert fig["argmax_equal"] is None or fig["argmax_equal"] > 0.999
    gen = json.loads((out / "generator.onnx.json").read_text())
    assert gen["spectral_norm_folded"] > 0  # the generator's spectral norm is folded into its weights
    assert gen["source"]["sha256"] == sha256_of(stages / "gen.safetensors")
    assert json.loads((out / "vgg.onnx.json").read_text())["source"] == {"spec": "random"}


def test_onnxruntime_backend_gives_the_torch_maps(exported):
    from synboost.detectors.detector import load_pipeline

    pipe, out = exported
    images = scenes(3)  # 3 images at the exported batch 2: the runtime chunks and pads
    ref = load_pipeline(pipe, precision="fp32").score_all(images)  # the graphs are fp32 (the default may be bf16)
    det = load_pipeline(out / "pipeline.yaml")
    assert det.backend == "onnxruntime"
    got = det.score_all(images)
    for key in ("synboost", "dissimilarity", "entropy", "energy"):
        np.testing.assert_allclose(np.stack([g[key] for g in got]), np.stack([r[key] for r in ref]), atol=1e-4,
                                   err_msg=key)
    assert all((g["segmentation"] == r["segmentation"]).mean() > 0.999 for g, r in zip(got, ref))


@needs_openvino
def test_openvino_backend_gives_the_torch_maps(exported):
    from synboost import runtime
    from synboost.detectors.detector import load_pipeline

    pipe, out = exported
    images = scenes(2)
    ref = load_pipeline(pipe, precision="fp32").score_all(images)
    got = load_pipeline(out / "pipeline.yaml", backend="openvino", precision="fp32").score_all(images)
    for key in ("synboost", "entropy"):
        np.testing.assert_allclose(np.stack([g[key] for g in got]), np.stack([r[key] for r in ref]), atol=1e-4,
                                   err_msg=key)
    if runtime.cpu_bf16_supported():  # OpenVINO bf16: a ranking tolerance, as torch's bf16
        det = load_pipeline(out / "pipeline.yaml", backend="openvino", precision="bf16")
        assert det.precision["dissimilarity"] == "bf16"
        bf = det.score_all(images)
        a, b = (np.stack([r["synboost"] for r in res]) for res in (ref, bf))
        assert spearman(torch.from_numpy(a), torch.from_numpy(b)) > 0.85


def test_dynamic_segmenter_checkpoint_runs_at_any_size(stages, tmp_path):
    """A segmenter checkpoint alone, exported with dynamic shapes, runs in onnxruntime at other batch sizes and
    image sizes than it was exported at, and agrees with torch there."""
    from synboost.detectors.components import load_segmenter

    assert main(["export", str(stages / "seg.safetensors"), "--out", str(tmp_path), "--dynamic",
                 "--format", "onnx"]) == 0
    seg, _ = load_segmenter(stages / "seg.safetensors")
    sess = ort.InferenceSession(str(tmp_path / "segmenter.onnx"), providers=["CPUExecutionProvider"])
    for b, h, w in ((1, 64, 128), (3, 96, 160)):
        x = torch.randn(b, 3, h, w)
        got = sess.run(None, {"image": x.numpy()})[0]
        with torch.no_grad():
            ref = seg(x, all_outputs=True).numpy()
        assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4
        assert (got.argmax(1) == ref.argmax(1)).mean() > 0.999
    assert json.loads((tmp_path / "segmenter.onnx.json").read_text())["dynamic"] is True


def one_error_line(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1
    return err[0]


def test_export_refuses_what_it_cannot_export(stages, tmp_path, capsys):
    out = str(tmp_path / "out")
    mc = write_pipe(stages, tmp_path / "mc.yaml", method="mcdropout", dissimilarity="")
    assert "mcdropout" in one_error_line(capsys, ["export", str(mc), "--out", out, "--size", "64", "128"])
    dens = write_pipe(stages, tmp_path / "d.yaml", density=str(stages / "seg.safetensors"))
    assert "density" in one_error_line(capsys, ["export", str(dens), "--out", out, "--size", "64", "128"])
    plain = write_pipe(stages, tmp_path / "p.yaml")
    assert "--size" in one_error_line(capsys, ["export", str(plain), "--out", out])  # fixed shapes need a size
    assert not (tmp_path / "out" / "segmenter.onnx").exists()
    from synboost.detectors.detector import load_pipeline
    from synboost.errors import ConfigError

    with pytest.raises(ConfigError, match="defaults.exported.*synboost export"):  # a backend without its files
        load_pipeline(plain, ["backend=onnxruntime"])
    with pytest.raises(ConfigError, match="defaults.compile"):
        load_pipeline(plain, ["backend=onnxruntime", "compile=true"])


def test_missing_openvino_names_the_extra(stages, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    pipe = write_pipe(stages, tmp_path / "p.yaml")
    line = one_error_line(capsys, ["export", str(pipe), "--out", str(tmp_path / "o"), "--size", "64", "128",
                                   "--format", "openvino"])
    assert "pip install 'synboost[export]'" in line and "openvino" in line


def test_runtime_refuses_stale_exports_and_other_sizes(exported, stages, tmp_path):
    """A file exported from another checkpoint than the pipeline's is refused (export again); a fixed-shape
    segmenter given another image size says how to get one that takes it."""
    from synboost.config import SegModelConfig
    from synboost.detectors.components import save_component
    from synboost.detectors.detector import load_pipeline
    from synboost.errors import CheckpointError, ConfigError
    from synboost.models import create_model

    _, out = exported
    torch.manual_seed(5)
    other = tmp_path / "other.safetensors"
    save_component(other, create_model("deeplabv3plus", backbone="tiny", aspp_dim=16, decoder_dim=16, width=8),
                   "segmenter", SegModelConfig(backbone="tiny", pretrained=False, aspp_dim=16, decoder_dim=16,
                                               width=8))
    with pytest.raises(CheckpointError, match="export the pipeline again"):
        load_pipeline(out / "pipeline.yaml", [f"components.segmenter={other}"])
    det = load_pipeline(out / "pipeline.yaml")
    with pytest.raises(ConfigError, match="--dynamic"):
        det(scenes(1, (96, 160)))
