"""``synboost demo``: the main job on the embedded default, on a fresh machine, with no data and no weights.

world -> segmentation -> PEBAL -> synthesis -> dissimilarity -> SynBoost, PEBAL and the post-hoc baselines on
held-out anomaly scenes -> table, curves, heatmaps, and ``report.html`` (all of it and every stage's training
curves in one self-contained page: :mod:`synboost.jobs.report`). A step that already finished with the same config
is reused, so an interrupted demo continues where it stopped (a stage's own training also resumes from its last
epoch).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from synboost.config import DemoConfig, save_config, to_dict
from synboost.data.io import write_json, write_text
from synboost.jobs.stages import place_stages, prepare_stages


def _shrink(cfg: DemoConfig) -> None:
    """--quick: a smoke-test sized run (about a minute)."""
    cfg.world.n, cfg.world.height, cfg.world.width = 40, 64, 128
    cfg.segmentation.data.crop = [64, 128]
    cfg.segmentation.train.epochs, cfg.segmentation.train.batch_size = 2, 4
    cfg.synthesis.data.size, cfg.synthesis.model.num_upsampling = [32, 64], 4
    cfg.synthesis.train.epochs = 1
    cfg.dissimilarity.data.size, cfg.dissimilarity.train.epochs = [32, 64], 1
    cfg.pebal.data.crop, cfg.pebal.train.epochs, cfg.pebal.train.batch_size = [64, 128], 1, 4


def run_demo(cfg: DemoConfig, quick: bool = False, resume: bool = True) -> dict:
    """``synboost demo``: world, stages (each reused when done with the same config), the anomaly test scored
    with every method, report and pipeline file; ``quick`` shrinks everything for smoke tests."""
    from synboost.data.kinds import open_dataset
    from synboost.detectors.pipeline import load_pipeline
    from synboost.jobs.evaluate import evaluate, markdown_table
    from synboost.jobs.report import Gallery, write_demo_report

    if quick:
        _shrink(cfg)
    place_stages(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    times, _ = prepare_stages(cfg, resume)
    w, seg, syn, dis = cfg.world, cfg.segmentation, cfg.synthesis, cfg.dissimilarity

    print(f"[6/6] evaluation on {w.out}/anomaly/test (held-out scenes with out-of-distribution objects)")
    t = time.time()
    from synboost.detectors.pipeline import write_pipeline_file

    pipe = write_pipeline_file(
        out / "pipeline.yaml", method="synboost", segmenter=str(Path(dis.segmenter).resolve()),
        generator=str(Path(dis.generator).resolve()),
        dissimilarity=str((Path(dis.out) / "dissimilarity.safetensors").resolve()),
        pebal=str((Path(cfg.pebal.out) / "pebal.safetensors").resolve()),
        perceptual_vgg_pretrained=dis.perceptual_vgg_pretrained, batch_size=seg.train.batch_size)
    det = load_pipeline(pipe)
    gallery, curves = Gallery(), {}
    report = evaluate(det, open_dataset(f"synthetic:{w.out}"), cfg.methods, out / "eval",
                      dataset_name="synthetic anomaly test", curves=curves, gallery=gallery, html=False)
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
            "Time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
            + f" (total {sum(times.values()):.0f} s)\n")
    write_text(out / "report.md", text)
    write_demo_report(out, summary, curves, gallery, {"segmentation": seg.out, "pebal": cfg.pebal.out,
                                                      "synthesis": syn.out, "dissimilarity": dis.out},
                      Path(syn.out) / "samples")
    print()
    print(text)
    print(f"outputs in {out}/: report.html (everything in one page), report.md, eval/curves.png, "
          f"eval/examples/*.png; pipeline file {pipe}")
    print(f"next: synboost infer --pipeline {pipe} --images {w.out}/anomaly/test/original --out {out}/maps")
    return summary
