"""SynBoost end to end (CUDA: 1024x2048 with the WideResNet-38; CPU: 512x1024 with a ResNet-101): batched
detector vs the official-style per-image loop; synthesis images/s.

    python benchmarks/bench_pipeline.py [--quick] [--device cpu|cuda]
"""
import argparse

from synboost.bench.speed import run_pipeline_benchmark, run_synthesis_benchmark

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--out-dir", default="benchmarks/results")
    a = p.parse_args()
    run_synthesis_benchmark(f"{a.out_dir}/synthesis_{a.device}.json", quick=a.quick, device=a.device)
    run_pipeline_benchmark(f"{a.out_dir}/pipeline_{a.device}.json", quick=a.quick, device=a.device)
