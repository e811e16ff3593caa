"""Bring your own segmenter: a segmenter spec file names any segmentation network, and
:func:`synboost.detectors.components.load_segmenter` loads it like one of our checkpoints, so it is the segmentation
stage of every detector (``components.segmenter`` of a pipeline file) and of the dissimilarity training data
(``segmenter`` of a dissimilarity config)::

    kind: synboost-segmenter-adapter
    source: torchvision:deeplabv3_mobilenet_v3_large   # or timm:NAME | huggingface:FOLDER | torchscript:FILE
                                                       #    | onnx:FILE | python:MODULE:CALLABLE (or FILE.py:CALLABLE)
    kwargs: {weights: null, weights_backbone: null, num_classes: 19}   # the builder's arguments
    weights: mobilenet.safetensors    # optional state dict: safetensors, or a torch file (read weights_only=True)
    weights_key: ""                   # the entry of a torch file that holds the state dict (e.g. state_dict)
    output_key: out                   # default: out (torchvision), logits (huggingface), none (a plain tensor)
    mean: [0.485, 0.456, 0.406]       # what the network expects of [0, 1] RGB (default ImageNet's)
    std: [0.229, 0.224, 0.225]
    input_size: []                    # [H, W] the network must see (a fixed-shape file); [] = the batch's own
    class_map: {}                     # network class -> train id or name (see synboost.detectors.adapter); {} = none
    seed: 0                           # the builder runs under this torch seed: random weights are the same
                                      # network in every process (training data and inference agree)

Paths in a spec (``weights``, the file or folder of the source, a ``.py`` module) resolve against the spec file's
folder. The network is probed once when it loads (one 1 x 3 x H x W batch of zeros) so that an output that is not
19 channels and has no class map, a missing key or a class map that does not fit is one line naming the spec
file at load time, not in the middle of a run. ``python:`` sources run the named code: trust a spec like a script.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from synboost.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from synboost.detectors.adapter import SegmenterAdapter
from synboost.errors import CheckpointError, ConfigError, SynboostError

SPEC_KIND = "synboost-segmenter-adapter"
#: a segmenter path with one of these suffixes is read as a spec
SPEC_SUFFIXES = (".yaml", ".yml")
#: source prefix -> what follows it
SOURCES = {"torchvision": "a torchvision builder name (torchvision.models.get_model)",
           "timm": "a timm model name (timm.create_model)",
           "huggingface": "a local folder of a Hugging Face semantic-segmentation model (transformers)",
           "torchscript": "a TorchScript file (torch.jit.save)",
           "onnx": "an ONNX file (run by onnxruntime)",
           "python": "MODULE:CALLABLE or FILE.py:CALLABLE returning an nn.Module"}
#: the output key a source takes when the spec gives none
DEFAULT_OUTPUT_KEY = {"torchvision": "out", "huggingface": "logits"}
#: the probe batch's size when the spec gives no input_size
PROBE_SIZE = (64, 128)
HINT = "see README 'Bring your own segmenter'"


@dataclasses.dataclass
class SegmenterSpec:
    """A segmenter spec file, read (see the module docstring); ``path`` is the file, ``base`` its folder."""

    source: str
    kind: str = SPEC_KIND
    kwargs: dict = dataclasses.field(default_factory=dict)
    weights: str = ""
    weights_key: str = ""
    output_key: Any = None
    mean: list = dataclasses.field(default_factory=lambda: IMAGENET_MEAN.tolist())
    std: list = dataclasses.field(default_factory=lambda: IMAGENET_STD.tolist())
    input_size: list = dataclasses.field(default_factory=list)
    class_map: Any = None
    seed: int = 0
    path: Path = Path("spec.yaml")

    @property
    def base(self) -> Path:
        return self.path.parent

    @property
    def scheme(self) -> str:
        return self.source.partition(":")[0]

    @property
    def target(self) -> str:
        return self.source.partition(":")[2]

    def resolve(self, p: str) -> Path:
        """A path of the spec: absolute, or relative to the spec file's folder (never the working directory)."""
        q = Path(p).expanduser()
        return q if q.is_absolute() else self.base / q


