"""``synboost export``: every network of a pipeline (segmenter, a PEBAL fine-tune beside it, the generator with its
style encoder, the perceptual VGG19, the dissimilarity network), or one checkpoint, to ONNX (``torch.onnx.export``,
the dynamo exporter) and to OpenVINO IR (``openvino.convert_model`` of the ONNX file, weights kept f32).

Before export, spectral norm is folded into the weights (``remove_spectral_norm``: in eval mode the hook divides the
weight by the sigma of its stored vectors, with no power iteration, so the folded network computes the same numbers)
and the copy is float32, NCHW, on the CPU. Shapes are fixed (the batch is then any: a runtime chunks and pads) or
dynamic (``dynamic=True``: batch, and the segmenter's height and width).

Each file is checked when written: the PyTorch network and the runtime (onnxruntime on the CPU; OpenVINO at f32)
on the same real inputs, captured at each network's call while the pipeline scores images (a folder's, else scenes
of the synthetic world); the figures (max abs difference, Spearman correlation of the outputs, share of equal
argmax labels) go into the sidecar ``<file>.json``, written last, which the runtimes read
(:mod:`synboost.detectors.runtimes`). ``DIR/pipeline.yaml`` is the pipeline on ``backend: onnxruntime``.
"""
from __future__ import annotations

import copy
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from synboost.data.io import write_json
from synboost.detectors.runtimes import ATTRIBUTES, INSTALL, WRAPPERS, OpenVinoSession, OrtSession, require, source_of
from synboost.errors import CheckpointError, ConfigError, SynboostError

#: the input and output names of each exported network
INPUTS = {"segmenter": ("image",), "pebal": ("image",), "generator": ("onehot", "image"), "vgg": ("image",),
          "dissimilarity": ("image", "synthesis", "semantic", "priors")}
OUTPUTS = {"segmenter": ("logits",), "pebal": ("logits",), "generator": ("synthesis",),
           "vgg": tuple(f"relu{i}_1" for i in range(1, 6)), "dissimilarity": ("logits",)}
FORMATS = ("onnx", "openvino")
#: a check below these is reported with a warning line (the file is still written)
SPEARMAN_MIN, LABELS_MIN = 0.999, 0.99


class Graph(nn.Module):
    """The forward of one network as it is exported: all segmenter outputs, the deterministic resynthesis
    (z = mu), the VGG pyramid as a tuple, the dissimilarity logits."""

    def __init__(self, net: nn.Module, network: str):
        super().__init__()
        self.net, self.network = net, network

    def forward(self, *xs: torch.Tensor):
        if self.network in ("segmenter", "pebal"):
            return self.net(xs[0], all_outputs=True)
        if self.network == "generator":
            return self.net(xs[0], xs[1] if len(xs) > 1 else None, deterministic=True)
        if self.network == "vgg":
            return tuple(self.net(xs[0]))
        return self.net(*xs)


def fold_spectral_norm(net: nn.Module) -> tuple[nn.Module, int]:
    """A float32 NCHW CPU copy of ``net`` in eval mode with every spectral norm folded into its weight (hook or
    parametrization), and how many there were."""
    from synboost.detectors.freeze import fold_spectral_norm_

    net = copy.deepcopy(net).cpu().float().eval().to(memory_format=torch.contiguous_format)
    return net, fold_spectral_norm_(net)


def spearman(a: torch.Tensor, b: torch.Tensor, most: int = 200_000) -> float:
    """Spearman rank correlation of two tensors' values (an even subsample of at most ``most``), ties given their
    average rank (``scipy.stats.rankdata``): a ReLU output's many exact zeros are one tied group, not an
    arbitrary order that float noise of 1e-6 would reshuffle."""
    from scipy.stats import rankdata

    a, b = a.detach().float().flatten().cpu(), b.detach().float().flatten().cpu()
    step = max(1, a.numel() // most)
    a, b = a[::step].numpy(), b[::step].numpy()
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / den) if den > 0 else float(np.array_equal(a, b))


