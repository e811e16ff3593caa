"""``synboost bench metrics | segmenter | synthesis | pipeline | accuracy``: print a table, write JSON."""
from __future__ import annotations

import argparse

from synboost.cli.common import no_resume


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(float(s)) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected pixel counts, e.g. 20e6,200e6; got '{text}'") from None


def register(sub) -> None:
    """``bench``."""
    b = sub.add_parser("bench", help="benchmarks (print a table, write JSON)")
    b.add_argument("what", choices=["metrics", "segmenter", "synthesis", "pipeline", "accuracy"])
    b.add_argument("--sizes", type=_sizes, help="metrics: pixel counts, e.g. 20e6,200e6")
    b.add_argument("--out")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--device", default="auto", help="segmenter, synthesis, pipeline: auto | cpu | cuda")
    b.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="pipeline: input size (default 1024 2048 on CUDA, 512 1024 on the CPU)")
    b.add_argument("--backbone", help="pipeline: segmenter trunk (default wrn38 on CUDA, resnet101 on the CPU)")
    b.add_argument("--pipeline", help="accuracy: the trained pipeline file (e.g. runs/demo/pipeline.yaml)")
    b.add_argument("--data", help="accuracy: a labelled anomaly split, KIND:DIR (e.g. synthetic:runs/demo/world)")
    b.add_argument("--variants", nargs="+", metavar="NAME",
                   help="pipeline, accuracy: some of the variants only (short names, e.g. fp32 bf16 mixed ov-bf16)")
    b.add_argument("--images", type=int, help="pipeline on the CPU: images per row (default 2)")
    b.add_argument("--max-images", type=int, help="accuracy: score the first N images only")
    b.set_defaults(run=run, interrupt=no_resume("bench"))


def run(a: argparse.Namespace) -> None:
    """One benchmark; its JSON goes to ``--out`` (default ``benchmarks/results/<what>.json``)."""
    out = a.out or f"benchmarks/results/{a.what}.json"
    if a.what == "metrics":
        from synboost.bench.metrics import run_metrics_benchmark

        run_metrics_benchmark(sizes=a.sizes or (20_000_000, 200_000_000), out_json=out)
    elif a.what == "segmenter":
        from synboost.bench.speed import run_segmenter_benchmark

        run_segmenter_benchmark(out_json=out, quick=a.quick, device=a.device)
    elif a.what == "synthesis":
        from synboost.bench.speed import run_synthesis_benchmark

        run_synthesis_benchmark(out_json=out, quick=a.quick, device=a.device)
    elif a.what == "accuracy":
        from synboost.bench.accuracy import run_accuracy_benchmark
        from synboost.errors import ConfigError

        if not a.pipeline or not a.data:
            raise ConfigError("bench accuracy needs --pipeline FILE and --data KIND:DIR (e.g. --pipeline "
                              "runs/demo/pipeline.yaml --data synthetic:runs/demo/world)")
        run_accuracy_benchmark(a.pipeline, a.data, out_json=out, variants=a.variants, max_images=a.max_images)
    else:
        from synboost.bench.speed import run_pipeline_benchmark

        run_pipeline_benchmark(out_json=out, quick=a.quick, device=a.device, size=tuple(a.size) if a.size else None,
                               backbone=a.backbone, variants=tuple(a.variants) if a.variants else None,
                               images_cpu=a.images or 2)
