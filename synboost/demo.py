"""``synboost demo``: the main job on the embedded default, on a fresh machine, with no data and no weights.

world -> segmentation stage -> the post-hoc baselines on held-out anomaly scenes -> table, curves, heatmaps.
Each step that already finished (same config) is reused, so an interrupted demo continues where it stopped.
The synthesis and dissimilarity stages join this job as they land.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from synboost.config import DemoConfig, save_config, to_dict
from synboost.data.io import write_json, write_text


def _world_is_current(cfg) -> bool:
    meta_path = Path(cfg.out) / "synthetic_world.json"
    if not meta_path.is_file():
        return False
    meta = json.loads(meta_path.read_text())
    from synboost.data.synthetic import GENERATOR_VERSION, split_sizes

    return (meta.get("version") == GENERATOR_VERSION and meta.get("seed") == cfg.seed
            and meta.get("height") == cfg.height and meta.get("width") == cfg.width
            and meta.get("splits") == split_sizes(cfg.n, cfg.val_fraction, cfg.test_fraction))


def _shrink(cfg: DemoConfig) -> None:
    """--quick: a smoke-test sized run (seconds, not minutes)."""
    cfg.world.n, cfg.world.height, cfg.world.width = 40, 64, 128
    cfg.segmentation.data.crop = [64, 128]
    cfg.segmentation.train.epochs = 2
    cfg.segmentation.train.batch_size = 4


def _place(cfg: DemoConfig) -> None:
    """Every output of the demo lives under ``cfg.out``: the world in ``world/``, the segmenter in
    ``segmentation/`` (the nested ``out`` and data paths are derived, whatever they were set to)."""
    out = Path(cfg.out)
    cfg.world.out = str(out / "world")
    cfg.segmentation.out = str(out / "segmentation")
    cfg.segmentation.data.train = f"synthetic:{cfg.world.out}@train"
    cfg.segmentation.data.val = f"synthetic:{cfg.world.out}@val"


def run_demo(cfg: DemoConfig, quick: bool = False, resume: bool = True) -> dict:
    from synboost.data.datasets import open_dataset
    from synboost.data.synthetic import write_world
    from synboost.evaluation import evaluate, markdown_table
    from synboost.pipeline import load_pipeline
    from synboost.training.segmentation import train_segmentation

    if quick:
        _shrink(cfg)
    _place(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    times: dict[str, float] = {}

    print(f"[1/3] synthetic world: {cfg.world.n} scenes of {cfg.world.height}x{cfg.world.width} -> {cfg.world.out}")
    t = time.time()
    if resume and _world_is_current(cfg.world):
        print("      already there, reused")
    else:
        write_world(cfg.world)
    times["world"] = time.time() - t

    seg = cfg.segmentation
    print(f"[2/3] segmentation stage: DeepLabV3+ ({seg.model.backbone} trunk), {seg.train.epochs} epochs on the CPU"
          if seg.train.device != "cuda" else "[2/3] segmentation stage")
    t = time.time()
    seg_summary_path = Path(seg.out) / "summary.json"
    seg_ckpt = Path(seg.out) / "segmenter.safetensors"
    done = resume and seg_ckpt.is_file() and seg_summary_path.is_file() and \
        json.loads(seg_summary_path.read_text()).get("finished") and \
        (Path(seg.out) / "config.yaml").read_text() == _yaml(seg)
    if done:
        print("      already trained, reused")
    else:
        train_segmentation(seg, resume=resume)
    times["segmentation"] = time.time() - t

    print(f"[3/3] evaluation on {cfg.world.out}/anomaly/test (held-out scenes with out-of-distribution objects)")
    t = time.time()
    from synboost.pipeline import write_pipeline_file

    pipe = write_pipeline_file(out / "pipeline.yaml", segmenter=str(seg_ckpt.resolve()), method="entropy",
                               batch_size=seg.train.batch_size)
    det = load_pipeline(pipe)
    test = open_dataset(f"synthetic:{cfg.world.out}")
    report = evaluate(det, test, cfg.methods, out / "eval", dataset_name="synthetic anomaly test")
    times["evaluation"] = time.time() - t
    val_miou = json.loads(seg_summary_path.read_text())["val"].get("score")
    summary = {"report": report, "segmenter_val_miou": val_miou, "seconds": times, "config": to_dict(cfg)}
    write_json(out / "report.json", summary)
    table = markdown_table(report)
    text = (f"# synboost demo\n\nSegmenter mIoU on held-out clean scenes: {100 * val_miou:.1f}\n\n{table}\n"
            f"Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + "\n")
    write_text(out / "report.md", text)
    print()
    print(text)
    print(f"outputs in {out}/: report.md, eval/curves.png, eval/examples/*.png; pipeline file {pipe}")
    print(f"next: synboost eval --pipeline {pipe} --data synthetic:{cfg.world.out} --method all")
    return summary


def _yaml(cfg) -> str:
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