def agreement(ref: torch.Tensor, got: torch.Tensor, labels: bool) -> dict:
    """max abs difference, Spearman, and (for label outputs) the share of pixels with the same argmax."""
    ref, got = ref.float().cpu(), got.float().cpu()
    out = {"max_abs_diff": float((ref - got).abs().max()), "spearman": spearman(ref, got),
           "ref_max_abs": float(ref.abs().max())}
    out["argmax_equal"] = float((ref.argmax(1) == got.argmax(1)).float().mean()) if labels else None
    return out


def scenes(n: int, size: tuple[int, int], folder: str | None = None) -> tuple[list[np.ndarray], str]:
    """``n`` RGB uint8 images at ``size`` (H, W): a folder's first images (resized), else synthetic-world scenes
    with out-of-distribution objects; and a description of them for the sidecar."""
    import cv2

    if folder:
        from synboost.data.io import list_images, read_image

        paths = list_images(folder)[:n]
        if not paths:
            raise ConfigError(f"{folder}: no images to check the export on (give --images a folder of images)")
        ims = [cv2.resize(read_image(p), (size[1], size[0]), interpolation=cv2.INTER_AREA) for p in paths]
        return ims, f"{len(ims)} images of {folder} resized to {size[0]}x{size[1]}"
    from synboost.data.synthetic import generate_scene

    ims = [generate_scene(1000 + i, size[0], size[1], n_ood=2).image for i in range(n)]
    return ims, f"{n} synthetic-world scenes at {size[0]}x{size[1]} with out-of-distribution objects"


