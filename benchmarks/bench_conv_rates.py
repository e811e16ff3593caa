"""The rate of single convolutions of the pipeline's networks on this machine: the practical ceiling of a bf16 CPU
pipeline (BENCHMARKS.md, "What issue 16 asked").

    python benchmarks/bench_conv_rates.py [--out benchmarks/results/conv_rates.json]

Each row: one ``F.conv2d`` at a shape the pipeline runs at 512x1024 (ResNet-101 OS8 1x1 / 3x3 / dilated ASPP, the
generator's and dissimilarity network's full-resolution 3x3), NHWC, in bf16 and in fp32, median of 5 calls after a
warm-up, with GFLOP/s (2 x multiply-adds). A square 4096 GEMM is the reference row.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from synboost.bench.speed import device_info
from synboost.data.io import write_json
from synboost.runtime import tune_malloc

#: (label, in channels, out channels, kernel, dilation, height, width)
SHAPES = [
    ("ResNet-101 layer4 1x1 512->2048", 512, 2048, 1, 1, 64, 128),
    ("ResNet-101 layer3 1x1 256->1024", 256, 1024, 1, 1, 64, 128),
    ("ResNet-101 layer3 3x3 256, dilation 2", 256, 256, 3, 2, 64, 128),
    ("ASPP 3x3 2048->256, dilation 12", 2048, 256, 3, 12, 64, 128),
    ("generator / dissimilarity 3x3 128->64 at 256x512", 128, 64, 3, 1, 256, 512),
]


def _median_ms(fn, n: int = 5) -> float:
    fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1000 * statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    tune_malloc()
    rows = []
    with torch.no_grad():
        for label, ci, co, k, d, h, w in SHAPES:
            gflop = 2 * ci * co * k * k * h * w / 1e9
            for dtype in (torch.bfloat16, torch.float32):
                x = torch.randn(1, ci, h, w).to(dtype).contiguous(memory_format=torch.channels_last)
                wt = torch.randn(co, ci, k, k).to(dtype).contiguous(memory_format=torch.channels_last)
                ms = _median_ms(lambda: F.conv2d(x, wt, None, padding=d * (k // 2), dilation=d))
                rows.append({"shape": label, "dtype": str(dtype).split(".")[-1], "gflop": gflop, "ms": ms,
                             "gflop_per_s": gflop / ms * 1000})
        for dtype in (torch.bfloat16, torch.float32):
            m = torch.randn(4096, 4096).to(dtype)
            ms = _median_ms(lambda: m @ m)
            rows.append({"shape": "GEMM 4096^3", "dtype": str(dtype).split(".")[-1], "gflop": 2 * 4096 ** 3 / 1e9,
                         "ms": ms, "gflop_per_s": 2 * 4096 ** 3 / 1e6 / ms})
    print("| shape | dtype | GFLOP | ms | GFLOP/s |\n|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['shape']} | {r['dtype']} | {r['gflop']:.1f} | {r['ms']:.1f} | {r['gflop_per_s']:.0f} |")
    if a.out:
        write_json(a.out, {"benchmark": "conv_rates", "info": device_info(torch.device("cpu")), "rows": rows})


if __name__ == "__main__":
    main()
