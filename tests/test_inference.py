import json

import cv2
import numpy as np
import pytest

from synboost.data.io import read_image
from synboost.errors import DataError
from synboost.jobs.infer import merge_reports, run_folder

ALL = ("npy", "heatmap", "overlay", "segmentation")


class FakeDetector:
    """Deterministic stand-in: anomaly = channel mean / 255, segmentation = zeros; records its batches."""

    method = "fake"

    def __init__(self, batch_size=2):
        self.batch_size = batch_size
        self.calls: list[list[tuple[int, ...]]] = []

    def __call__(self, images):
        self.calls.append([im.shape for im in images])
        return [{"anomaly": im.astype(np.float32).mean(axis=2) / 255.0,
                 "segmentation": np.zeros(im.shape[:2], np.uint8)} for im in images]


def expected(path):
    return read_image(path).astype(np.float32).mean(axis=2) / 255.0


def make_folder(root, sizes=((24, 32),) * 5, bad=False):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(root / f"img{i:02d}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if bad:
        good = (root / "img00.png").read_bytes()
        (root / "corrupt.png").write_bytes(good[: len(good) // 3])
        (root / "empty.png").write_bytes(b"")
        (root / "text.png").write_text("this is not an image\n")
    return root


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_outputs_for_every_image_and_bad_files_skipped(tmp_path):
    src = make_folder(tmp_path / "in", bad=True)
    det = FakeDetector()
    rep = run_folder(det, src, tmp_path / "out", save=ALL, progress=False)
    names = [f"img{i:02d}" for i in range(5)]
    assert rep["done"] == names and rep["counts"]["done"] == 5 and rep["finished"] and rep["method"] == "fake"
    for n in names:
        m = np.load(tmp_path / "out" / "maps" / f"{n}.npy")
        assert m.dtype == np.float32 and m.shape == (24, 32)
        np.testing.assert_allclose(m, expected(src / f"{n}.png"), atol=1e-6)
        assert read_image(tmp_path / "out" / "heatmaps" / f"{n}.png").shape == (24, 32, 3)
        assert read_image(tmp_path / "out" / "overlays" / f"{n}.png").shape == (24, 32, 3)
        seg = cv2.imread(str(tmp_path / "out" / "segmentation" / f"{n}.png"), cv2.IMREAD_UNCHANGED)
        assert seg.dtype == np.uint8 and seg.shape == (24, 32) and not seg.any()
    reasons = {s["name"]: s["reason"] for s in rep["skipped"]}
    assert sorted(reasons) == ["corrupt", "empty", "text"]
    for name, reason in reasons.items():
        assert f"{name}.png" in reason and "\n" not in reason
    assert "empty" in reasons["empty"]
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["done"] == names and on_disk["counts"]["skipped"] == 3
    assert not any("/." in f or f.startswith(".") or ".tmp" in f for f in files_under(tmp_path / "out"))


def test_float16_npz_and_save_subset(tmp_path):
    src = make_folder(tmp_path / "in", sizes=((20, 30),) * 2)
    run_folder(FakeDetector(), src, tmp_path / "out", save=("npy",), float16=True, progress=False)
    assert files_under(tmp_path / "out") == ["maps/img00.npz", "maps/img01.npz", "report.json"]
    a = np.load(tmp_path / "out" / "maps" / "img00.npz")["anomaly"]
    assert a.dtype == np.float16 and a.shape == (20, 30)
    np.testing.assert_allclose(a.astype(np.float32), expected(src / "img00.png"), atol=1e-3)


def test_gray_rgba_and_16bit_images(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "gray.png"), rng.integers(0, 256, (16, 20), dtype=np.uint8))
    cv2.imwrite(str(src / "rgba.png"), rng.integers(0, 256, (16, 20, 4), dtype=np.uint8))
    cv2.imwrite(str(src / "deep.png"), rng.integers(0, 65536, (16, 20, 3)).astype(np.uint16))
    rep = run_folder(FakeDetector(batch_size=4), src, tmp_path / "out", progress=False)
    assert rep["done"] == ["deep", "gray", "rgba"] and not rep["skipped"]
    for n in rep["done"]:
        np.testing.assert_allclose(np.load(tmp_path / "out" / "maps" / f"{n}.npy"), expected(src / f"{n}.png"),
                                   atol=1e-6)


def test_batches_hold_one_size_up_to_batch_size(tmp_path):
    sizes = [(16, 24), (20, 24)] * 4 + [(16, 24)] * 3 + [(12, 12)]
    src = make_folder(tmp_path / "in", sizes=sizes)
    det = FakeDetector(batch_size=3)
    rep = run_folder(det, src, tmp_path / "out", progress=False)
    assert rep["counts"]["done"] == len(sizes)
    assert sum(len(c) for c in det.calls) == len(sizes)
    for call in det.calls:
        assert 1 <= len(call) <= 3 and len(set(call)) == 1
    assert max(len(c) for c in det.calls) == 3  # same-size images are really grouped


def test_resume_skips_finished_and_redoes_a_deleted_map(tmp_path):
    src = make_folder(tmp_path / "in", bad=True)
    out = tmp_path / "out"
    run_folder(FakeDetector(), src, out, progress=False)
    before = (out / "maps" / "img01.npy").read_bytes()
    det = FakeDetector()
    rep = run_folder(det, src, out, progress=False)
    assert det.calls == [] and rep["done"] == [] and rep["done_earlier"] == [f"img{i:02d}" for i in range(5)]
    assert rep["counts"]["skipped"] == 3  # bad files are tried again and reported again
    (out / "maps" / "img03.npy").unlink()
    det = FakeDetector()
    rep = run_folder(det, src, out, progress=False)
    assert rep["done"] == ["img03"] and len(rep["done_earlier"]) == 4 and sum(map(len, det.calls)) == 1
    assert (out / "maps" / "img03.npy").exists() and (out / "maps" / "img01.npy").read_bytes() == before
    det = FakeDetector()
    assert run_folder(det, src, out, resume=False, progress=False)["counts"]["done"] == 5 and det.calls


def test_sharded_runs_match_one_run(tmp_path):
    sizes = [(16, 24)] * 4 + [(20, 16)] * 3
    src = make_folder(tmp_path / "in", sizes=sizes, bad=True)
    single = run_folder(FakeDetector(), src, tmp_path / "single", save=ALL, progress=False)
    reps = [run_folder(FakeDetector(), src, tmp_path / "sharded", save=ALL, shard=(r, 2), progress=False)
            for r in (0, 1)]
    assert set(reps[0]["done"]).isdisjoint(reps[1]["done"])
    assert (tmp_path / "sharded" / "report.rank0.json").exists()
    assert (tmp_path / "sharded" / "report.rank1.json").exists()
    merged = merge_reports(tmp_path / "sharded")
    assert merged["done"] == single["done"] and merged["counts"]["done"] == len(sizes)
    assert [s["file"] for s in merged["skipped"]] == [s["file"] for s in single["skipped"]]
    assert merged["counts"]["skipped"] == 3 and merged["finished"] and merged["missing_ranks"] == []
    assert json.loads((tmp_path / "sharded" / "report.json").read_text())["done"] == single["done"]
    ours = [f for f in files_under(tmp_path / "sharded") if not f.startswith("report")]
    assert ours == [f for f in files_under(tmp_path / "single") if not f.startswith("report")]
    for f in ours:
        if f.endswith(".npy"):
            assert (tmp_path / "sharded" / f).read_bytes() == (tmp_path / "single" / f).read_bytes()


def test_shard_from_torchrun_environment(tmp_path, monkeypatch):
    src = make_folder(tmp_path / "in")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    rep = run_folder(FakeDetector(), src, tmp_path / "out", progress=False)
    assert rep["shard"] == [1, 2] and rep["done"] == ["img01", "img03"]
    assert (tmp_path / "out" / "report.rank1.json").exists() and not (tmp_path / "out" / "report.json").exists()


def test_recursive_names_keep_subfolders(tmp_path):
    src = make_folder(tmp_path / "in", sizes=((8, 8),))
    make_folder(src / "sub", sizes=((8, 8),) * 2)
    rep = run_folder(FakeDetector(), src, src / "out", recursive=True, progress=False)
    assert rep["done"] == ["img00", "sub/img00", "sub/img01"]
    assert (src / "out" / "maps" / "sub" / "img01.npy").exists()
    again = run_folder(FakeDetector(), src, src / "out", recursive=True, progress=False)  # outputs are not inputs
    assert again["counts"]["images"] == 3 and len(again["done_earlier"]) == 3


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        run_folder(FakeDetector(), tmp_path / "nowhere", tmp_path / "out", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty.*no images"):
        run_folder(FakeDetector(), tmp_path / "empty", tmp_path / "out", progress=False)
    src = make_folder(tmp_path / "in", sizes=((8, 8),))
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="file"):
        run_folder(FakeDetector(), src, tmp_path / "file", progress=False)
    with pytest.raises(DataError, match="no report"):
        merge_reports(tmp_path / "in")


def test_interrupted_run_leaves_a_report_and_resumes(tmp_path):
    class Crashing(FakeDetector):
        def __call__(self, images):
            if len(self.calls) == 2:
                raise KeyboardInterrupt
            return super().__call__(images)

    src = make_folder(tmp_path / "in", sizes=((8, 8),) * 9)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_folder(Crashing(batch_size=2), src, out, report_every=1, progress=False)
    rep = json.loads((out / "report.json").read_text())
    assert not rep["finished"] and rep["done"] == ["img00", "img01", "img02", "img03"]
    assert sorted(p.stem for p in (out / "maps").iterdir()) == rep["done"]
    assert not any(".tmp" in f for f in files_under(out))
    det = FakeDetector()
    rep = run_folder(det, src, out, progress=False)
    assert rep["finished"] and len(rep["done_earlier"]) == 4 and len(rep["done"]) == 5


def test_report_is_updated_during_the_run(tmp_path):
    out = tmp_path / "out"

    class Peeking(FakeDetector):
        seen: list = []

        def __call__(self, images):
            if (out / "report.json").exists():
                rep = json.loads((out / "report.json").read_text())
                self.seen.append((rep["finished"], rep["counts"]["done"]))
            return super().__call__(images)

    det = Peeking(batch_size=1)
    run_folder(det, make_folder(tmp_path / "in", sizes=((8, 8),) * 8), out, report_every=2, progress=False)
    assert det.seen and all(not fin for fin, _ in det.seen) and det.seen[-1][1] >= 2