def _capture(det, images: list[np.ndarray]) -> dict[str, tuple[torch.Tensor, ...]]:
    """The real inputs of each network while ``det`` scores ``images`` (forward pre-hooks)."""
    from synboost.tensors import images_to_batch

    got: dict[str, tuple] = {"segmenter": (images_to_batch(images, det.device, det.input_size),)}
    if det.pebal_model is not None:
        got["pebal"] = got["segmenter"]
    nets = {n: getattr(det, a, None) for n, a in (("generator", "generator"), ("vgg", "vgg19"),
                                                   ("dissimilarity", "dissim"))}
    nets = {n: m for n, m in nets.items() if m is not None}
    if not nets:
        return got
    hooks = []
    for name, net in nets.items():
        def hook(_m, args, kwargs, name=name):
            args = list(args)
            if name == "generator" and len(args) < 2:
                args.append(kwargs.get("image"))
            got.setdefault(name, tuple(a.detach().float().clone() for a in args if isinstance(a, torch.Tensor)))
        hooks.append(net.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        det.run(images, ["synboost"])
    finally:
        for h in hooks:
            h.remove()
    return got


def _batch(inputs: Sequence[torch.Tensor], n: int) -> tuple[torch.Tensor, ...]:
    """The inputs with batch ``n`` (the first ``n``, or repeated to ``n``)."""
    reps = -(-n // inputs[0].shape[0])
    return tuple(t.repeat(reps, *([1] * (t.dim() - 1)))[:n].contiguous() for t in inputs)


def export_onnx(net: nn.Module, network: str, inputs: Sequence[torch.Tensor], path: Path, dynamic: bool) -> dict:
    """Write ``path`` (+ ``path.data``, the weights) from ``net`` traced on ``inputs``; returns what the sidecar
    records of the export."""
    folded, n_sn = fold_spectral_norm(net)
    names = INPUTS[network][:len(inputs)]
    dyn = None
    if dynamic:
        spatial = {2: "height", 3: "width"} if network in ("segmenter", "pebal") else {}
        dyn = (tuple({0: "batch", **spatial} for _ in inputs),)  # Graph.forward(*xs): one tuple of inputs
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(Graph(folded, network).eval(), tuple(inputs), str(path), input_names=list(names),
                              output_names=list(OUTPUTS[network]), dynamo=True, dynamic_shapes=dyn, verbose=False,
                              external_data=True)
    except Exception as e:  # the exporter's own message starts with advice; the cause is its "<class ...>:" line
        lines = [x for x in str(e).strip().splitlines() if x.strip()] or [""]
        first = next((x for x in lines if x.startswith("<class")), lines[0])[:300]
        raise SynboostError(f"{network}: torch.onnx.export failed ({type(e).__name__}: {first}); this network "
                            "cannot be exported") from None
    return {"inputs": {n: list(t.shape) for n, t in zip(names, inputs)}, "dynamic": dynamic,
            "spectral_norm_folded": n_sn, "torch": torch.__version__}


def to_openvino(onnx_path: Path) -> Path:
    """The OpenVINO IR (``.xml`` + ``.bin``, f32 weights) of an ONNX file beside it."""
    ov = require("openvino", "export to OpenVINO IR")
    xml = onnx_path.with_suffix(".xml")
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
    return xml


def check(path: Path, fmt: str, net: nn.Module, network: str, inputs: Sequence[torch.Tensor]) -> dict:
    """The agreement of the file's runtime with the PyTorch network (float32, eval) on ``inputs``."""
    import importlib.metadata as md

    cpu = torch.device("cpu")
    session = (OrtSession(path, cpu, ["CPUExecutionProvider"]) if fmt == "onnx"
               else OpenVinoSession(path, cpu, "fp32"))
    wrapped = WRAPPERS[network](session, network, path, {})
    with torch.no_grad():
        ref = Graph(net, network)(*inputs)
        got = wrapped.run(*inputs)
    ref = list(ref) if isinstance(ref, (tuple, list)) else [ref]
    labels = network in ("segmenter", "pebal", "dissimilarity")
    runtime = "onnxruntime" if fmt == "onnx" else "openvino"
    return {"runtime": f"{runtime} {md.version(runtime)} (CPU, f32)",
            "outputs": {n: agreement(r, g, labels) for n, r, g in zip(OUTPUTS[network], ref, got)}}


def _formats(formats: Sequence[str] | None) -> list[str]:
    """The formats to write (ONNX always: OpenVINO IR is converted from it); the packages each needs are there,
    or one error naming the install."""
    require("onnx", "export to ONNX")
    require("onnxscript", "export to ONNX (torch's exporter)")
    require("onnxruntime", "the check of an ONNX export")
    if formats:
        bad = [f for f in formats if f not in FORMATS]
        if bad:
            raise ConfigError(f"export format '{bad[0]}' is not one of {', '.join(FORMATS)}")
        if "openvino" in formats:
            require("openvino", "export to OpenVINO IR")
        return list(dict.fromkeys(["onnx", *formats]))
    try:
        import openvino  # noqa: F401
    except ImportError:
        print(f"note: openvino is not installed: ONNX files only ({INSTALL} adds OpenVINO IR)", file=sys.stderr)
        return ["onnx"]
    return list(FORMATS)


def export_networks(nets: dict[str, nn.Module], inputs: dict[str, tuple], sources: dict[str, str], out: Path,
                    formats: Sequence[str], dynamic: bool, batch: int, described: str) -> dict:
    """Export, check and describe each network of ``nets`` (network -> module) on its real ``inputs``."""
    summary = {}
    for network, net in nets.items():
        real = inputs[network]
        n = max(2, real[0].shape[0]) if dynamic else batch * (2 if network == "vgg" else 1)
        onnx_path = out / f"{network}.onnx"
        for old in (onnx_path, onnx_path.with_suffix(".xml")):  # a file without its sidecar is an unfinished one
            old.with_name(old.name + ".json").unlink(missing_ok=True)
        info = export_onnx(net, network, _batch(real, n), onnx_path, dynamic)
        attrs = {k: getattr(net, k) for k in ATTRIBUTES[network] if hasattr(net, k)}
        attrs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in attrs.items()}
        source = source_of(sources[network])
        for fmt in formats:
            path = onnx_path if fmt == "onnx" else to_openvino(onnx_path)
            side = {"network": network, "format": fmt, "file": path.name, "source": source,
                    **info, "attributes": attrs, "check": {"inputs": described, **check(path, fmt, net, network, real)}}
            write_json(path.with_name(path.name + ".json"), side)
            summary[f"{network}.{fmt}"] = side
            for name, fig in side["check"]["outputs"].items():
                label = "" if fig["argmax_equal"] is None else f", equal argmax {100 * fig['argmax_equal']:.2f} %"
                print(f"  {path.name} [{name}]: max |diff| {fig['max_abs_diff']:.2e}, Spearman "
                      f"{fig['spearman']:.6f}{label}")
                if fig["spearman"] < SPEARMAN_MIN or (fig["argmax_equal"] or 1.0) < LABELS_MIN:
                    print(f"warning: {path}: {name} agrees less with PyTorch than expected (Spearman "
                          f"{fig['spearman']:.4f}); see {path.name}.json", file=sys.stderr)
    return summary


def refuse(cfg) -> None:
    """A :class:`ConfigError` for a pipeline that cannot be exported, naming why and what to do."""
    if cfg.defaults.backend != "torch":
        raise ConfigError(f"defaults.backend is '{cfg.defaults.backend}': this pipeline already runs exported files;"
                          " export the pipeline that runs in torch")
    if cfg.components.density:
        raise ConfigError("components.density: the embedding density reads the segmenter's inner layers, which an "
                          "exported segmenter does not give; remove 'density' from the pipeline to export it")
    if cfg.score.method == "mcdropout":
        raise ConfigError("score.method mcdropout runs the segmenter with dropout on, which an exported (eval-mode) "
                          "graph does not have; set another method (--set score.method=entropy) to export")


#: each exported network and the detector attribute that holds it
DETECTOR_ATTRIBUTES = (("segmenter", "model"), ("pebal", "pebal_model"), ("generator", "generator"), ("vgg", "vgg19"),
                       ("dissimilarity", "dissim"))


def networks_of(det) -> dict[str, nn.Module]:
    """The networks of a detector by exported name (those it has: a post-hoc detector has the segmenter only)."""
    return {n: getattr(det, a) for n, a in DETECTOR_ATTRIBUTES if getattr(det, a, None) is not None}


def export_pipeline(pipeline: str | os.PathLike, out: str | os.PathLike, formats: Sequence[str] | None = None,
                    dynamic: bool = False, size: Sequence[int] | None = None, batch: int | None = None,
                    images: str | None = None, overrides: Sequence[str] = (), check_images: int = 2) -> dict:
    """Export every network of a pipeline file into ``out`` (see the module docstring); writes
    ``out/pipeline.yaml`` on ``backend: onnxruntime``. Returns the sidecars by ``<network>.<format>``."""
    from synboost.config import save_config
    from synboost.detectors.detector import build_detector, component_sources, read_pipeline

    cfg = read_pipeline(pipeline, overrides)
    refuse(cfg)
    fmts = _formats(formats)
    base, out = Path(pipeline).resolve().parent, Path(out)
    seg_size = tuple(cfg.score.input_size or size or ())
    if not seg_size and not dynamic:
        raise ConfigError("a fixed-shape export needs the segmenter's input size: give --size H W (or "
                          "score.input_size in the pipeline), or export with --dynamic")
    det = build_detector(cfg, base, device="cpu", precision="fp32", compile=False, channels_last=False,
                         freeze=False)  # the checkpoints as they are: the export folds spectral norm itself
    ims, described = scenes(check_images, tuple(size or seg_size or (256, 512)), images)
    inputs = _capture(det, ims)
    nets = networks_of(det)
    sources = component_sources(cfg, base)
    summary = export_networks(nets, inputs, sources, out, fmts, dynamic, batch or cfg.defaults.batch_size, described)
    new = copy.deepcopy(cfg)
    for component, network in (("segmenter", "segmenter"), ("pebal", "pebal"), ("generator", "generator"),
                               ("dissimilarity", "dissimilarity"), ("perceptual_vgg", "vgg")):
        p = Path(sources.get(network) or "")
        if sources.get(network) and p.is_file():  # the copy points at the same checkpoints from its own folder
            setattr(new.components, component, os.path.relpath(p.resolve(), out.resolve()))
    new.defaults.backend, new.defaults.exported = "onnxruntime", "."
    save_config(new, out / "pipeline.yaml")
    print(f"wrote {len(summary)} files to {out} and {out / 'pipeline.yaml'} (defaults.backend: onnxruntime; "
          f"--set backend=openvino runs the IR files)")
    return summary


def export_checkpoint(path: str | os.PathLike, out: str | os.PathLike, formats: Sequence[str] | None = None,
                      dynamic: bool = False, size: Sequence[int] | None = None, batch: int = 1,
                      images: str | None = None, check_images: int = 2) -> dict:
    """Export one checkpoint (a segmenter, generator or dissimilarity network) into ``out``; its real inputs are
    made from images (a folder's, else synthetic scenes) and their ground-truth-free stand-ins."""
    from synboost.detectors.components import load_component
    from synboost.hub.checkpoint import read_meta

    kind = read_meta(path).get("kind")
    if kind not in ("segmenter", "generator", "dissimilarity"):
        raise CheckpointError(f"{path}: a '{kind}' checkpoint; export takes a segmenter, generator or dissimilarity "
                              "checkpoint, or a pipeline file")
    fmts = _formats(formats)
    net, meta = load_component(path, kind, "cpu")
    if kind == "segmenter":
        if not size and not dynamic:
            raise ConfigError("a fixed-shape export of a segmenter needs its input size: give --size H W, or "
                              "export with --dynamic")
        hw = tuple(size or (256, 512))
    else:
        hw = tuple(meta["size"])
    ims, described = scenes(check_images, hw, images)
    inputs = {kind: _stand_in_inputs(kind, net, ims)}
    network = "pebal" if kind == "segmenter" and getattr(net, "abstention", False) else kind
    inputs[network] = inputs[kind]
    return export_networks({network: net}, inputs, {network: str(path)}, Path(out), fmts, dynamic, batch, described)


def _stand_in_inputs(kind: str, net: nn.Module, ims: list[np.ndarray]) -> tuple[torch.Tensor, ...]:
    """A checkpoint's inputs from images alone: the image batch (segmenter); the image's coarse colour labels
    and the image (generator); the image, a blurred copy as its resynthesis, those labels and smooth priors
    (dissimilarity)."""
    import torch.nn.functional as F

    from synboost.models.generator import labels_to_onehot
    from synboost.tensors import imagenet_normalize01, images_to_batch

    x = images_to_batch(ims, "cpu")
    if kind == "segmenter":
        return (x,)
    img01 = torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).float() / 255
    labels = (img01.mean(1) * 18.999).long()  # 19 bands of brightness: a label map with real-image structure
    if kind == "generator":
        got = []
        h = net.register_forward_pre_hook(lambda _m, a, k: got.append((a[0], a[1] if len(a) > 1 else k.get("image"))),
                                          with_kwargs=True)
        from synboost.models.generator import resynthesize

        try:
            resynthesize(net, labels, img01)
        finally:
            h.remove()
        return tuple(t for t in got[0] if t is not None)
    blur = F.avg_pool2d(img01, 5, 1, 2)
    priors = F.avg_pool2d(torch.rand(len(ims), len(net.priors), *img01.shape[2:]), 9, 1, 4)
    onehot = labels_to_onehot(labels, 19)
    return (imagenet_normalize01(img01), imagenet_normalize01(blur), onehot) + ((priors,) if net.priors else ())


def read_check(path: str | os.PathLike) -> dict:
    """The sidecar of an exported file (its check figures included)."""
    return json.loads(Path(str(path) + ".json").read_text())
