"""Video inference frames/s against the same frames as PNGs through ``run_folder``, at 128x256 on the CPU.

    python benchmarks/bench_video.py [--frames 120] [--repeats 5] [--out benchmarks/results/video.json]

The frames come from the synthetic world (with out-of-distribution objects); they are written once as an H.264 MP4
and once as PNG files. The detector is a small post-hoc one (a randomly initialised tiny DeepLabV3+, entropy),
batch 4, float32 on the CPU; the same detector object runs every variant. Rows (median seconds of ``--repeats``
runs into fresh output folders, the variants taking turns, after one warm-up round):

* ``detector alone``: the frames already in memory, through the detector only (the floor both paths sit on);
* ``video: overlay``: ``run_video`` (PyAV decode -> detector -> overlay -> libx264 segments -> remux);
* ``video: overlay + maps``: the same with ``save_maps`` (float16 npz per frame);
* ``folder: overlay``: ``run_folder(save="overlay")`` over the PNGs (decode -> detector -> overlay PNGs);
* ``folder: npy,heatmap,overlay``: ``run_folder`` with its default outputs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from synboost.bench.speed import device_info, format_rows
from synboost.data.io import write_image, write_json
from synboost.data.synthetic import generate_scene
from synboost.detectors.posthoc import PosthocDetector
from synboost.jobs.infer import run_folder
from synboost.jobs.video import run_video
from synboost.models import create_model

H, W, FPS = 128, 256, 25


def make_inputs(root: Path, n: int) -> tuple[Path, Path, list[np.ndarray]]:
    frames = [generate_scene(1000 + i, H, W, n_ood=2).image for i in range(n)]
    video = root / "drive.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("libx264", rate=FPS, options={"crf": "18", "bf": "0"})
        s.height, s.width, s.pix_fmt = H, W, "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(str(video)) as c:  # the PNGs hold the decoded frames: both paths see the same pixels
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    pngs = root / "pngs"
    for i, f in enumerate(decoded):
        write_image(pngs / f"{i:06d}.png", f)
    return video, pngs, decoded


def timed(variants: dict, root: Path, repeats: int) -> dict[str, float]:
    """Median seconds per variant; the variants take turns (round robin), so that a change in the machine's load
    during the benchmark falls on all of them alike. Round 0 warms up (allocator, OpenCV, codecs) and is dropped."""
    ts: dict[str, list[float]] = {name: [] for name in variants}
    for k in range(repeats + 1):
        for name, fn in variants.items():
            out = root / f"out{k}"
            t = time.perf_counter()
            fn(out)
            ts[name].append(time.perf_counter() - t)
            shutil.rmtree(out, ignore_errors=True)
    return {name: statistics.median(v[1:]) for name, v in ts.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/video.json")
    a = p.parse_args()
    load_at_start = os.getloadavg()
    torch.manual_seed(0)
    seg = create_model("deeplabv3plus", backbone="tiny", aspp_dim=32, decoder_dim=32, width=16).eval()
    det = PosthocDetector(seg, "entropy", batch_size=4, device="cpu", amp=False)
    root = Path(tempfile.mkdtemp(prefix="bench-video-"))
    try:
        video, pngs, frames = make_inputs(root, a.frames)
        n = len(frames)
        variants = {
            "detector alone": lambda out: [det(frames[i:i + 4]) for i in range(0, n, 4)],
            "video: overlay": lambda out: run_video(det, video, out, progress=False),
            "video: overlay + maps": lambda out: run_video(det, video, out, save_maps=True, progress=False),
            "folder: overlay": lambda out: run_folder(det, pngs, out, save="overlay", progress=False),
            "folder: npy,heatmap,overlay": lambda out: run_folder(det, pngs, out, progress=False),
        }
        rows = [{"variant": name, "seconds": round(secs, 3), "frames_per_s": round(n / secs, 2)}
                for name, secs in timed(variants, root, a.repeats).items()]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    by = {r["variant"]: r["frames_per_s"] for r in rows}
    ratio = by["video: overlay"] / by["folder: overlay"]
    load = os.getloadavg()  # 1, 5, 15 minutes
    info = {**device_info(torch.device("cpu")), "size": [H, W], "frames": n, "batch_size": 4, "repeats": a.repeats,
            "codec": "libx264", "pyav": av.__version__, "load_at_start": [round(x, 2) for x in load_at_start],
            "load_at_end": [round(x, 2) for x in load],
            "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    print(format_rows(rows, ["variant", "seconds", "frames_per_s"]))
    print(f"video / folder (overlay only): {ratio:.2f}x; load average {load_at_start[0]:.2f} at the start, "
          f"{load[0]:.2f} at the end")
    write_json(a.out, {"info": info, "rows": rows, "video_over_folder": round(ratio, 3)})


if __name__ == "__main__":
    main()
