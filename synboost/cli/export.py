"""``synboost export SOURCE --out DIR``: each network of a pipeline file (or one checkpoint) to ONNX and OpenVINO IR,
each file checked against PyTorch on real inputs (figures in its sidecar JSON)."""
from __future__ import annotations

import argparse

from synboost.cli.common import add_set, no_resume


def register(sub) -> None:
    """``export``."""
    p = sub.add_parser("export", help="export a pipeline's networks (or one checkpoint) to ONNX / OpenVINO IR",
                       description="Exports the segmenter (and a PEBAL fine-tune beside it), the generator with its "
                       "style encoder, the perceptual VGG19 and the dissimilarity network, spectral norm folded; "
                       "checks each file against PyTorch on real images (sidecar <file>.json) and writes "
                       "DIR/pipeline.yaml, which runs them (defaults.backend: onnxruntime; --set backend=openvino).")
    p.add_argument("source", help="a pipeline file (.yaml) or one checkpoint (.safetensors: segmenter, generator, "
                                  "dissimilarity)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", dest="formats", action="append", choices=["onnx", "openvino"],
                   help="onnx and/or openvino (repeatable; default: both when openvino is installed)")
    p.add_argument("--dynamic", action="store_true",
                   help="dynamic batch (and segmenter height / width) instead of fixed shapes")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="the segmenter's input size (fixed shapes; default: the pipeline's score.input_size)")
    p.add_argument("--batch", type=int, help="the fixed batch size (default: the pipeline's defaults.batch_size, 1 "
                                             "for a checkpoint); a runtime takes any batch")
    p.add_argument("--images", help="a folder of images to check the exports on (default: synthetic-world scenes)")
    add_set(p, "a pipeline value, e.g. --set score.input_size=[512,1024] (repeatable)")
    p.set_defaults(run=run, interrupt=no_resume("export"))


def run(a: argparse.Namespace) -> None:
    """One call to ``export_pipeline`` or ``export_checkpoint``."""
    from synboost.jobs.export import export_checkpoint, export_pipeline

    if a.source.endswith((".safetensors", ".pt", ".pth")):
        export_checkpoint(a.source, a.out, a.formats, a.dynamic, a.size, a.batch or 1, a.images)
    else:
        export_pipeline(a.source, a.out, a.formats, a.dynamic, a.size, a.batch, a.images, a.overrides)
