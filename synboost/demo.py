"""``synboost demo``: the main job on the embedded default, on a fresh machine, with no data and no weights.

world -> segmentation -> PEBAL -> synthesis -> dissimilarity -> SynBoost, PEBAL and the post-hoc baselines on
held-out anomaly scenes -> table, curves, heatmaps. A step that already finished with the same config is reused, so an
interrupted demo continues where it stopped (a stage's own training also resumes from its last epoch).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import yaml

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


def _stage_done(cfg, product: str) -> bool:
    """The stage's run folder holds a finished run of exactly this config and its product file."""
    out = Path(cfg.out)
    summary = out / "summary.json"
    return ((out / product).is_file() and summary.is_file() and json.loads(summary.read_text()).get("finished")
            and (out / "config.yaml").is_file()
            and (out / "config.yaml").read_text() == yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _shrink(cfg: DemoConfig) -> None:
    """--quick: a smoke-test sized run (about a minute)."""
    cfg.world.n, cfg.world.height, cfg.world.width = 40, 64, 128
    cfg.segmentation.data.crop = [64, 128]
    cfg.segmentation.train.epochs, cfg.segmentation.train.batch_size = 2, 4
    cfg.synthesis.data.size, cfg.synthesis.model.num_upsampling = [32, 64], 4
    cfg.synthesis.train.epochs = 1
    cfg.dissimilarity.data.size, cfg.dissimilarity.train.epochs = [32, 64], 1
    cfg.pebal.data.crop, cfg.pebal.train.epochs, cfg.pebal.train.batch_size = [64, 128], 1, 4


def _place(cfg: DemoConfig) -> None:
    """Every output of the demo lives under ``cfg.out``; the stages' folders and inputs are derived from it."""
    out = Path(cfg.out)
    cfg.world.out = str(out / "world")
    train, val = f"synthetic:{cfg.world.out}@train", f"synthetic:{cfg.world.out}@val"
    cfg.segmentation.out, cfg.synthesis.out = str(out / "segmentation"), str(out / "synthesis")
    cfg.dissimilarity.out, cfg.pebal.out = str(out / "dissimilarity"), str(out / "pebal")
    cfg.pebal.data.train, cfg.pebal.data.val = train, val
    cfg.pebal.segmenter = str(out / "segmentation" / "segmenter.safetensors")
    cfg.segmentation.data.train, cfg.segmentation.data.val = train, val
    cfg.synthesis.data.train, cfg.synthesis.data.val = train, val
    cfg.dissimilarity.data.train = train
    cfg.dissimilarity.segmenter = str(out / "segmentation" / "segmenter.safetensors")
    cfg.dissimilarity.generator = str(out / "synthesis" / "generator.safetensors")


def _step(title: str, done: bool, run: Callable[[], object], times: dict, key: str) -> bool:
    """Run one step unless it is done; returns whether it ran (then every later step runs too)."""
    print(title)
    t = time.time()
    if done:
        print("      already done with this config, reused")
    else:
        run()
    times[key] = time.time() - t
    return not done


def prepare_stages(cfg: DemoConfig, resume: bool = True, dissimilarity: bool = True,
                   pebal: bool = True) -> tuple[dict, bool]:
    """Steps 1-5 of the demo (world, segmentation, PEBAL, synthesis, dissimilarity), each reused when already
    done with the same config; returns (seconds per step, whether anything upstream of the dissimilarity stage
    ran)."""
    from synboost.data.synthetic import write_world
    from synboost.training.dissimilarity import train_dissimilarity
    from synboost.training.pebal import train_pebal
    from synboost.training.segmentation import train_segmentation
    from synboost.training.synthesis import train_synthesis

    times: dict[str, float] = {}
    w, seg, syn, dis, peb = cfg.world, cfg.segmentation, cfg.synthesis, cfg.dissimilarity, cfg.pebal
    ran = _step(f"[1/6] synthetic world: {w.n} scenes of {w.height}x{w.width} -> {w.out}",
                resume and _world_is_current(w), lambda: write_world(w), times, "world")
    ran |= _step(f"[2/6] segmentation: DeepLabV3+ ({seg.model.backbone} trunk), {seg.train.epochs} epochs",
                 resume and not ran and _stage_done(seg, "segmenter.safetensors"),
                 lambda: train_segmentation(seg, resume=resume and not ran), times, "segmentation")
    if pebal:
        _step(f"[3/6] PEBAL: the segmenter's head with abstention and energy losses on AnomalyMix, "
              f"{peb.train.epochs} epochs", resume and not ran and _stage_done(peb, "pebal.safetensors"),
              lambda: train_pebal(peb, resume=resume and not ran), times, "pebal")
    ran_syn = _step(f"[4/6] synthesis: SPADE generator at {syn.data.size[0]}x{syn.data.size[1]}, {syn.train.epochs} "
                    "epochs", resume and not ran and _stage_done(syn, "generator.safetensors"),
                    lambda: train_synthesis(syn, resume=resume and not ran), times, "synthesis")
    ran |= ran_syn
    if dissimilarity:
        _step(f"[5/6] dissimilarity: anomaly data (label switching + void) and {dis.train.epochs} epochs",
              resume and not ran and _stage_done(dis, "dissimilarity.safetensors"),
              lambda: train_dissimilarity(dis, resume=resume and not ran), times, "dissimilarity")
    return times, ran


def run_demo(cfg: DemoConfig, quick: bool = False, resume: bool = True) -> dict:
    from synboost.data.kinds import open_dataset
    from synboost.evaluation import evaluate, markdown_table
    from synboost.pipeline import load_pipeline

    if quick:
        _shrink(cfg)
    _place(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    times, _ = prepare_stages(cfg, resume)
    w, seg, syn, dis = cfg.world, cfg.segmentation, cfg.synthesis, cfg.dissimilarity

    print(f"[6/6] evaluation on {w.out}/anomaly/test (held-out scenes with out-of-distribution objects)")
    t = time.time()
    from synboost.pipeline import write_pipeline_file

    pipe = write_pipeline_file(
        out / "pipeline.yaml", method="synboost", segmenter=str(Path(dis.segmenter).resolve()),
        generator=str(Path(dis.generator).resolve()),
        dissimilarity=str((Path(dis.out) / "dissimilarity.safetensors").resolve()),
        pebal=str((Path(cfg.pebal.out) / "pebal.safetensors").resolve()),
        perceptual_vgg_pretrained=dis.perceptual_vgg_pretrained, batch_size=seg.train.batch_size)
    det = load_pipeline(pipe)
    report = evaluate(det, open_dataset(f"synthetic:{w.out}"), cfg.methods, out / "eval",
                      dataset_name="synthetic anomaly test")
    times["evaluation"] = time.time() - t
    val = {k: json.loads((Path(c.out) / "summary.json").read_text())["best_val"] for k, c in
           (("segmentation", seg), ("synthesis", syn), ("dissimilarity", dis), ("pebal", cfg.pebal))}
    summary = {"report": report, "stages": val, "seconds": times, "config": to_dict(cfg)}
    write_json(out / "report.json", summary)
    sv, dv = val["synthesis"], val["dissimilarity"]
    pb = json.loads((Path(cfg.pebal.out) / "summary.json").read_text())["base_val"]
    text = (f"# synboost demo\n\n"
            f"- segmenter mIoU on held-out clean scenes: {100 * val['segmentation']['score']:.1f} "
            f"(epoch {val['segmentation']['epoch']})\n"
            f"- generator L1 to the real held-out images: {sv['l1']:.4f} (epoch {sv['epoch']}; per-class "
            f"mean-colour painting: "
            f"{sv['l1_mean_colour_painting']:.4f})\n"
            f"- dissimilarity AP on held-out training anomalies: {100 * dv['heldout_ap']:.1f} (epoch {dv['epoch']})\n"
            f"- PEBAL on held-out scenes with pasted outliers: AP {100 * val['pebal']['ap']:.1f} (the base "
            f"segmenter's energy: {100 * pb['ap']:.1f}), mIoU {100 * val['pebal']['miou']:.1f} (base: "
            f"{100 * pb['miou']:.1f}) (epoch {val['pebal']['epoch']})\n\n"
            f"{markdown_table(report)}\n"
            "Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f" (total {sum(times.values()):.0f} s)\n")
    write_text(out / "report.md", text)
    print()
    print(text)
    print(f"outputs in {out}/: report.md, eval/curves.png, eval/examples/*.png; pipeline file {pipe}")
    print(f"next: synboost infer --pipeline {pipe} --images {w.out}/anomaly/test/original --out {out}/maps")
    return summary
