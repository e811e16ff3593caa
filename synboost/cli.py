"""The face: ``synboost <verb> ...``. Each verb parses its arguments and makes one call; no logic lives here.

Errors a user can cause print one line (``error: ...``) and exit with status 2; Ctrl-C exits with 130 and says
how to resume.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from synboost.errors import SynboostError


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        return h, w
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 256x512; got '{text}'") from None


def _add_config(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--config", required=required, help="YAML config (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=1e-4 (repeatable)")


def cmd_data_synth(a) -> None:
    from synboost.config import SyntheticWorldConfig, load_config
    from synboost.data.synthetic import write_world

    ov = list(a.overrides)
    for key, val in (("out", a.out), ("n", a.n), ("seed", a.seed)):
        if val is not None:
            ov.append(f"{key}={val}")
    if a.size:
        ov += [f"height={a.size[0]}", f"width={a.size[1]}"]
    cfg = load_config(SyntheticWorldConfig, a.config, ov)
    meta = write_world(cfg)
    print(f"wrote {sum(meta['splits'].values())} scenes to {cfg.out} ({meta['splits']})")


def cmd_train(a) -> None:
    from synboost.config import DissimilarityConfig, PebalConfig, SegmentationConfig, SynthesisConfig, load_config

    if a.stage == "outlier":
        from synboost.config import OutlierTrainingConfig
        from synboost.training.outlier import train_outlier

        s = train_outlier(load_config(OutlierTrainingConfig, a.config, a.overrides), resume=a.resume)
        print(f"re-trained segmenter: {s.get('segmenter', s['last'])}; validation {s['best_val']}")
        if s.get("base_val"):
            print(f"the starting segmenter: {s['base_val']}")
        if "pipeline" in s:
            print(f"pipeline file: {s['pipeline']}")
    elif a.stage == "pebal":
        from synboost.training.pebal import train_pebal

        s = train_pebal(load_config(PebalConfig, a.config, a.overrides), resume=a.resume)
        print(f"PEBAL: {s.get('pebal', s['last'])}; validation {s['best_val']}")
        if "pipeline" in s:
            print(f"pipeline file: {s['pipeline']} (method pebal, the base segmenter's baselines beside it)")
    elif a.stage == "dissimilarity":
        from synboost.training.dissimilarity import train_dissimilarity

        s = train_dissimilarity(load_config(DissimilarityConfig, a.config, a.overrides), resume=a.resume)
        print(f"dissimilarity: {s.get('dissimilarity', s['last'])}; held-out {s['val']}")
        if "pipeline" in s:
            print(f"SynBoost pipeline file: {s['pipeline']}")
    elif a.stage == "synthesis":
        from synboost.training.synthesis import train_synthesis

        s = train_synthesis(load_config(SynthesisConfig, a.config, a.overrides), resume=a.resume)
        print(f"generator: {s.get('generator', s['last'])}; validation {s['val']}")
    elif a.stage == "segmentation":
        from synboost.training.segmentation import train_segmentation

        cfg = load_config(SegmentationConfig, a.config, a.overrides)
        s = train_segmentation(cfg, resume=a.resume)
        print(f"segmenter: {s.get('segmenter', s['last'])}; validation {s['val']}")
        if "pipeline" in s:
            print(f"pipeline file: {s['pipeline']}")


def cmd_fit(a) -> None:
    from synboost.config import DensityConfig, load_config
    from synboost.training.density import fit_density

    s = fit_density(load_config(DensityConfig, a.config, a.overrides))
    print(f"density: {s['density']} ({s['images']} images; kNN bank {s['bank_size']} rows, {s['bank_mb']:.1f} MB; "
          f"{s['seconds']['statistics'] + s['seconds']['regression']:.0f} s)")
    print(f"pipeline file: {s['pipeline']} (methods knn, nll_single, nll_min, density_logreg beside the baselines)")


def cmd_eval(a) -> None:
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


def _eval_config(a) -> None:
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


def _detector_from_segmenter(ov):
    from synboost.detectors.pipeline import build_detector, pipeline_from_overrides

    return build_detector(pipeline_from_overrides(ov))


def cmd_infer(a) -> None:
    from synboost.detectors.pipeline import load_pipeline
    from synboost.jobs.infer import run_folder_distributed

    ov = list(a.overrides) + ([f"method={a.method}"] if a.method else [])
    det = load_pipeline(a.pipeline, ov)
    rep = run_folder_distributed(det, a.images, a.out, recursive=a.recursive, resume=not a.no_resume,
                                 save=a.save, float16=a.float16, info={"pipeline": str(a.pipeline)},
                                 formats=a.formats or (), submission_dir=a.submission, method_name=a.method_name,
                                 dataset_name=a.dataset_name)
    c = rep["counts"]
    print(f"{c['done']} done, {c['done_earlier']} done earlier, {c['skipped']} skipped -> {a.out}/ (report.json)")
    if rep.get("formats"):
        print(f"submission ({', '.join(rep['formats'])}) in {rep['submission_dir']}/"
              + (f" (SMIYC: anomaly_p/{rep['method_name']}/{rep['dataset_name']}/)" if "smiyc" in rep["formats"]
                 else ""))
    for s in rep.get("skipped", [])[:10]:
        print(f"  skipped: {s['reason']}")


def cmd_synthesize(a) -> None:
    from synboost.detectors.components import load_generator
    from synboost.jobs.infer import synthesize_folder
    from synboost.runtime import pick_device

    gen = load_generator(a.generator, pick_device(a.device))
    rep = synthesize_folder(gen, a.labels, a.out, a.images)
    print(f"{len(rep['done'])} redrawn, {len(rep['skipped'])} skipped -> {a.out}/")


def cmd_demo(a) -> None:
    from synboost.config import DemoConfig, load_config
    from synboost.jobs.demo import run_demo

    cfg = load_config(DemoConfig, a.config, a.overrides)
    run_demo(cfg, quick=a.quick, resume=not a.fresh)


def cmd_ablate(a) -> None:
    from synboost.config import AblationConfig, load_config
    from synboost.jobs.ablate import run_ablation

    run_ablation(load_config(AblationConfig, a.config, a.overrides), resume=not a.fresh)


def cmd_bench(a) -> None:
    if a.what == "metrics":
        from synboost.bench.metrics import run_metrics_benchmark

        sizes = tuple(int(float(s)) for s in a.sizes.split(",")) if a.sizes else (20_000_000, 200_000_000)
        run_metrics_benchmark(sizes=sizes, out_json=a.out or "benchmarks/results/metrics.json")
    elif a.what == "segmenter":
        from synboost.bench.speed import run_segmenter_benchmark

        run_segmenter_benchmark(out_json=a.out or "benchmarks/results/segmenter.json", quick=a.quick, device=a.device)
    elif a.what == "synthesis":
        from synboost.bench.speed import run_synthesis_benchmark

        run_synthesis_benchmark(out_json=a.out or "benchmarks/results/synthesis.json", quick=a.quick, device=a.device)
    elif a.what == "pipeline":
        from synboost.bench.speed import run_pipeline_benchmark

        run_pipeline_benchmark(out_json=a.out or "benchmarks/results/pipeline.json", quick=a.quick, device=a.device,
                               size=tuple(a.size) if a.size else None, backbone=a.backbone)


def cmd_compare(a) -> None:
    from synboost.jobs.compare import compare, compare_table, parse_rows, run_compare

    if a.config:
        from synboost.config import CompareConfig, load_config

        run_compare(load_config(CompareConfig, a.config, a.overrides), resume=not a.fresh)
        return
    if not a.pipelines or not a.data:
        raise SynboostError("give --pipelines ROW... and --data SPEC... (or --config configs/compare/synthetic.yaml)")
    table = compare(parse_rows(a.pipelines), a.data, a.out, max_images=a.max_images)
    print(compare_table(table))
    if a.out:
        print(f"written to {a.out}/ (compare.md, compare.json, curves_<dataset>.png)")


def cmd_weights(a) -> None:
    from synboost.hub import registry

    m = registry.load_manifest(a.manifest)
    if a.what == "list":
        print(f"weights folder: {registry.weights_dir()} (SYNBOOST_WEIGHTS); manifest: {m.path}")
        for r in registry.status(m):
            state = "present" if r["present"] else "missing"
            imp = "" if r["imported"] is None else (", imported" if r["imported"] else ", not imported")
            print(f"  {r['name']:<28} {state}{imp:<15} {r['file']}")
    elif a.what == "verify":
        rows = registry.verify(m, a.names or None)
        for r in rows:
            extra = f" sha256 {r['sha256']} ({r['bytes']} bytes)" if "sha256" in r else ""
            print(f"  {r['name']:<28} {r['state']:<18} {r['file']}{extra}")
        if any(r["state"] == "MISMATCH" for r in rows):
            raise SynboostError("checksum mismatch: the file is corrupt or another version; download it again")
    elif a.what == "download":
        for name in a.names:
            print(f"{name}: {registry.download(m, name, a.url)}")
    elif a.what == "import":
        from synboost.importers import IMPORTERS

        for name in a.names:
            out = registry.import_weights(m, name, IMPORTERS, a.src, a.out)
            print(f"{name}: {out} (name it in a pipeline file as '{name}')")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="synboost", description="Pixel-wise anomaly segmentation of driving scenes.")
    sub = p.add_subparsers(dest="verb", required=True)

    d = sub.add_parser("data", help="datasets").add_subparsers(dest="what", required=True)
    s = d.add_parser("synth", help="write the procedural driving world (train/val/anomaly test splits)")
    s.add_argument("--out")
    s.add_argument("--n", type=int, help="number of scenes over all splits")
    s.add_argument("--size", type=_size, help="HxW, e.g. 256x512")
    s.add_argument("--seed", type=int)
    _add_config(s)
    s.set_defaults(fn=cmd_data_synth)

    t = sub.add_parser("train", help="train one stage")
    t.add_argument("stage", choices=["segmentation", "synthesis", "dissimilarity", "pebal", "outlier"],
                   help="outlier: re-train the whole segmenter with outlier data for method void, outlier_head or "
                        "dirichlet (configs/outlier/)")
    _add_config(t, required=True)
    t.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    t.set_defaults(fn=cmd_train)

    f = sub.add_parser("fit", help="fit a post-hoc model on a trained segmenter's features (no gradient training)")
    f.add_argument("what", choices=["density"], help="density: the Fishyscapes embedding-density baselines "
                                                     "(per-layer Gaussians, kNN bank, logistic regression)")
    _add_config(f, required=True)
    f.set_defaults(fn=cmd_fit)

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
                        "repeat; 'all'); "
                        "default: the pipeline's")
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
    e.add_argument("--eval-size", type=_size, help="HxW to score at (maps area-resized, labels nearest), e.g. "
                                                    "256x512 for SynBoost's protocol; default the labels' size")
    e.add_argument("--submission", metavar="DIR", help="also write each method's benchmark submission files here "
                                                       "(every frame, labelled or not)")
    e.add_argument("--format", dest="formats", help="submission formats: smiyc,fishyscapes (default: Fishyscapes "
                                                    "data -> fishyscapes, else smiyc)")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a pipeline value (with --config: a reproduction config value)")
    e.set_defaults(fn=cmd_eval)

    i = sub.add_parser("infer", help="anomaly maps for a folder of images (resumable, skips bad files)")
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
    i.add_argument("--no-resume", action="store_true", help="recompute images whose maps already exist")
    i.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    i.set_defaults(fn=cmd_infer)

    y = sub.add_parser("synthesize", help="redraw label maps with a trained generator")
    y.add_argument("--generator", required=True, help="generator.safetensors of `synboost train synthesis`")
    y.add_argument("--labels", required=True, help="folder of train-id label maps (*.png, 255 = ignore)")
    y.add_argument("--images", help="folder of the real images (same names) for the style encoder")
    y.add_argument("--out", required=True)
    y.add_argument("--device", default="auto")
    y.set_defaults(fn=cmd_synthesize)

    m = sub.add_parser("demo", help="the whole job on the embedded synthetic world (CPU, minutes)")
    _add_config(m)
    m.add_argument("--quick", action="store_true", help="a much smaller run (for smoke tests)")
    m.add_argument("--fresh", action="store_true", help="ignore results of an earlier demo run")
    m.set_defaults(fn=cmd_demo)

    ab = sub.add_parser("ablate", help="train and score the paper's ablation variants on the synthetic world")
    _add_config(ab)
    ab.add_argument("--fresh", action="store_true", help="retrain everything")
    ab.set_defaults(fn=cmd_ablate)

    c = sub.add_parser("compare", help="the papers' comparison table: one row per method, every dataset")
    c.add_argument("--pipelines", nargs="+", metavar="ROW",
                   help="[LABEL=]PIPELINE[:METHOD,...] per row (methods default to the pipeline's own)")
    c.add_argument("--data", nargs="+", metavar="SPEC", help="dataset specs KIND:DIR")
    c.add_argument("--out", help="folder for compare.md / compare.json / curves")
    c.add_argument("--max-images", type=int)
    _add_config(c)
    c.add_argument("--fresh", action="store_true", help="--config: retrain what was reused")
    c.set_defaults(fn=cmd_compare)

    wt = sub.add_parser("weights", help="known checkpoints: list, verify, download, import official files")
    wt.add_argument("what", choices=["list", "verify", "download", "import"])
    wt.add_argument("names", nargs="*", help="manifest names (weights/manifest.yaml)")
    wt.add_argument("--manifest", help="another manifest file")
    wt.add_argument("--url", help="download: another URL for the file")
    wt.add_argument("--src", help="import: the official file, if not where the manifest expects it")
    wt.add_argument("--out", help="import: output file (default <weights>/<name>.safetensors)")
    wt.set_defaults(fn=cmd_weights)

    b = sub.add_parser("bench", help="benchmarks (print a table, write JSON)")
    b.add_argument("what", choices=["metrics", "segmenter", "synthesis", "pipeline"])
    b.add_argument("--sizes", help="metrics: pixel counts, e.g. 20e6,200e6")
    b.add_argument("--out")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--device", default="auto", help="segmenter, synthesis, pipeline: auto | cpu | cuda")
    b.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="pipeline: input size (default 1024 2048 on CUDA, 512 1024 on the CPU)")
    b.add_argument("--backbone", help="pipeline: segmenter trunk (default wrn38 on CUDA, resnet101 on the CPU)")
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except SynboostError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command with --resume to continue where it stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