_FIELDS = tuple(f.name for f in dataclasses.fields(SegmenterSpec) if f.name != "path")


def is_segmenter_spec(path: str | os.PathLike) -> bool:
    """Whether a segmenter path is to be read as a spec file (by its suffix)."""
    return Path(path).suffix.lower() in SPEC_SUFFIXES


def refuse_spec(path: str | os.PathLike, stage: str) -> None:
    """One line for a training stage that needs the package's own segmenter checkpoint (its head is fine-tuned, its
    features or statistics read) when it is given a segmenter spec."""
    if path and is_segmenter_spec(path):
        from synboost.errors import ConfigError

        raise ConfigError(f"{path}: is a segmenter spec (bring-your-own network); {stage} needs the "
                          "segmenter.safetensors of `synboost train segmentation` (a spec serves the detectors and the "
                          "dissimilarity stage's data)")


def read_segmenter_spec(path: str | os.PathLike) -> SegmenterSpec:
    """The :class:`SegmenterSpec` of a spec file; a missing file, bad YAML, another kind of file, an unknown key or
    source is one :class:`ConfigError` naming the file and the fix."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: segmenter spec not found (give a segmenter.safetensors or a spec file with "
                              f"'kind: {SPEC_KIND}'; {HINT})")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {str(e).strip().splitlines()[0]}") from None
    if not isinstance(data, dict) or data.get("kind") != SPEC_KIND:
        have = f"kind '{data.get('kind')}'" if isinstance(data, dict) and data.get("kind") else "no kind"
        raise ConfigError(f"{p}: not a segmenter spec ({have}); a segmenter is a segmenter.safetensors or a YAML "
                          f"spec with 'kind: {SPEC_KIND}' and a source ({HINT})")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{p}: unknown key '{unknown[0]}' in a segmenter spec; keys: {', '.join(_FIELDS)}")
    source = data.get("source")
    if not isinstance(source, str) or source.partition(":")[0] not in SOURCES or not source.partition(":")[2]:
        raise ConfigError(f"{p}: source {source!r} is not one of "
                          + "; ".join(f"{k}:<{v}>" for k, v in SOURCES.items()))
    for key, typ in (("kwargs", dict), ("mean", list), ("std", list), ("input_size", list)):
        if data.get(key) is not None and not isinstance(data[key], typ):
            raise ConfigError(f"{p}: '{key}' must be a {typ.__name__}, got {type(data[key]).__name__}")
    if not isinstance(data.get("seed", 0), int) or isinstance(data.get("seed"), bool):
        raise ConfigError(f"{p}: 'seed' must be an integer, got {data['seed']!r}")
    for key in ("weights", "weights_key"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ConfigError(f"{p}: '{key}' must be a string (a path / a key), got {type(data[key]).__name__}")
    clean = {k: v for k, v in data.items() if v is not None}
    spec = SegmenterSpec(**clean, path=p.resolve())
    if spec.class_map in ({}, []):
        spec.class_map = None
    if data.get("output_key") is None and spec.scheme in DEFAULT_OUTPUT_KEY:
        spec.output_key = DEFAULT_OUTPUT_KEY[spec.scheme]
    return spec


def load_segmenter_spec(path: str | os.PathLike, device: torch.device | str = "cpu") -> SegmenterAdapter:
    """The :class:`SegmenterAdapter` (eval mode, on ``device``) of a spec file, probed once (see the module
    docstring)."""
    spec = read_segmenter_spec(path)
    where = str(spec.path)
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        net = build_network(spec, device)
    if spec.weights:
        if spec.scheme == "onnx":
            raise ConfigError(f"{where}: an ONNX file holds its weights; remove 'weights' from the spec")
        load_weights(net, spec)
    if isinstance(net, nn.Module):
        net = net.to(device).eval()
    adapter = SegmenterAdapter(net, spec.class_map, spec.output_key, spec.mean, spec.std, spec.input_size or None,
                               source=where).to(device).eval()
    probe(adapter, device)
    return adapter


@torch.no_grad()
def probe(adapter: SegmenterAdapter, device: torch.device) -> None:
    """Run one batch of zeros through ``adapter``: its errors (the output, its channels, the class map) now."""
    size = adapter.input_size or PROBE_SIZE
    try:
        adapter(torch.zeros(1, 3, *size, device=device))
    except SynboostError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(f"{adapter.source}: the network fails on a 1x3x{size[0]}x{size[1]} probe batch "
                          f"({type(e).__name__}: {first}); check the source and kwargs, or set input_size to the "
                          "size it takes") from None


def build_network(spec: SegmenterSpec, device: torch.device) -> nn.Module:
    """The network of a spec's source (random or builder-given weights; ``weights`` are loaded after)."""
    where, scheme, target = str(spec.path), spec.scheme, spec.target
    kwargs = dict(spec.kwargs)
    if scheme == "torchvision":
        import torchvision

        names = torchvision.models.list_models()
        if target not in names:
            seg = torchvision.models.list_models(module=torchvision.models.segmentation)
            raise ConfigError(f"{where}: torchvision has no model '{target}'; its segmentation models: "
                              f"{', '.join(seg)}")
        return _call(lambda: torchvision.models.get_model(target, **kwargs), where, f"torchvision:{target}")
    if scheme == "timm":
        timm = _optional("timm", where, "pip install timm")
        return _call(lambda: timm.create_model(target, **kwargs), where, f"timm:{target}")
    if scheme == "huggingface":
        folder = _existing(spec, target, "Hugging Face model folder", folder=True)
        tf = _optional("transformers", where, "pip install transformers; or export the model to ONNX / TorchScript "
                       "and use source onnx: / torchscript:")
        return _call(lambda: tf.AutoModelForSemanticSegmentation.from_pretrained(
            str(folder), local_files_only=True, **kwargs), where, f"huggingface:{folder}")
    if scheme == "torchscript":
        file = _existing(spec, target, "TorchScript file")
        if kwargs:
            raise ConfigError(f"{where}: a TorchScript file takes no kwargs; remove them from the spec")
        return _call(lambda: _jit_load(file, device), where, f"torchscript:{file}")
    if scheme == "onnx":
        file = _existing(spec, target, "ONNX file")
        if kwargs:
            raise ConfigError(f"{where}: an ONNX file takes no kwargs; remove them from the spec")
        return OnnxNetwork(file, device, spec.input_size, where)
    module, _, name = target.rpartition(":")
    if not module or not name:
        raise ConfigError(f"{where}: source python:{target} must be python:MODULE:CALLABLE (or FILE.py:CALLABLE)")
    fn = getattr(_import(spec, module), name, None)
    if not callable(fn):
        raise ConfigError(f"{where}: python module '{module}' has no callable '{name}'")
    net = _call(lambda: fn(**kwargs), where, f"python:{target}")
    if not isinstance(net, nn.Module):
        raise ConfigError(f"{where}: python:{target} returned a {type(net).__name__}, not a torch.nn.Module")
    return net


