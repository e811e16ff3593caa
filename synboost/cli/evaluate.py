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
    e.add_argument("--calibrate", choices=["tpr95", "f1"],
                   help="instead of the metrics: the object threshold of the pipeline's method on this labelled "
                        "(validation) data, written into the pipeline file as score.threshold: tpr95 = 95 %% of the "
                        "anomaly pixels above it, f1 = the pixel best-F1 point (for `infer --objects`)")
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
        if a.calibrate:
            raise SynboostError("--calibrate takes --pipeline FILE and --data KIND:DIR, not --config")
        return _eval_config(a)
    if a.calibrate:
        return _calibrate(a)
    from synboost.detectors.detector import load_pipeline
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


def _calibrate(a: argparse.Namespace) -> int:
    """``eval --calibrate RULE``: the threshold on the given data, stored in the pipeline file."""
    from synboost.detectors.detector import load_pipeline
    from synboost.jobs.calibrate import calibrate, store_threshold

    if not a.pipeline or a.segmenter:
        raise SynboostError("--calibrate stores the threshold in a pipeline file: give --pipeline FILE (not "
                            "--segmenter)")
    if not a.data:
        raise SynboostError("--calibrate needs labelled data: give --data KIND:DIR, a split with anomaly labels "
                            "(a validation set, not the test set you report on)")
    if a.method and [m for spec in a.method for m in spec.split(",")] != [_file_method(a.pipeline)]:
        raise SynboostError(f"--calibrate: a threshold belongs to the pipeline's own method "
                            f"({_file_method(a.pipeline)}); drop --method, or calibrate a pipeline file with "
                            "that score.method")
    scoring = [o for o in a.overrides if o.partition("=")[0].split(".")[0] in _SCORING]
    if scoring:
        raise SynboostError(f"--calibrate: --set {scoring[0]} changes the maps the threshold is for; edit the "
                            "pipeline file instead (only runtime values such as device or batch_size may be set)")
    for flag, value in (("--eval-size", a.eval_size), ("--submission", a.submission), ("--components", a.components),
                        ("--fpr-rule", a.fpr_rule), ("--format", a.formats)):
        if value:
            raise SynboostError(f"{flag} is not used by --calibrate (it scores the maps as infer writes them, at the "
                                "labels' size; tpr95 is the first threshold with TPR >= 95 %)")
    det = load_pipeline(a.pipeline, a.overrides)
    rec = calibrate(det, a.data, a.calibrate, max_images=a.max_images)
    store_threshold(a.pipeline, rec)
    o = rec["objects"]
    print(f"{rec['rule']} threshold of {rec['method']} on {rec['images']} images ({', '.join(rec['dataset'])}): "
          f"score > {rec['value']!r}")
    print(f"  pixels there: TPR {100 * rec['tpr']:.2f} %, FPR {100 * rec['fpr']:.2f} %, precision "
          f"{100 * rec['precision']:.2f} %, F1 {100 * rec['f1']:.2f} % (AP {100 * rec['ap']:.2f} %, FPR95 "
          f"{100 * rec['fpr95']:.2f} %)")
    print(f"  objects (>= {o['min_area']} px; GT >= {o['min_gt_size']} px): sIoU {100 * o['siou']:.1f}, PPV "
          f"{100 * o['ppv']:.1f}, mean F1 {100 * o['f1_mean']:.1f} ({o['n_pred']} predicted, {o['n_gt']} labelled)")
    if a.out:
        from synboost.data.io import write_json

        write_json(Path(a.out) / "calibration.json", rec)
    print(f"written to {a.pipeline} (score.threshold, score.calibration)"
          + (f" and {Path(a.out) / 'calibration.json'}" if a.out else "") + "; `synboost infer --objects` uses it")
    return print_skips([("skipped", s, None) for s in rec["skipped"]])


#: pipeline keys that change the anomaly maps (a calibrated threshold would not fit the file's maps)
_SCORING = ("score", "components", "detector", "method", "ensemble", "ensemble_weights", "input_size", "mc_samples",
            "segmenter", "pebal", "density", "generator", "dissimilarity", "perceptual_vgg")


def _file_method(pipeline: str) -> str:
    from synboost.detectors.detector import read_pipeline

    return read_pipeline(pipeline, note=False).score.method


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
    from synboost.detectors.detector import build_detector, pipeline_from_overrides

    return build_detector(pipeline_from_overrides(ov))
