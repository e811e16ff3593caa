"""A detector's networks run from the files of ``synboost export``: onnxruntime (CPU, CUDA, or TensorRT through its
execution provider) or OpenVINO (CPU, f32 or bf16) sessions wrapped as modules with the torch networks' call
signatures and attributes, so the rest of the detector (resizes, uncertainty maps, scores, fusion) is the same code
and the maps are comparable with the torch backend's.

Each exported file ``DIR/<network>.onnx`` / ``DIR/<network>.xml`` has a sidecar ``<file>.json`` (written last by
:mod:`synboost.jobs.export`) naming the checkpoint it came from by sha256: a detector refuses a file exported from
another checkpoint than the pipeline's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from synboost.errors import CheckpointError, ConfigError

#: the exported networks: the file stem of each and the detector attribute it replaces
FILES = {"segmenter": "model", "pebal": "pebal_model", "generator": "generator", "vgg": "vgg19",
         "dissimilarity": "dissim"}
#: attributes of the torch networks that the detector reads, copied onto the runtime modules
ATTRIBUTES = {"segmenter": ("num_classes", "outlier_training", "abstention", "HEAD"),
              "pebal": ("num_classes", "outlier_training", "abstention", "HEAD"),
              "generator": ("label_nc", "edge_channel", "use_vae", "out_size", "semantic_nc", "z_dim", "sh", "sw"),
              "vgg": (), "dissimilarity": ("priors", "num_classes", "semantic", "spade")}
INSTALL = "pip install 'synboost[export]'"


def require(module: str, what: str):
    """``import module``, or a :class:`ConfigError` naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{what} needs the '{module}' package, which is not installed: {INSTALL}") from None


