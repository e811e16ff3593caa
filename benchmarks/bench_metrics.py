"""Pixel-metrics benchmark: exact vs two-pass vs streaming histogram vs scikit-learn (time and peak memory).

    python benchmarks/bench_metrics.py                      # 20 M and 200 M pixels
    python benchmarks/bench_metrics.py --sizes 2e6 --out /tmp/m.json
"""
from __future__ import annotations

import argparse

from synboost.bench.metrics import format_table, run_metrics_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[20e6, 200e6], help="pixel counts (e.g. 2e7 2e8)")
    parser.add_argument("--pos-frac", type=float, default=0.02, help="fraction of anomaly pixels")
    parser.add_argument("--out", default="benchmarks/results/metrics.json", help="JSON output path")
    args = parser.parse_args()
    rows = run_metrics_benchmark([int(s) for s in args.sizes], args.pos_frac, args.out)
    print(format_table(rows))
    print(f"\ntimes cover the metric call only (data generation excluded); JSON written to {args.out}")


if __name__ == "__main__":
    main()
