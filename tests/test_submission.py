"""Benchmark submission files: SegmentMeIfYouCan HDF5 and the Fishyscapes container outputs, written by the
writers themselves and by `synboost infer --format` (resumable, atomic)."""
import json

import cv2
import h5py
import numpy as np
import pytest

from synboost.errors import ConfigError, DataError
from synboost.jobs.infer import run_folder
from synboost.jobs.submission import (
    Submission,
    fishyscapes_paths,
    frame_id,
    guess_smiyc_dataset,
    parse_formats,
    read_smiyc,
    smiyc_path,
    write_fishyscapes,
    write_smiyc,
)


class FakeDetector:
    """anomaly = channel mean / 255 (an energy-like range with ``scale``), segmentation = row index % 19."""

    method = "fake"
    batch_size = 2

    def __init__(self, scale=1.0):
        self.scale, self.calls = scale, 0

    def __call__(self, images):
        self.calls += len(images)
        return [{"anomaly": self.scale * im.astype(np.float32).mean(axis=2) / 255.0,
                 "segmentation": (np.arange(im.shape[0])[:, None] % 19 * np.ones(im.shape[1], int)).astype(np.uint8)}
                for im in images]


def make_images(root, n=3, size=(24, 32)):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(root / f"frame{i:02d}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return root


def no_temporaries(root):
    return not [p for p in root.rglob("*") if p.name.startswith(".") and ".tmp" in p.name]


def test_smiyc_file_is_the_reference_layout(tmp_path):
    rng = np.random.default_rng(1)
    anomaly = rng.normal(-10, 5, (37, 53)).astype(np.float32)  # an energy-like range, not [0, 1]
    path = smiyc_path(tmp_path, "mine", "LostAndFound-test", "04_Maurener_Weg_8_000000_000030_leftImg8bit")
    assert path == tmp_path / "anomaly_p/mine/LostAndFound-test/04_Maurener_Weg_8_000000_000030.hdf5"
    write_smiyc(path, anomaly)
    with h5py.File(path, "r") as f:
        assert list(f.keys()) == ["value"]
        d = f["value"]
        assert d.dtype == np.float16 and d.shape == anomaly.shape
        assert d.compression == "gzip" and d.compression_opts == 9
        back = d[()]
    np.testing.assert_array_equal(back, anomaly.astype(np.float16))
    np.testing.assert_allclose(back.astype(np.float32), anomaly, rtol=2.0 ** -11, atol=2.0 ** -24)
    np.testing.assert_array_equal(read_smiyc(path), back)
    assert no_temporaries(tmp_path)


def test_smiyc_clips_beyond_float16_and_refuses_nan(tmp_path):
    a = np.array([[1e6, -1e6], [0.5, 70000.0]], np.float32)
    back = read_smiyc(write_smiyc(tmp_path / "x.hdf5", a))
    assert np.isfinite(back).all() and back[0, 0] == np.finfo(np.float16).max and back[0, 1] == -back[0, 0]
    with pytest.raises(DataError, match="NaN"):
        write_smiyc(tmp_path / "y.hdf5", np.full((2, 2), np.nan, np.float32))
    assert not (tmp_path / "y.hdf5").exists() and no_temporaries(tmp_path)
    with pytest.raises(DataError, match="not a SegmentMeIfYouCan score file"):
        (tmp_path / "z.hdf5").write_bytes(b"nope")
        read_smiyc(tmp_path / "z.hdf5")


def test_fishyscapes_files(tmp_path):
    anomaly = np.random.default_rng(2).random((16, 32)).astype(np.float64)
    seg = np.arange(16 * 32).reshape(16, 32) % 19
    a, s = write_fishyscapes(tmp_path, "12_rgb", anomaly, seg)
    assert (a.name, s.name) == ("12_anomaly.npy", "12_segmentation.npy")
    assert fishyscapes_paths(tmp_path, "sub/12_rgb") == (a, s)
    ma, ms = np.load(a), np.load(s)
    assert ma.dtype == np.float32 and ma.shape == (16, 32) and np.allclose(ma, anomaly)
    assert ms.dtype == np.uint8 and ms.shape == (16, 32) and (ms == seg).all()
    with pytest.raises(DataError, match=r"\[0, 20\)"):
        write_fishyscapes(tmp_path, "13", anomaly, seg + 5)


def test_names_and_formats():
    assert frame_id("scene/02_Hanns_000001_000120_leftImg8bit") == "02_Hanns_000001_000120"
    assert frame_id("airplane0000") == "airplane0000" and frame_id("7_rgb") == "7"
    assert parse_formats("SMIYC, fishyscapes,smiyc") == ("smiyc", "fishyscapes") and parse_formats(None) == ()
    with pytest.raises(ConfigError, match="unknown submission format 'png'"):
        parse_formats("png")
    assert guess_smiyc_dataset("/d/dataset_AnomalyTrack/images") == "AnomalyTrack-all"
    assert guess_smiyc_dataset("/d/dataset_ObstacleTrack/images") == "ObstacleTrack-all"
    assert guess_smiyc_dataset("/d/laf/leftImg8bit/test") == "LostAndFound-test"
    assert guess_smiyc_dataset("/d/my_frames") == "my_frames"
    sub = Submission("/out", "fishyscapes,smiyc", "m", "AnomalyTrack-all")
    assert list(sub.paths("a/b")) == ["fishyscapes_segmentation", "fishyscapes", "smiyc"]


def test_infer_formats_beside_maps_and_resume(tmp_path):
    src = make_images(tmp_path / "dataset_AnomalyTrack" / "images")
    out = tmp_path / "out"
    det = FakeDetector(scale=-20.0)
    rep = run_folder(det, src, out, save=("npy",), formats="smiyc,fishyscapes", progress=False)
    assert rep["counts"]["done"] == 3 and rep["dataset_name"] == "AnomalyTrack-all" and rep["method_name"] == "fake"
    for i in range(3):
        name = f"frame{i:02d}"
        m = np.load(out / "maps" / f"{name}.npy")
        h = read_smiyc(out / "anomaly_p/fake/AnomalyTrack-all" / f"{name}.hdf5")
        np.testing.assert_array_equal(h, m.astype(np.float16))
        np.testing.assert_array_equal(np.load(out / f"{name}_anomaly.npy"), m)
        assert np.load(out / f"{name}_segmentation.npy").dtype == np.uint8
    assert no_temporaries(out)
    # resumable: nothing to do; a lost submission file is recomputed for its image only
    det.calls = 0
    again = run_folder(det, src, out, save=("npy",), formats="smiyc,fishyscapes", progress=False)
    assert again["counts"]["done_earlier"] == 3 and det.calls == 0
    (out / "anomaly_p/fake/AnomalyTrack-all/frame01.hdf5").unlink()
    again = run_folder(det, src, out, save=("npy",), formats="smiyc,fishyscapes", progress=False)
    assert again["done"] == ["frame01"] and det.calls == 1
    assert (out / "anomaly_p/fake/AnomalyTrack-all/frame01.hdf5").exists()


def test_infer_submission_only_elsewhere_and_names(tmp_path):
    src = make_images(tmp_path / "imgs", n=2)
    rep = run_folder(FakeDetector(), src, tmp_path / "out", save="none", formats=["smiyc"],
                     submission_dir=tmp_path / "sub", method_name="mine", dataset_name="ObstacleTrack-all",
                     progress=False)
    assert rep["counts"]["done"] == 2
    files = sorted(p.relative_to(tmp_path / "sub").as_posix() for p in (tmp_path / "sub").rglob("*.hdf5"))
    assert files == ["anomaly_p/mine/ObstacleTrack-all/frame00.hdf5", "anomaly_p/mine/ObstacleTrack-all/frame01.hdf5"]
    assert not (tmp_path / "out" / "maps").exists()
    with pytest.raises(ConfigError):
        run_folder(FakeDetector(), src, tmp_path / "o2", save="none", progress=False)


def test_infer_refuses_two_files_with_one_benchmark_id(tmp_path):
    make_images(tmp_path / "in" / "a", n=1)
    make_images(tmp_path / "in" / "b", n=1)
    rep = run_folder(FakeDetector(), tmp_path / "in", tmp_path / "out", recursive=True, formats="smiyc",
                     progress=False)
    assert rep["counts"]["done"] == 1 and "same benchmark id 'frame00'" in rep["skipped"][0]["reason"]


def test_cli_infer_format(tmp_path, capsys):
    from synboost.cli import main
    from synboost.config import SegModelConfig
    from synboost.detectors.components import save_component
    from synboost.detectors.detector import write_pipeline_file
    from synboost.models import create_model

    m = SegModelConfig(backbone="tiny", pretrained=False, aspp_dim=8, decoder_dim=8, width=4)
    net = create_model("deeplabv3plus", backbone="tiny", aspp_dim=8, decoder_dim=8, width=4)
    ckpt = save_component(tmp_path / "seg.safetensors", net, "segmenter", m)
    pipe = write_pipeline_file(tmp_path / "p.yaml", segmenter=str(ckpt), method="energy", device="cpu")
    src = make_images(tmp_path / "dataset_ObstacleTrack" / "images", n=2, size=(32, 64))
    out = tmp_path / "out"
    assert main(["infer", "--pipeline", str(pipe), "--images", str(src), "--out", str(out), "--save", "none",
                 "--format", "smiyc,fishyscapes"]) == 0
    assert "anomaly_p/energy/ObstacleTrack-all/" in capsys.readouterr().out
    assert read_smiyc(out / "anomaly_p/energy/ObstacleTrack-all/frame00.hdf5").shape == (32, 64)
    seg = np.load(out / "frame01_segmentation.npy")
    assert seg.dtype == np.uint8 and seg.shape == (32, 64) and seg.max() < 19
    assert json.loads((out / "report.json").read_text())["formats"] == ["smiyc", "fishyscapes"]
