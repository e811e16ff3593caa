"""Segmenter images/s at 512x1024: eager vs channels_last vs torch.compile (+ bf16 on CUDA).

    python benchmarks/bench_segmenter.py [--quick] [--device cpu|cuda] [--out benchmarks/results/segmenter.json]
"""
import argparse

from synboost.bench.speed import run_segmenter_benchmark

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="benchmarks/results/segmenter.json")
    p.add_argument("--backbones", default="")
    p.add_argument("--no-compile", action="store_true")
    a = p.parse_args()
    run_segmenter_benchmark(a.out, quick=a.quick, device=a.device,
                            backbones=tuple(a.backbones.split(",")) if a.backbones else None, compile=not a.no_compile)
