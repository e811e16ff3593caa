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
import json
import tempfile
import time
from pathlib import Path

import torch

from synboost.bench.speed import device_info
from synboost.config import SegmentationConfig, SynthesisConfig, SyntheticWorldConfig, load_config
from synboost.data.io import write_json
from synboost.data.synthetic import write_world
from synboost.runtime import tune_malloc


def _seg(world: Path, out: Path, epochs: int, amp: bool) -> SegmentationConfig:
    return load_config(SegmentationConfig, None, [
        f"out={out}", "model.backbone=tiny", "model.pretrained=false", "model.aspp_dim=32", "model.decoder_dim=32",
        "model.width=16", f"data.train=synthetic:{world}@train", f"data.val=synthetic:{world}@val",
        "data.crop=[64,128]", "data.scale_min=0.75", "data.scale_max=1.25", "train.batch_size=6", "train.workers=0",
        "train.lr=0.05", "train.log_every=2", f"train.epochs={epochs}", "sml_stats=false",
        f"train.amp_cpu={str(amp).lower()}"])


def _syn(world: Path, out: Path, epochs: int, amp: bool) -> SynthesisConfig:
    return load_config(SynthesisConfig, None, [
        f"out={out}", f"data.train=synthetic:{world}@train", f"data.val=synthetic:{world}@val", "data.size=[32,64]",
        "model.ngf=16", "model.num_upsampling=4", "model.z_dim=32", "model.nef=16", "model.encoder_size=128",
        "model.ndf=16", "model.n_layers_d=2", "model.spade_hidden=32", "train.batch_size=4", "train.workers=0",
        "train.lr=0.0004", "lambda_vgg=0", "lambda_l1=30", "lambda_kld=0.005", "vgg_pretrained=false",
        "sample_every=1000", f"train.epochs={epochs}", f"train.amp_cpu={str(amp).lower()}"])


def _last(out: Path, key: str) -> float | None:
    vals = [r[key] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if key in r]
    return vals[-1] if vals else None


def main() -> None:
    from synboost.training.segmentation import train_segmentation
    from synboost.training.synthesis import train_synthesis

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    tune_malloc()
    rows = []
    with tempfile.TemporaryDirectory(prefix="synboost-tiny-") as tmp:
        root = Path(tmp)
        world = root / "world"
        write_world(SyntheticWorldConfig(out=str(world), n=60, height=64, width=128, seed=3, workers=1),
                    progress=False)
        for stage, make, train, key in (("segmentation", _seg, train_segmentation, "val_score"),
                                        ("synthesis", _syn, train_synthesis, "val_l1")):
            for amp in (False, True):
                out = root / f"{stage}-{'bf16' if amp else 'fp32'}"
                t = time.perf_counter()
                train(make(world, out, a.epochs, amp), progress=False)
                rows.append({"stage": stage, "amp_cpu": amp, "seconds": time.perf_counter() - t,
                             key: _last(out, key)})
    print("| stage | train.amp_cpu | s | fp32 / this | last val |\n|---|---|---:|---:|---:|")
    for r in rows:
        ref = next(x for x in rows if x["stage"] == r["stage"] and not x["amp_cpu"])
        val = next(v for k, v in r.items() if k.startswith("val_"))
        print(f"| {r['stage']} | {str(r['amp_cpu']).lower()} | {r['seconds']:.1f} | "
              f"{ref['seconds'] / r['seconds']:.2f} | {val if val is None else f'{val:.4f}'} |")
    if a.out:
        write_json(a.out, {"benchmark": "tiny_training", "epochs": a.epochs,
                           "info": device_info(torch.device("cpu")), "rows": rows})


if __name__ == "__main__":
    main()
