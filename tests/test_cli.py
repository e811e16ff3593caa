"""The `synboost` verbs, run in-process as a user would type them."""
import json

import numpy as np
import pytest

from synboost.cli import main


def test_data_world_writes_a_world_the_readers_load(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["data", "world", "--out", str(out), "--n", "10", "--size", "32x64", "--seed", "1",
                 "--set", "workers=1"]) == 0
    meta = json.loads((out / "synthetic_world.json").read_text())
    assert meta["splits"] == {"train": 7, "val": 1, "test": 2} and meta["height"] == 32
    from synboost.data.kinds import open_dataset

    assert open_dataset(f"synthetic:{out}")[0]["image"].shape == (32, 64, 3)
    # deterministic: the same command again gives byte-identical files
    first = (out / "anomaly/test/original").iterdir().__next__()
    before = first.read_bytes()
    assert main(["data", "world", "--out", str(out), "--n", "10", "--size", "32x64", "--seed", "1",
                 "--set", "workers=1"]) == 0
    assert first.read_bytes() == before


@pytest.mark.parametrize("argv,needle", [
    (["data", "world", "--set", "nn=3"], "unknown config key 'nn'"),
    (["data", "world", "--set", "n=[1,"], "override 'n=[1,': the value is not valid YAML"),
    (["data", "world", "--set", "n=!!python/object:os.system"], "YAML tags (!!python/object:os.system)"),
    (["weights", "list", "--manifest", "/nope/manifest.yaml"], "/nope/manifest.yaml: weights manifest not found"),
    (["weights", "import"], "name the weights to import"),
    (["weights", "import", "synboost-segmenter", "pebal", "--src", "x.pth"], "give one weights name"),
    (["weights", "import", "pebal", "--no-encoder"], "apply to the CC-FPSE generator only"),
    (["train", "segmentation", "--config", "/nonexistent.yaml"], "/nonexistent.yaml: config file not found"),
    (["eval", "--pipeline", "/nonexistent.yaml", "--data", "x"], "/nonexistent.yaml: pipeline file not found"),
    (["eval", "--segmenter", "/nope.safetensors", "--data", "synthetic:/x"], "/nope.safetensors"),
    (["weights", "import", "synboost-segmenter"], "cityscapes_best.pth there, or run `synboost weights download"),
    (["weights", "verify", "no-such-weights"], "unknown weights 'no-such-weights'"),
    (["train", "pebal", "--config", "configs/pebal/synthetic.yaml", "--set", "segmenter=/nope.safetensors"],
     "/nope.safetensors"),
])
def test_user_errors_are_one_line_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SYNBOOST_WEIGHTS", str(tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_infer_and_eval_with_a_segmenter_checkpoint(tiny_world, tmp_path, capsys):
    from synboost.config import SegModelConfig
    from synboost.detectors.components import save_component
    from synboost.detectors.detector import write_pipeline_file
    from synboost.models import create_model

    m = SegModelConfig(backbone="tiny", pretrained=False, aspp_dim=16, decoder_dim=16, width=8)
    net = create_model("deeplabv3plus", backbone="tiny", aspp_dim=16, decoder_dim=16, width=8)
    ckpt = save_component(tmp_path / "seg.safetensors", net, "segmenter", m)
    pipe = write_pipeline_file(tmp_path / "p.yaml", segmenter=str(ckpt), method="energy")
    images = tiny_world / "anomaly/test/original"
    out = tmp_path / "inf"
    assert main(["infer", "--pipeline", str(pipe), "--images", str(images), "--out", str(out)]) == 0
    maps = sorted((out / "maps").glob("*.npy"))
    assert len(maps) == len(list(images.iterdir())) and np.load(maps[0]).shape == (64, 128)
    assert json.loads((out / "report.json").read_text())["method"] == "energy"
    assert main(["eval", "--pipeline", str(pipe), "--data", f"synthetic:{tiny_world}", "--method", "all",
                 "--out", str(tmp_path / "ev")]) == 0
    rep = json.loads((tmp_path / "ev" / "synthetic" / "metrics.json").read_text())
    assert [r["method"] for r in rep["results"]] == ["msp", "maxlogit", "entropy", "energy"]  # no SML stats saved
    assert "| energy |" in capsys.readouterr().out


def test_resynthesize_and_mc_dropout(tiny_world, tmp_path):
    import torch

    from synboost.config import SynthesisModelConfig
    from synboost.detectors.components import build_generator, save_component
    from synboost.detectors.posthoc import PosthocDetector

    m = SynthesisModelConfig(ngf=8, num_upsampling=4, z_dim=16, nef=8, encoder_size=128, spade_hidden=16)
    gen = build_generator(m, [32, 64])
    ckpt = save_component(tmp_path / "g.safetensors", gen, "generator", m, size=[32, 64])
    labels = tiny_world / "anomaly/test/semantic"
    out = tmp_path / "syn"
    assert main(["resynthesize", "--generator", str(ckpt), "--labels", str(labels), "--images",
                 str(tiny_world / "anomaly/test/original"), "--out", str(out)]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == len(list(labels.glob("*.png")))
    from synboost.data.io import read_image

    assert read_image(pngs[0]).shape == (64, 128, 3)  # back at the label's size
    # MC dropout: entropy of the mean of stochastic passes; differs from the deterministic entropy
    from synboost.models import create_model

    torch.manual_seed(0)
    seg = create_model("deeplabv3plus", backbone="tiny", aspp_dim=16, decoder_dim=16, width=8, head_dropout=0.5).eval()
    with torch.no_grad():
        seg.classifier.weight *= 200  # confident logits, so that dropout changes the softmax visibly
    img = read_image(tiny_world / "anomaly/test/original" / pngs[0].name)
    det = PosthocDetector(seg, "mcdropout", mc_samples=4)
    a, b = det([img])[0]["anomaly"], PosthocDetector(seg, "entropy")([img])[0]["anomaly"]
    assert a.shape == b.shape == (64, 128) and np.abs(a - b * np.log(19)).mean() > 1e-3
    assert not any(mod.training for mod in seg.modules())  # dropout switched back off afterwards


def test_bench_pipeline_quick_writes_every_variant(tmp_path):
    """`synboost bench pipeline --quick` runs the official-style loop and the detector (NCHW and channels_last) on
    the same networks and writes one JSON row per variant with its per-stage times (no speed is asserted)."""
    out = tmp_path / "p.json"
    assert main(["bench", "pipeline", "--quick", "--device", "cpu", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    variants = [r["variant"] for r in d["rows"]]
    assert variants[0].startswith("official-style") and "batched detector (fp32, channels_last)" in variants
    assert d["segmenter"] == "tiny" and d["size"] == [128, 256]
    for r in d["rows"][1:]:
        assert r["speedup_vs_loop"] > 0 and {"ms segmentation", "ms synthesis", "ms dissimilarity"} <= set(r)