def _jit_load(file: Path, device: torch.device) -> nn.Module:
    """``torch.jit.load`` without its deprecation warning (TorchScript files still load; the warning is for
    writers)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.*")
        return torch.jit.load(str(file), map_location=device)


def _call(fn, where: str, what: str):
    try:
        return fn()
    except SynboostError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        hint = ("; set kwargs weights: null (and weights_backbone: null) for random weights, or put the file in "
                "$TORCH_HOME/hub/checkpoints" if "download" in first.lower() or "urlopen" in first.lower()
                or "URLError" in type(e).__name__ else "")
        raise ConfigError(f"{where}: {what} could not be built ({type(e).__name__}: {first}){hint}") from None


def _optional(module: str, where: str, install: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{where}: this source needs the '{module}' package, which is not installed ({install})"
                          ) from None


def _existing(spec: SegmenterSpec, target: str, what: str, folder: bool = False) -> Path:
    p = spec.resolve(target)
    if not (p.is_dir() if folder else p.is_file()):
        raise ConfigError(f"{spec.path}: {what} {p} not found (paths in a spec are relative to its folder)")
    return p


def _import(spec: SegmenterSpec, module: str):
    """A module by name, or a ``.py`` file relative to the spec's folder."""
    import importlib.util
    import sys

    if module.endswith(".py"):
        file = _existing(spec, module, "python file")
        name = f"synboost_user_segmenter_{abs(hash(str(file)))}"
        if name in sys.modules:
            return sys.modules[name]
        loader = importlib.util.spec_from_file_location(name, file)
        mod = importlib.util.module_from_spec(loader)
        sys.modules[name] = mod
        try:
            loader.loader.exec_module(mod)
        except Exception as e:
            del sys.modules[name]
            raise ConfigError(f"{spec.path}: importing {file} failed ({type(e).__name__}: {e})") from None
        return mod
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"{spec.path}: cannot import python module '{module}' ({e}); give FILE.py (relative to "
                          "the spec) or a module on the Python path") from None


