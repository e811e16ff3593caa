"""``synboost infer``: a detector over a folder of images or over videos (resumable; ``--objects``: the obstacles
as boxes); ``synboost resynthesize``: a trained generator over a folder of label maps (``synthesize``: its old,
hidden name). Both exit 3 when inputs were skipped or ignored (or a video was cut short), after listing them."""
from __future__ import annotations

import argparse
from pathlib import Path

from synboost.cli.common import RESUMES, add_fresh, add_set, alias, no_resume, print_skips, skips_of
from synboost.errors import SynboostError


def _resynthesize_args(y: argparse.ArgumentParser) -> None:
    y.add_argument("--generator", required=True, help="generator.safetensors of `synboost train synthesis`")
    y.add_argument("--labels", required=True, help="folder of train-id label maps (*.png, 255 = ignore)")
    y.add_argument("--images", help="folder of the real images (same names) for the style encoder")
    y.add_argument("--out", required=True)
    y.add_argument("--device", default="auto")
    y.set_defaults(run=run, interrupt=no_resume("resynthesize"))


def register(sub) -> None:
    """``infer`` and ``resynthesize`` (and the hidden ``synthesize``)."""
    i = sub.add_parser("infer", help="anomaly maps for a folder of images or for videos (resumes by default, "
                                     "skips bad files)")
    i.add_argument("--pipeline", required=True, help="pipeline file")
    src = i.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="folder of images")
    src.add_argument("--video", help="a video file, or a folder of videos: <out>/<stem>/overlay.mp4 at the input "
                                     "frame rate (+ maps/, objects.json)")
    i.add_argument("--out", required=True, help="output folder (maps/, heatmaps/, overlays/, report.json)")
    i.add_argument("--method", help="override the pipeline's method (msp, maxlogit, entropy, energy, sml, pebal, "
                                    "void, outlier_head, dirichlet, ...)")
    i.add_argument("--save", default=None,
                   help="images: npy,heatmap,overlay,segmentation (default npy,heatmap,overlay; 'none' with --format: "
                        "submission files only)")
    i.add_argument("--save-maps", action="store_true", help="video: also each frame's map (maps/<frame>.npz, "
                                                            "float16)")
    i.add_argument("--objects", action="store_true",
                   help="obstacles as objects: connected components of score > threshold (objects/<name>.json per "
                        "image, objects.json per video; boxes on the overlays)")
    i.add_argument("--threshold", type=float, help="--objects: the score threshold (default: the pipeline's "
                                                   "score.threshold from `synboost eval --calibrate`)")
    i.add_argument("--min-area", type=int, default=None, help="--objects: smallest object in pixels (default 50)")
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


def _objects(a: argparse.Namespace, ov: list[str], method: str):
    """The ObjectSettings of --objects (None without it); --threshold / --min-area alone are a mistake."""
    from synboost.jobs.calibrate import pipeline_objects
    from synboost.jobs.objects import DEFAULT_MIN_AREA

    if not a.objects:
        if a.threshold is not None or a.min_area is not None:
            raise SynboostError("--threshold / --min-area set how --objects cuts out objects; add --objects")
        return None
    return pipeline_objects(a.pipeline, ov, method, a.threshold,
                            DEFAULT_MIN_AREA if a.min_area is None else a.min_area)


def _infer(a: argparse.Namespace) -> int:
    from synboost.detectors.detector import load_pipeline, read_pipeline
    from synboost.jobs.infer import run_folder_distributed

    ov = list(a.overrides) + ([f"method={a.method}"] if a.method else [])
    if a.video:
        bad = [f for f, v in (("--save", a.save), ("--float16", a.float16), ("--format", a.formats),
                              ("--recursive", a.recursive)) if v]
        if bad:
            raise SynboostError(f"{', '.join(bad)}: for --images; a video gets overlay.mp4, --save-maps (float16 "
                                "maps) and --objects")
    elif a.save_maps:
        raise SynboostError("--save-maps is for --video; with --images use --save npy (and --float16)")
    objects = _objects(a, ov, read_pipeline(a.pipeline, ov, note=False).score.method)
    det = load_pipeline(a.pipeline, ov)
    if a.video:
        return _infer_video(a, det, objects)
    rep = run_folder_distributed(det, a.images, a.out, recursive=a.recursive, resume=not a.fresh,
                                 save=a.save or "npy,heatmap,overlay", float16=a.float16, objects=objects,
                                 info={"pipeline": str(a.pipeline)},
                                 formats=a.formats or (), submission_dir=a.submission, method_name=a.method_name,
                                 dataset_name=a.dataset_name)
    c = rep["counts"]
    ignored = c.get("ignored", len(rep.get("ignored", [])))
    print(f"{c['done']} done, {c['done_earlier']} done earlier, {c['skipped']} skipped"
          + (f", {ignored} ignored" if ignored else "") + f" -> {a.out}/ (report.json)")
    _say_objects(objects)
    if rep.get("formats"):
        print(f"submission ({', '.join(rep['formats'])}) in {rep['submission_dir']}/"
              + (f" (SMIYC: anomaly_p/{rep['method_name']}/{rep['dataset_name']}/)" if "smiyc" in rep["formats"]
                 else ""))
    if rep.get("shard") and rep["shard"][0] != 0:  # another torchrun process: rank 0 lists the merged report
        return 0
    return print_skips(skips_of(rep, str(Path(a.out) / "report.json")))


def _say_objects(objects) -> None:
    if objects is not None:
        print(f"objects: score > {objects.threshold} ({objects.source}), {objects.min_area} px or more")


def _infer_video(a: argparse.Namespace, det, objects) -> int:
    from synboost.jobs.infer import resolve_shard
    from synboost.jobs.video import run_video

    if resolve_shard(None) is not None:
        raise SynboostError("--video runs in one process; start it without torchrun (one video per process: run "
                            "one `synboost infer --video` per file)")
    rep = run_video(det, a.video, a.out, save_maps=a.save_maps, objects=objects, resume=not a.fresh,
                    info={"pipeline": str(a.pipeline)})
    c = rep["counts"]
    print(f"{c['done']} videos done ({rep['frames']} frames, {rep['frames_per_s']:.1f} frames/s), "
          f"{c['done_earlier']} done earlier, {c['skipped']} skipped"
          + (f", {c['cut_short']} cut short" if c["cut_short"] else "")
          + (f", {c['ignored']} ignored" if c["ignored"] else "") + f" -> {a.out}/<video>/overlay.mp4 (report.json)")
    _say_objects(objects)
    return print_skips(skips_of(rep, str(Path(a.out) / "report.json")))


def _resynthesize(a: argparse.Namespace) -> int:
    from synboost.detectors.components import load_generator
    from synboost.jobs.resynthesize import synthesize_folder
    from synboost.runtime import pick_device

    gen = load_generator(a.generator, pick_device(a.device))
    rep = synthesize_folder(gen, a.labels, a.out, a.images)
    print(f"{len(rep['done'])} redrawn, {len(rep['skipped'])} skipped -> {a.out}/")
    return print_skips(skips_of(rep, str(Path(a.out) / "report.json")))