class OrtSession:
    """One onnxruntime session; inputs and outputs bound to torch tensors on the detector's device (no copies
    through numpy where the output shapes follow from the inputs')."""

    def __init__(self, path: Path, device: torch.device, providers: Sequence):
        ort = require("onnxruntime", "backend onnxruntime")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.log_severity_level = 3
        self.sess = ort.InferenceSession(str(path), opts, providers=list(providers))
        self.device = device
        self.inputs = [(i.name, list(i.shape)) for i in self.sess.get_inputs()]
        self.outputs = [(o.name, list(o.shape)) for o in self.sess.get_outputs()]

    def __call__(self, feeds: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        dims: dict[str, int] = {}
        for name, shape in self.inputs:
            for d, v in zip(shape, feeds[name].shape):
                if isinstance(d, str):
                    dims[d] = int(v)
        shapes = [[dims.get(d) if isinstance(d, str) else d for d in shape] for _, shape in self.outputs]
        if any(not isinstance(d, int) for s in shapes for d in s):  # a shape the inputs do not give: via numpy
            outs = self.sess.run(None, {k: v.detach().cpu().numpy() for k, v in feeds.items()})
            return [torch.from_numpy(o).to(self.device) for o in outs]
        kind, index = self.device.type, self.device.index or 0
        b = self.sess.io_binding()
        keep = []
        for name, _ in self.inputs:
            t = feeds[name].detach().float().contiguous()
            keep.append(t)
            b.bind_input(name, kind, index, np.float32, list(t.shape), t.data_ptr())
        outs = [torch.empty(s, dtype=torch.float32, device=self.device) for s in shapes]
        for (name, _), t in zip(self.outputs, outs):
            b.bind_output(name, kind, index, np.float32, list(t.shape), t.data_ptr())
        self.sess.run_with_iobinding(b)
        return outs


class OpenVinoSession:
    """One OpenVINO model compiled for the CPU at the inference precision ``f32`` or ``bf16`` (set explicitly:
    OpenVINO's own default is bf16 on CPUs with bf16 units)."""

    def __init__(self, path: Path, device: torch.device, precision: str):
        ov = require("openvino", "backend openvino")
        if device.type != "cpu":
            raise ConfigError("backend openvino runs on the CPU: set defaults.device: cpu (or backend onnxruntime "
                              "/ tensorrt on CUDA)")
        self.device = device
        core = ov.Core()
        cfg = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
               "INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"}
        self.model = core.compile_model(str(path), "CPU", cfg)
        self.inputs = [(p.get_any_name(), [d.get_length() if d.is_static else None for d in p.get_partial_shape()])
                       for p in self.model.inputs]
        self.outputs = [(p.get_any_name(), None) for p in self.model.outputs]
        self.request = self.model.create_infer_request()

    def __call__(self, feeds: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        res = self.request.infer({k: v.detach().float().contiguous().cpu().numpy() for k, v in feeds.items()})
        return [torch.from_numpy(np.array(res[p])) for p in self.model.outputs]


class ExportedNet(nn.Module):
    """A runtime session with a torch network's interface: tensors in, tensors out on the detector's device.
    A session of a fixed batch size takes any batch (chunked, the last chunk padded); a fixed spatial size is
    checked with one error naming the fix."""

    def __init__(self, session, network: str, path: Path, attributes: Mapping):
        super().__init__()
        self.session, self.network, self.path = session, network, path
        self._anchor = nn.Parameter(torch.zeros(0, device=session.device), requires_grad=False)  # the device
        for k, v in attributes.items():
            setattr(self, k, v)

    def run(self, *tensors: torch.Tensor | None) -> list[torch.Tensor]:
        """The session's outputs for its inputs (in its input order; None inputs are left out)."""
        given = [t for t in tensors if t is not None]
        names = [n for n, _ in self.session.inputs]
        if len(given) < len(names):
            raise ValueError(f"{self.path}: takes {len(names)} inputs ({', '.join(names)}), got {len(given)}")
        feeds = dict(zip(names, given))
        fixed = self.session.inputs[0][1][0]
        for name, shape in self.session.inputs:
            have = list(feeds[name].shape)
            if any(isinstance(d, int) and d != h for d, h in zip(shape[1:], have[1:])):
                raise ConfigError(f"{self.path}: exported for {name} of shape {shape}, got {have}: export again "
                                  "with --dynamic, or give the pipeline score.input_size at the exported size")
        n = given[0].shape[0]
        if not isinstance(fixed, int) or fixed == n:
            return self.session(feeds)
        parts = []
        for k in range(0, n, fixed):
            chunk = {}
            for name, t in feeds.items():
                c = t[k:k + fixed]
                if c.shape[0] < fixed:
                    c = torch.cat([c, c[-1:].expand(fixed - c.shape[0], *c.shape[1:])])
                chunk[name] = c
            parts.append([o[:min(fixed, n - k)] for o in self.session(chunk)])
        return [torch.cat(outs) for outs in zip(*parts)]


class ExportedSegmenter(ExportedNet):
    """``forward(x, all_outputs=False)`` as :class:`~synboost.models.segmenter.DeepLabV3Plus` (the file holds all
    outputs; the inlier logits are the first ``num_classes``)."""

    def forward(self, x: torch.Tensor, all_outputs: bool = False) -> torch.Tensor:
        out = self.run(x)[0]
        return out if all_outputs else out[:, :self.num_classes]


class ExportedGenerator(ExportedNet):
    """``forward(onehot, image=None, deterministic=True)``: the deterministic resynthesis (z = mu of the style
    encoder, which the file holds)."""

    def forward(self, onehot: torch.Tensor, image: torch.Tensor | None = None, deterministic: bool = True):
        if not deterministic:
            raise ValueError(f"{self.path}: the exported generator is deterministic (z = mu)")
        return self.run(onehot, image)[0]


class ExportedVGG(ExportedNet):
    """``forward(x) -> [relu1_1, ..., relu5_1]`` as :class:`~synboost.models.vgg.VGG19Pyramid`."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.run(x)


class ExportedDissimilarity(ExportedNet):
    """``forward(image, synthesis, semantic, priors=None) -> (B, 2, H, W)`` as the dissimilarity network."""

    def forward(self, image, synthesis, semantic, priors=None) -> torch.Tensor:
        return self.run(image, synthesis, semantic, priors)[0]


WRAPPERS = {"segmenter": ExportedSegmenter, "pebal": ExportedSegmenter, "generator": ExportedGenerator,
            "vgg": ExportedVGG, "dissimilarity": ExportedDissimilarity}


def read_sidecar(path: Path) -> dict:
    """The sidecar of an exported file (``<file>.json``); refused, with the fix, when it is missing."""
    side = path.with_name(path.name + ".json")
    if not path.is_file() or not side.is_file():
        raise CheckpointError(f"{path}: no exported network here (or its export did not finish: no {side.name}); "
                              "run `synboost export PIPELINE --out FOLDER`")
    return json.loads(side.read_text())


def source_of(spec: str) -> dict:
    """What an export records of its source: a checkpoint file by sha256, or a keyword (``imagenet``,
    ``random``) for the perceptual VGG."""
    from synboost.hub.registry import sha256_of

    p = Path(spec)
    return {"path": str(p), "sha256": sha256_of(p)} if p.is_file() else {"spec": spec}


def _check_source(path: Path, side: dict, spec: str) -> None:
    have, now = side.get("source", {}), source_of(spec)
    same = have.get("sha256") == now.get("sha256") if "sha256" in now else have.get("spec") == now.get("spec")
    if not same:
        raise CheckpointError(f"{path}: exported from {have.get('path', have.get('spec'))}, not from the pipeline's "
                              f"{spec} (a different file): export the pipeline again (`synboost export`)")


def providers(backend: str, device: torch.device) -> list:
    """onnxruntime's execution providers for ``backend`` on ``device``; one error naming the install when the
    one asked for is not there (nothing falls back to the CPU unsaid)."""
    ort = require("onnxruntime", f"backend {backend}")
    have = ort.get_available_providers()
    if device.type == "cpu":
        if backend == "tensorrt":
            raise ConfigError("backend tensorrt runs on CUDA: set defaults.device: cuda")
        return ["CPUExecutionProvider"]
    want = (["TensorrtExecutionProvider"] if backend == "tensorrt" else []) + ["CUDAExecutionProvider"]
    missing = [p for p in want if p not in have]
    if missing:
        raise ConfigError(f"backend {backend} on {device}: onnxruntime has no {', '.join(missing)} (it has "
                          f"{', '.join(have)}); install onnxruntime-gpu (with TensorRT for tensorrt), or set "
                          "defaults.device: cpu")
    opts = {"device_id": device.index or 0}
    return [(p, dict(opts)) for p in want] + ["CPUExecutionProvider"]


def use_exported(det, backend: str, folder: str | Path, precision, sources: Mapping[str, str]) -> None:
    """Swap the networks of detector ``det`` for sessions of ``backend`` over the exported files in ``folder``
    (``sources``: the pipeline's component of each network, checked against the files' sidecars)."""
    from synboost.detectors.precision import NETWORKS, resolve_precision

    folder = Path(folder)
    if det.density is not None:
        raise ConfigError(f"backend {backend}: the embedding density reads the segmenter's inner layers, which an "
                          "exported segmenter does not give; use backend torch for a pipeline with 'density'")
    if det.method == "mcdropout":
        raise ConfigError(f"backend {backend}: mcdropout runs the segmenter with dropout on, which the exported "
                          "(eval-mode) graph does not have; use backend torch")
    dev = det.device
    prec = resolve_precision(precision, dev, det.amp, "openvino" if backend == "openvino" else backend)
    prov = providers(backend, dev) if backend != "openvino" else None
    for network, attr in FILES.items():
        torch_net = getattr(det, attr, None)
        if torch_net is None:
            continue
        path = folder / f"{network}.{'xml' if backend == 'openvino' else 'onnx'}"
        side = read_sidecar(path)
        _check_source(path, side, sources[network])
        dtype = prec["segmenter" if network == "pebal" else network]
        session = OpenVinoSession(path, dev, dtype) if backend == "openvino" else OrtSession(path, dev, prov)
        attrs = {k: getattr(torch_net, k) for k in ATTRIBUTES[network] if hasattr(torch_net, k)}
        if network == "generator":  # style_encoder_missing reads it; the file holds the encoder when there is one
            attrs["encoder"] = nn.Identity() if getattr(torch_net, "encoder", None) is not None else None
        setattr(det, attr, WRAPPERS[network](session, network, path, attrs))
    det.backend, det.shared_trunk = backend, False
    det.precision = {n: prec[n] for n in NETWORKS}


def unavailable(backend: str, precision: str, device: torch.device) -> str:
    """Why ``backend`` cannot run networks at ``precision`` (fp32 | bf16) on ``device`` here ("" when it can):
    for listing what a machine lacks (the benchmarks) without trying."""
    import importlib.util

    from synboost.runtime import bf16_supported, cpu_bf16_supported

    if backend == "torch":
        return "" if precision == "fp32" or bf16_supported(device) else "no bf16 unit on this device"
    if backend == "openvino":
        if device.type != "cpu":
            return "OpenVINO runs on the CPU"
        if importlib.util.find_spec("openvino") is None:
            return f"openvino not installed ({INSTALL})"
        return "" if precision == "fp32" or cpu_bf16_supported() else "no bf16 unit on this CPU"
    if any(importlib.util.find_spec(m) is None for m in ("onnxruntime", "onnx", "onnxscript")):
        return f"onnxruntime / onnx / onnxscript not installed ({INSTALL})"
    import onnxruntime

    have = onnxruntime.get_available_providers()
    if backend == "tensorrt" and (device.type != "cuda" or "TensorrtExecutionProvider" not in have):
        return "no TensorRT execution provider (CUDA, onnxruntime-gpu with TensorRT)"
    if device.type == "cuda" and "CUDAExecutionProvider" not in have:
        return "onnxruntime without the CUDA execution provider (pip install onnxruntime-gpu)"
    return ""