def load_weights(net: nn.Module, spec: SegmenterSpec) -> None:
    """Load the spec's ``weights`` (safetensors, or a torch file read with ``weights_only=True``) into ``net``,
    strictly, with one line naming the mismatched keys."""
    from synboost.hub.checkpoint import load_foreign, load_into

    file = _existing(spec, spec.weights, "weights file")
    try:
        sd = load_foreign(file)
    except CheckpointError as e:
        raise CheckpointError(f"{spec.path}: weights {e}") from None
    if spec.weights_key:
        if not isinstance(sd, dict) or spec.weights_key not in sd:
            keys = ", ".join(list(sd)[:8]) if isinstance(sd, dict) else type(sd).__name__
            raise CheckpointError(f"{spec.path}: weights_key '{spec.weights_key}' is not in {file} (its keys: {keys})")
        sd = sd[spec.weights_key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{spec.path}: {file} is not a flat state dict of tensors; set weights_key to the "
                              "entry that holds it")
    load_into(net, sd, f"{file} (weights of {spec.path})")


class OnnxNetwork(nn.Module):
    """An ONNX file run by onnxruntime on ``device`` as a module: one input (B, 3, H, W); returns its one output,
    or a dict of its outputs by name (pick one with ``output_key``). A fixed batch size is chunked and padded; a
    fixed height and width must be the spec's ``input_size``."""

    def __init__(self, path: Path, device: torch.device, input_size, where: str):
        super().__init__()
        from synboost.detectors.runtimes import ExportedNet, OrtSession, providers

        try:
            session = OrtSession(path, device, providers("onnxruntime", device))
        except SynboostError as e:
            raise ConfigError(f"{where}: {e}") from None
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ConfigError(f"{where}: onnxruntime cannot load {path} ({first})") from None
        if len(session.inputs) != 1:
            raise ConfigError(f"{where}: {path.name} takes {len(session.inputs)} inputs "
                              f"({', '.join(n for n, _ in session.inputs)}); a segmenter takes one image batch")
        shape = session.inputs[0][1]
        hw = [d for d in shape[2:4]]
        if len(shape) != 4:
            raise ConfigError(f"{where}: {path.name} takes an input of shape {shape}, not (B, 3, H, W)")
        if all(isinstance(d, int) for d in hw) and list(input_size or []) != hw:
            raise ConfigError(f"{where}: {path.name} has a fixed input of {hw[0]}x{hw[1]}; set input_size: "
                              f"[{hw[0]}, {hw[1]}] in the spec (images are resized to it, the logits back)")
        self.names = [n for n, _ in session.outputs]
        self.runner = ExportedNet(session, "segmenter", path, {})

    def forward(self, x: torch.Tensor):
        outs = self.runner.run(x)
        return outs[0] if len(outs) == 1 else dict(zip(self.names, outs))
