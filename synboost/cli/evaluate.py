"""``synboost eval``: AP / FPR95 / AUROC of a detector on labelled anomaly data, or a paper table with
``--config``. Exits 3 when images were skipped or ignored, after listing them."""
from __future__ import annotations

import argparse
from pathlib import Path

from synboost.cli.common import no_resume, print_skips, size, skips_of
from synboost.errors import SynboostError


def register(sub) -> None:
    """``eval``."""
    e = sub.add_parser("eval", help="AP / FPR95 / AUROC (and mIoU, SMIYC component metrics) of a detector on "
                                    "labelled anomaly data; or a paper table with --config")
    e.add_argument("--config", help="reproduction config (configs/reproduce/*.yaml): pipeline, datasets, methods "
                                    "and the published numbers, printed beside ours; --set edits it "
                                    "(e.g. --set data.fishyscapes_laf=/data/fs)")
    e.add_argument("--pipeline", help="pipeline file (pipelines/*.yaml or a run's pipeline.yaml)")
    e.add_argument("--segmenter", help="segmenter checkpoint (instead of a pipeline file)")
    e.add_argument("--method", action="append", default=None,
                   help="msp, maxlogit, entropy, energy, sml, mcdropout, pebal, void, outlier_head, dirichlet, knn, "
                        "nll_single, nll_min, density_logreg, synboost, dissimilarity (comma list or "
                        "repeat; 'all'); default: the pipeline's")
    e.add_argument("--data", action="append", default=[],
                   help="dataset spec KIND:DIR (repeatable; e.g. fishyscapes_laf:DIR road_anomaly:DIR "
                        "smiyc_anomaly:DIR lostandfound:DIR@test)")
    e.add_argument("--out", help="folder: <dataset>/metrics.json/.md, curves, examples; summary.md over all datasets")
    e.add_argument("--max-images", type=int)
    e.add_argument("--fpr-rule", default=None, choices=["first_ge", "first_gt", "closest", "interp"],
                   help="FPR95 convention (default first_ge, the Fishyscapes/SMIYC one)")
    e.add_argument("--components", nargs="?", const="auto", choices=["auto", "anomaly", "obstacle", "off"],
                   help="SMIYC sIoU / PPV / mean F1 (default: on the SMIYC tracks and LostAndFound only); alone: "
                        "every dataset with its track's sizes (else anomaly: 500 / 100 px)")
    e.add_argument("--eval-size", type=size, help="HxW to score at (maps area-resized, labels nearest), e.g. "
                                                   "256x512 for SynBoost's protocol; default the labels' size")
    e.add_argument("--submission", metavar="DIR", help="also write each method's benchmark submission files here "
                                                       "(every frame, labelled or not)")
    e.add_argument("--format", dest="formats", help="submission formats: smiyc,fishyscapes (default: Fishyscapes "
                                                    "data -> fishyscapes, else smiyc)")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a pipeline value (with --config: a reproduction config value)")
    e.set_defaults(run=run, interrupt=no_resume("eval"))


def _skips(reports: list[dict], out: str | None) -> int:
    """List every report's skipped / ignored images (the report file: ``<out>/<dataset>/metrics.json``)."""
    items = []
    for r in reports:
        items += skips_of(r, str(Path(out) / r["dataset"] / "metrics.json") if out else None)
    return print_skips(items)


def run(a: argparse.Namespace) -> int:
    """Evaluate (or reproduce with ``--config``); the exit status (3: finished, with skips)."""
    if a.config:
        return _eval_config(a)
    from synboost.detectors.pipeline import load_pipeline
    from synboost.jobs.evaluate import evaluate_many

    ov = list(a.overrides)
    if a.segmenter:
        ov.append(f"segmenter={a.segmenter}")
    if not a.pipeline and not a.segmenter:
        raise SynboostError("give --pipeline FILE (e.g. runs/demo/pipeline.yaml) or --segmenter CHECKPOINT, "
                            "or --config configs/reproduce/<table>.yaml")
    if not a.data:
        raise SynboostError("give at least one --data KIND:DIR (e.g. --data fishyscapes_laf:/data/fishyscapes)")
    det = load_pipeline(a.pipeline, ov) if a.pipeline else _detector_from_segmenter(ov)
    if a.method is None:
        methods = [det.method]
    elif a.method == ["all"]:
        methods = list(det.methods)
    else:
        methods = [m for spec in a.method for m in spec.split(",")]
    reports = evaluate_many(det, a.data, methods, a.out, max_images=a.max_images, fpr_rule=a.fpr_rule or "first_ge",
                            components=a.components, eval_size=a.eval_size, submission=a.submission,
                            formats=a.formats)
    if len(reports) > 1:
        from synboost.jobs.evaluate import combined_table

        print(combined_table(reports))
    if a.out:
        print(f"written to {a.out}/<dataset>/ (metrics.json, metrics.md, curves.png, examples/) and "
              f"{a.out}/summary.md (every dataset in one table)")
    if a.submission:
        print(f"submission files in {a.submission}/")
    return _skips(reports, a.out)


def _eval_config(a: argparse.Namespace) -> int:
    """``eval --config``: a reproduction config; --set edits it, the other flags override its fields."""
    from synboost.config import ReproduceConfig, load_config
    from synboost.jobs.reproduce import reproduce

    if a.data or a.segmenter:
        raise SynboostError("with --config, point at the data with --set data.<kind>=PATH (or --set data_root=DIR) "
                            "and at weights through the config's pipeline; --data / --segmenter are not used")
    ov = list(a.overrides)
    flags = {"pipeline": a.pipeline, "out": a.out, "max_images": a.max_images, "fpr_rule": a.fpr_rule,
             "components": a.components, "submission": a.submission}
    ov += [f"{k}={v}" for k, v in flags.items() if v is not None]
    if a.method:
        ov.append(f"methods=[{','.join(m for spec in a.method for m in spec.split(','))}]")
    if a.eval_size:
        ov.append(f"eval_size=[{a.eval_size[0]},{a.eval_size[1]}]")
    if a.formats:
        ov.append(f"formats=[{a.formats}]")
    res = reproduce(load_config(ReproduceConfig, a.config, ov))
    print(res["summary"])
    print(res["text"])
    print(f"written to {res['out']}/ (reproduce.md, reproduce.json, summary.md, <dataset>/metrics.json)")
    return _skips(res["reports"], res["out"])


def _detector_from_segmenter(ov):
    from synboost.detectors.pipeline import build_detector, pipeline_from_overrides

    return build_detector(pipeline_from_overrides(ov))
