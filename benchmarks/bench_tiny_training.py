"""Does bf16 autocast pay for the test suite's tiny training stages on this CPU? (issue 16: the suite trains them
in fp32, ``LoopConfig.amp_cpu`` false, while the demo trains in bf16.)

    python benchmarks/bench_tiny_training.py [--epochs 6] [--out benchmarks/results/tiny_training.json]

The suite's own small configs on its own small world (60 scenes of 64x128, ``tests/conftest.py``): the tiny
segmenter (width 16, crops 64x128, batch 6) and the small synthesis stage (ngf 16 at 32x64, batch 4,
``tests/test_training_synthesis.py``), each trained once with ``train.amp_cpu=false`` (fp32) and once with
``train.amp_cpu=true`` (bf16 autocast where the CPU has bf16 units), same seed. Prints wall seconds per run, the
ratio, and the last validation figure of each run (the segmenter's mIoU, the generator's val L1), so that a
speed-up is not bought with a worse stage. One run per row: the seconds move by several per cent between runs.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from synboost.bench.speed import device_info
from synboost.config import SyntheticWorldConfig
from synboost.data.io import write_json
from synboost.data.synthetic import write_world
from synboost.runtime import tune_malloc
from synboost.training.loggers import read_train_log

TESTS = Path(__file__).resolve().parents[1] / "tests"


def _suite_configs():
    """The suite's own config builders (so that this measures what the tests train, not a copy of it)."""
    sys.path.insert(0, str(TESTS))
    from test_training_synthesis import _cfg as syn_config

    from conftest import seg_config

    return seg_config, syn_config


def main() -> None:
    from synboost.training.segmentation import train_segmentation
    from synboost.training.synthesis import train_synthesis

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    tune_malloc()
    seg_config, syn_config = _suite_configs()
    rows = []
    with tempfile.TemporaryDirectory(prefix="synboost-tiny-") as tmp:
        root = Path(tmp)
        world = root / "world"
        write_world(SyntheticWorldConfig(out=str(world), n=60, height=64, width=128, seed=3, workers=1),
                    progress=False)
        stages = (("segmentation", seg_config, ["model.width=16", "sml_stats=false"], train_segmentation, "val_score"),
                  ("synthesis", syn_config, ["sample_every=1000"], train_synthesis, "val_l1"))
        for stage, config, extra, train, key in stages:
            for amp in (False, True):
                out = root / f"{stage}-{'bf16' if amp else 'fp32'}"
                t = time.perf_counter()
                train(config(world, out, *extra, f"train.epochs={a.epochs}", f"train.amp_cpu={str(amp).lower()}"),
                      progress=False)
                seconds = time.perf_counter() - t
                rows.append({"stage": stage, "amp_cpu": amp, "seconds": seconds, "metric": key,
                             "last_val": read_train_log(out)[1][key][-1][1]})
    print("| stage | train.amp_cpu | s | fp32 / this | last val |\n|---|---|---:|---:|---:|")
    for r in rows:
        ref = next(x for x in rows if x["stage"] == r["stage"] and not x["amp_cpu"])
        print(f"| {r['stage']} | {str(r['amp_cpu']).lower()} | {r['seconds']:.1f} | "
              f"{ref['seconds'] / r['seconds']:.2f} | {r['metric']} {r['last_val']:.4f} |")
    if a.out:
        write_json(a.out, {"benchmark": "tiny_training", "epochs": a.epochs,
                           "info": device_info(torch.device("cpu")), "rows": rows})


if __name__ == "__main__":
    main()
