"""Videos through a detector: frames of the synthetic world written as a video here, the overlay video at the input
frame rate, per-frame maps and objects, a run killed mid-video resuming at its last segment, truncated and corrupt
files reported in one line with the frames done, and the command line."""
from __future__ import annotations

import json
from fractions import Fraction

import av
import numpy as np
import pytest

from synboost import viz
from synboost.cli import main
from synboost.data.synthetic import generate_scene
from synboost.jobs.objects import ObjectSettings, find_objects
from synboost.jobs.video import run_video

N, FPS = 40, Fraction(25, 2)


def write_video(path, frames, fps=FPS):
    """An H.264 MP4 with its index first (faststart), so that a truncated copy still opens."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=fps, options={"crf": "12", "bf": "0"})
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p" if not (s.height % 2 or s.width % 2) else "yuv444p"  # 4:2:0 needs even sizes
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def decode(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in c.decode(s)], s.average_rate


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    frames = [generate_scene(i, 48, 96, n_ood=1).image for i in range(N)]
    return write_video(d / "drive.mp4", frames)


class Mean:
    """anomaly = channel mean / 255; counts the frames it sees; ``stop_after`` calls: Ctrl-C."""

    method = "fake"

    def __init__(self, batch_size=4, stop_after=None):
        self.batch_size, self.stop_after, self.calls, self.frames = batch_size, stop_after, 0, 0

    def __call__(self, images):
        self.calls += 1
        if self.stop_after is not None and self.calls > self.stop_after:
            raise KeyboardInterrupt
        self.frames += len(images)
        return [{"anomaly": im.astype(np.float32).mean(2) / 255.0} for im in images]


def gray_diff(a, b):
    """Mean absolute difference of the luma (4:2:0 video keeps it at full resolution; colour is subsampled)."""
    import cv2

    g = [cv2.cvtColor(np.ascontiguousarray(x, np.uint8), cv2.COLOR_RGB2GRAY).astype(int) for x in (a, b)]
    return np.abs(g[0] - g[1]).mean()


def mean_map(frame):
    return frame.astype(np.float32).mean(2) / 255.0


OBJ = ObjectSettings(0.6, min_area=8)


def test_overlay_video_maps_and_objects(clip, tmp_path):
    det = Mean()
    rep = run_video(det, clip, tmp_path / "out", save_maps=True, objects=OBJ, segment_frames=16, progress=False)
    assert rep["done"] == ["drive"] and rep["finished"] and rep["frames"] == N and det.frames == N
    v = tmp_path / "out" / "drive"
    frames, _ = decode(clip)
    overlay, rate = decode(v / "overlay.mp4")
    assert len(overlay) == N and rate == FPS  # every frame, at the input rate
    objs = json.loads((v / "objects.json").read_text())
    assert objs["threshold"] == 0.6 and [f["frame"] for f in objs["frames"]] == list(range(N))
    assert objs["frames"][3]["time"] == pytest.approx(3 / FPS)
    for i in (0, 17, N - 1):  # the maps are the detector's, of the decoded frames; objects are those of the maps
        m = np.load(v / "maps" / f"{i:06d}.npz")["anomaly"]
        assert m.dtype == np.float16 and m.shape == (48, 96)
        np.testing.assert_allclose(m, mean_map(frames[i]), atol=1e-3)
        assert objs["frames"][i]["objects"] == find_objects(mean_map(frames[i]), 0.6, 8)
        want = viz.draw_objects(viz.overlay(frames[i], mean_map(frames[i])), objs["frames"][i]["objects"])
        other = viz.overlay(frames[i - 1], mean_map(frames[i - 1]))
        assert gray_diff(overlay[i], want) < 6 < 30 < gray_diff(overlay[i], other)  # lossy, but this frame's picture
    assert not (v / "segments").exists() and json.loads((v / "progress.json").read_text())["finished"]
    again = run_video(Mean(), clip, tmp_path / "out", save_maps=True, objects=OBJ, progress=False)
    assert again["done_earlier"] == ["drive"] and again["frames"] == 0


def test_killed_run_resumes_at_the_last_segment(clip, tmp_path):
    whole = tmp_path / "whole"
    run_video(Mean(), clip, whole, save_maps=True, objects=OBJ, segment_frames=8, progress=False)
    with pytest.raises(KeyboardInterrupt):
        run_video(Mean(stop_after=5), clip, tmp_path / "cut", save_maps=True, objects=OBJ, segment_frames=8,
                  progress=False)
    segments = sorted((tmp_path / "cut" / "drive" / "segments").glob("seg_*.mp4"))
    done = sum(int(s.stem.split("_")[2]) for s in segments)
    assert 0 < done < 20 and not list((tmp_path / "cut" / "drive" / "segments").glob(".*"))
    det = Mean()
    rep = run_video(det, clip, tmp_path / "cut", save_maps=True, objects=OBJ, segment_frames=8, progress=False)
    assert det.frames == N - done and rep["frames"] == N - done  # only the frames not in a finished segment
    a, b = (json.loads((d / "drive" / "objects.json").read_text()) for d in (whole, tmp_path / "cut"))
    assert a["frames"] == b["frames"]
    for i in range(N):
        np.testing.assert_array_equal(np.load(whole / "drive" / "maps" / f"{i:06d}.npz")["anomaly"],
                                      np.load(tmp_path / "cut" / "drive" / "maps" / f"{i:06d}.npz")["anomaly"])
    x, _ = decode(whole / "drive" / "overlay.mp4")
    y, _ = decode(tmp_path / "cut" / "drive" / "overlay.mp4")
    assert len(y) == N and max(np.abs(p.astype(int) - q).mean() for p, q in zip(x, y)) < 1.0
    run_video(Mean(), clip, tmp_path / "cut2", segment_frames=8, progress=False)
    det = Mean()  # other settings: refused in one line, nothing redone
    rep = run_video(det, clip, tmp_path / "cut2", save_maps=True, segment_frames=8, progress=False)
    assert "other settings" in rep["skipped"][0]["reason"] and "--fresh" in rep["skipped"][0]["reason"]
    assert det.frames == 0 and rep["done"] == []
    rep = run_video(Mean(), clip, tmp_path / "cut2", save_maps=True, resume=False, progress=False)
    assert rep["done"] == ["drive"] and len(list((tmp_path / "cut2" / "drive" / "maps").glob("*.npz"))) == N


def test_truncated_and_corrupt_videos_are_one_line_with_the_frames_done(clip, tmp_path):
    src = tmp_path / "videos"
    src.mkdir()
    data = clip.read_bytes()
    (src / "cut.mp4").write_bytes(data[: len(data) * 6 // 10])
    (src / "junk.mp4").write_bytes(b"not a video" * 50)
    (src / "whole.mp4").write_bytes(data)
    (src / "notes.txt").write_text("hello")
    odd = [generate_scene(50 + i, 47, 95).image for i in range(5)]  # an odd frame size is padded for yuv420p
    write_video(src / "odd.mp4", odd)
    rep = run_video(Mean(), src, tmp_path / "out", segment_frames=8, progress=False)
    reasons = {s["name"]: s for s in rep["skipped"]}
    assert sorted(reasons) == ["cut", "junk"] and sorted(rep["done"]) == ["cut", "odd", "whole"]
    assert rep["ignored"][0]["path"].endswith("notes.txt")
    cut = reasons["cut"]
    assert 0 < cut["frames_done"] < N and "\n" not in cut["reason"] and str(src / "cut.mp4") in cut["reason"]
    assert f"{cut['frames_done']} frames done" in cut["reason"] and "--fresh" in cut["reason"]
    frames, _ = decode(tmp_path / "out" / "cut" / "overlay.mp4")
    assert len(frames) == cut["frames_done"]
    junk = reasons["junk"]
    assert junk["frames_done"] == 0 and "cannot be read as a video" in junk["reason"] and "junk.mp4" in junk["reason"]
    assert len(decode(tmp_path / "out" / "whole" / "overlay.mp4")[0]) == N
    o, _ = decode(tmp_path / "out" / "odd" / "overlay.mp4")
    assert len(o) == 5 and o[0].shape == (48, 96, 3)
    again = run_video(Mean(), src, tmp_path / "out", segment_frames=8, progress=False)  # still said, not redone
    assert sorted(again["done_earlier"]) == ["cut", "odd", "whole"] and again["frames"] == 0
    assert {s["name"] for s in again["skipped"]} == {"cut", "junk"}


def test_cli_video(stages, clip, tmp_path, capsys):
    from synboost.detectors.detector import write_pipeline_file

    p = write_pipeline_file(tmp_path / "p.yaml", segmenter=str(stages / "seg.safetensors"), method="entropy",
                            device="cpu")
    out = tmp_path / "o"
    assert main(["infer", "--pipeline", str(p), "--video", str(clip), "--out", str(out), "--save-maps",
                 "--objects", "--threshold", "0.5"]) == 0
    said = capsys.readouterr().out
    assert "1 videos done (40 frames" in said and "score > 0.5 (--threshold)" in said
    assert len(list((out / "drive" / "maps").glob("*.npz"))) == N and (out / "drive" / "objects.json").is_file()
    assert main(["infer", "--pipeline", str(p), "--video", str(clip), "--out", str(out), "--save", "npy"]) == 2
    assert "--save: for --images" in capsys.readouterr().err
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    assert main(["infer", "--pipeline", str(p), "--video", str(cut), "--out", str(tmp_path / "c")]) == 3
    said = capsys.readouterr().out
    assert "skipped:" in said and "cut.mp4" in said and "frames done" in said
