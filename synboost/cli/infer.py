"""``synboost infer``: a detector over a folder of images (resumable); ``synboost resynthesize``: a trained
generator over a folder of label maps (``synthesize``: its old, hidden name). Both exit 3 when inputs were
skipped or ignored, after listing them."""
from __future__ import annotations

import argparse
from pathlib import Path

from synboost.cli.common import RESUMES, add_fresh, add_set, alias, no_resume, print_skips, skips_of


def _resynthesize_args(y: argparse.ArgumentParser) -> None:
    y.add_argument("--generator", required=True, help="generator.safetensors of `synboost train synthesis`")
    y.add_argument("--labels", required=True, help="folder of train-id label maps (*.png, 255 = ignore)")
    y.add_argument("--images", help="folder of the real images (same names) for the style encoder")
    y.add_argument("--out", required=True)
    y.add_argument("--device", default="auto")
    y.set_defaults(run=run, interrupt=no_resume("resynthesize"))


def register(sub) -> None:
    """``infer`` and ``resynthesize`` (and the hidden ``synthesize``)."""
    i = sub.add_parser("infer", help="anomaly maps for a folder of images (resumes by default, skips bad files)")
    i.add_argument("--pipeline", required=True, help="pipeline file")
    i.add_argument("--images", required=True, help="folder of images")
    i.add_argument("--out", required=True, help="output folder (maps/, heatmaps/, overlays/, report.json)")
    i.add_argument("--method", help="override the pipeline's method (msp, maxlogit, entropy, energy, sml, pebal, "
                                    "void, outlier_head, dirichlet, ...)")
    i.add_argument("--save", default="npy,heatmap,overlay",
                   help="npy,heatmap,overlay,segmentation ('none' with --format: submission files only)")
    i.add_argument("--float16", action="store_true", help="write maps as float16 .npz")
    i.add_argument("--format", dest="formats", help="benchmark submission files too: smiyc (anomaly_p/<method>/"
                                                    "<dataset>/<fid>.hdf5), fishyscapes (<id>_anomaly.npy + "
                                                    "<id>_segmentation.npy); comma list")
    i.add_argument("--submission", metavar="DIR", help="where the --format files go (default: --out)")
    i.add_argument("--method-name", help="SMIYC: the method folder (default: the pipeline's method)")
    i.add_argument("--dataset-name", help="SMIYC: the dataset folder (default from the images folder: "
                                          "AnomalyTrack-all, ObstacleTrack-all, LostAndFound-test)")
    i.add_argument("--recursive", action="store_true")
    add_fresh(i, "recompute images whose outputs already exist", "infer", old="--no-resume")
    add_set(i, "a pipeline value, e.g. --set score.method=energy (repeatable)")
    i.set_defaults(run=run, interrupt=RESUMES)

    _resynthesize_args(sub.add_parser("resynthesize", help="redraw label maps with a trained generator"))
    _resynthesize_args(alias(sub, "synthesize", "synboost synthesize", "synboost resynthesize"))


def run(a: argparse.Namespace) -> int:
    """``infer`` or ``resynthesize``; the exit status (3: finished, with skips)."""
    return _infer(a) if a.verb == "infer" else _resynthesize(a)


def _infer(a: argparse.Namespace) -> int:
    from synboost.detectors.pipeline import load_pipeline
    from synboost.jobs.infer import run_folder_distributed

    ov = list(a.overrides) + ([f"method={a.method}"] if a.method else [])
    det = load_pipeline(a.pipeline, ov)
    rep = run_folder_distributed(det, a.images, a.out, recursive=a.recursive, resume=not a.fresh,
                                 save=a.save, float16=a.float16, info={"pipeline": str(a.pipeline)},
                                 formats=a.formats or (), submission_dir=a.submission, method_name=a.method_name,
                                 dataset_name=a.dataset_name)
    c = rep["counts"]
    ignored = c.get("ignored", len(rep.get("ignored", [])))
    print(f"{c['done']} done, {c['done_earlier']} done earlier, {c['skipped']} skipped"
          + (f", {ignored} ignored" if ignored else "") + f" -> {a.out}/ (report.json)")
    if rep.get("formats"):
        print(f"submission ({', '.join(rep['formats'])}) in {rep['submission_dir']}/"
              + (f" (SMIYC: anomaly_p/{rep['method_name']}/{rep['dataset_name']}/)" if "smiyc" in rep["formats"]
                 else ""))
    if rep.get("shard") and rep["shard"][0] != 0:  # another torchrun process: rank 0 lists the merged report
        return 0
    return print_skips(skips_of(rep, str(Path(a.out) / "report.json")))


def _resynthesize(a: argparse.Namespace) -> int:
    from synboost.detectors.components import load_generator
    from synboost.jobs.resynthesize import synthesize_folder
    from synboost.runtime import pick_device

    gen = load_generator(a.generator, pick_device(a.device))
    rep = synthesize_folder(gen, a.labels, a.out, a.images)
    print(f"{len(rep['done'])} redrawn, {len(rep['skipped'])} skipped -> {a.out}/")
    return print_skips(skips_of(rep, str(Path(a.out) / "report.json")))
