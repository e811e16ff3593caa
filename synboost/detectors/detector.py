"""Pipeline files -> detectors: ``load_pipeline(path)(images) -> [{"anomaly": ..., "segmentation": ...}]``.

A pipeline file says what detector it is and travels with its run (diffusers' ``model_index.json``)::

    detector: synboost            # posthoc | synboost
    components:                   # paths relative to this file's folder, or weights manifest names
      segmenter: segmentation/segmenter.safetensors
      generator: synthesis/generator.safetensors
      dissimilarity: dissimilarity/dissimilarity.safetensors
    score: {method: synboost, ensemble: true, ensemble_weights: [0.75, 0.25]}
    defaults: {batch_size: 8, amp: true}   # load_pipeline(path, device=..., batch_size=...) overrides them
    # defaults also choose each network's precision (fp32 | bf16 | mixed | per network), torch.compile, and the
    # backend (torch | onnxruntime | openvino | tensorrt over the files of `synboost export`)

A relative component path resolves against the file's folder only, never the working directory, so a run folder
can be moved or shared. Inference, evaluation, the demo and the benchmarks all go through these detectors, so
the numbers in a table are the numbers a user gets.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from synboost.config import PipelineComponents, PipelineConfig, PipelineDefaults, PipelineScore, from_dict, merge_config
from synboost.detectors.components import (
    load_density,
    load_dissimilarity,
    load_generator,
    load_pebal,
    load_segmenter,
    perceptual_vgg,
)
from synboost.detectors.posthoc import PosthocDetector
from synboost.detectors.synboost import SynBoostDetector
from synboost.errors import CheckpointError, ConfigError

#: detector kind -> (class, the components it needs)
DETECTORS: dict[str, tuple[type, tuple[str, ...]]] = {
    "posthoc": (PosthocDetector, ("segmenter",)),
    "synboost": (SynBoostDetector, ("segmenter", "generator", "dissimilarity")),
}

#: the section of each field of the flat files written before version 0.2 (and of ``--set KEY=VALUE``)
_SECTION = {**{f.name: "components" for f in dataclasses.fields(PipelineComponents)},
            **{f.name: "score" for f in dataclasses.fields(PipelineScore)},
            **{f.name: "defaults" for f in dataclasses.fields(PipelineDefaults)}}
#: where a pipeline's networks run (``defaults.backend``)
BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
_OLD_VGG = ("perceptual_vgg_pretrained", "perceptual_vgg_path")
_warned: set[str] = set()


def _vgg_spec(pretrained: Any = True, path: str = "") -> str:
    return path or ("imagenet" if pretrained in (True, "true", "True", None) else "random")


def nest_fields(flat: dict[str, Any]) -> dict[str, Any]:
    """Flat pipeline fields (``method=..., segmenter=..., batch_size=...``) -> the nested layout of
    :class:`PipelineConfig`; ``detector`` defaults to synboost when a dissimilarity network is given."""
    out: dict[str, Any] = {"components": {}, "score": {}, "defaults": {}}
    flat = dict(flat)
    if any(k in flat for k in _OLD_VGG):
        out["components"]["perceptual_vgg"] = _vgg_spec(flat.pop("perceptual_vgg_pretrained", True),
                                                        flat.pop("perceptual_vgg_path", "") or "")
    for k, v in flat.items():
        if k == "detector":
            out["detector"] = v
        elif k in _SECTION:
            out[_SECTION[k]][k] = v
        else:
            raise ConfigError(f"unknown pipeline field '{k}'; fields: detector, {', '.join(_SECTION)}")
    out.setdefault("detector", "synboost" if out["components"].get("dissimilarity") else "posthoc")
    return out


def _alias(override: str) -> str:
    """``--set method=entropy`` -> ``score.method=entropy`` (the flat keys name their section)."""
    key, _, value = override.partition("=")
    if key in _SECTION:
        return f"{_SECTION[key]}.{key}={value}"
    if key == "perceptual_vgg_pretrained":
        return f"components.perceptual_vgg={_vgg_spec(value.strip().lower() == 'true')}"
    if key == "perceptual_vgg_path":
        return f"components.perceptual_vgg={value}"
    return override


def read_pipeline(path: str | os.PathLike, overrides: Sequence[str] = (), note: bool = True) -> PipelineConfig:
    """The :class:`PipelineConfig` of a pipeline file with ``overrides`` (``KEY=VALUE``, flat or dotted). A
    flat file of version 0.1 still loads, with one line that says how to change it (unless ``note`` is off)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: pipeline file not found (see pipelines/ for examples; a run writes its own "
                          "pipeline.yaml)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {str(e).strip().splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping (detector, components, score, defaults) at the top level")
    ov = [_alias(o) for o in overrides]
    if set(data) - {"detector", "components", "score", "defaults"}:  # the flat layout of version 0.1
        nested = nest_fields(data)
        if note and str(p) not in _warned:
            _warned.add(str(p))
            print(f"note: {p}: flat pipeline file of synboost 0.1; it loads, but move segmenter/pebal/density/"
                  "generator/dissimilarity under 'components:', method/ensemble/input_size under 'score:', "
                  "device/batch_size/amp/channels_last under 'defaults:' and add "
                  f"'detector: {nested['detector']}' (`synboost pipeline upgrade {p}` does it)", file=sys.stderr)
        return merge_config(PipelineConfig, nested, ov, str(p))
    return merge_config(PipelineConfig, data, ov, str(p))


def pipeline_from_overrides(overrides: Sequence[str]) -> PipelineConfig:
    """A :class:`PipelineConfig` from ``KEY=VALUE`` edits alone (e.g. ``segmenter=seg.safetensors``: the CLI's
    ``--segmenter``); relative paths are then the caller's, from the working directory."""
    ov = [_alias(o) for o in overrides]
    cfg = merge_config(PipelineConfig, {}, ov, "pipeline")
    if cfg.components.dissimilarity and not any(o.startswith("detector=") for o in overrides):
        cfg.detector = "synboost"
    return cfg


def resolve_component(path: str, base: Path | None) -> str:
    """A component path as the file means it: a manifest name's imported file, an absolute path, or a path
    relative to the pipeline file's folder ``base`` (never to the working directory)."""
    from synboost.hub.registry import resolve

    p = Path(resolve(path)).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p)


def _checkpoint(path: str, what: str, verb: str, base: Path | None, command: str = "") -> str:
    """A pipeline component: a checkpoint path (relative to the pipeline file) or a name of the weights manifest
    (``synboost-segmenter``, ...; its imported file)."""
    if not path:
        raise ConfigError(f"pipeline: '{what}' is empty; give the {what} checkpoint (a .safetensors file)")
    p = resolve_component(path, base)
    if not Path(p).is_file():
        how = f"make one with `{command}`" if command else f"train one with `synboost train {verb}`"
        raise CheckpointError(f"{p}: {what} checkpoint not found ({how}, or fix components.{what} in the "
                              "pipeline file)")
    return p


def _perceptual(spec: str, base: Path | None, dev):
    if spec in ("imagenet", ""):
        return perceptual_vgg(True, "", dev)
    if spec == "random":
        return perceptual_vgg(False, "", dev)
    return perceptual_vgg(True, resolve_component(spec, base), dev)


def build_detector(cfg: PipelineConfig, base: Path | None = None, device: str | None = None,
                   batch_size: int | None = None, amp: bool | None = None,
                   channels_last: bool | None = None, precision: str | Mapping[str, str] | None = None,
                   compile: bool | None = None, backend: str | None = None,
                   segmenter: Any = None, freeze: bool | None = None) -> PosthocDetector:
    """The detector of a :class:`PipelineConfig`; relative component paths resolve against ``base``. The
    runtime arguments override the file's ``defaults``. ``segmenter``: a network in memory (a
    :class:`~synboost.detectors.adapter.SegmenterAdapter`, or one of our segmenters) used instead of
    ``components.segmenter``."""
    from synboost.runtime import pick_device

    if cfg.detector not in DETECTORS:
        raise ConfigError(f"unknown detector '{cfg.detector}'; detectors: {', '.join(DETECTORS)}")
    c, s, d = cfg.components, cfg.score, cfg.defaults
    if s.method in SynBoostDetector.EXTRA and cfg.detector != "synboost":
        raise ConfigError(f"method '{s.method}' needs 'detector: synboost' (with components generator and "
                          "dissimilarity)")
    backend = backend or d.backend
    if backend not in BACKENDS:
        raise ConfigError(f"defaults.backend '{backend}' is not one of {', '.join(BACKENDS)}")
    compile = d.compile if compile is None else compile
    if compile and backend != "torch":
        raise ConfigError(f"defaults.compile is for backend torch, not {backend}; set compile: false")
    dev = pick_device(device or d.device)
    if segmenter is not None:
        if c.density or backend != "torch":
            raise ConfigError("a segmenter given in memory runs in torch without 'density' (which is fitted on a "
                              "segmenter file); give it as components.segmenter (a checkpoint or a spec) instead")
        model, sml = segmenter.to(dev).eval(), None
    else:
        model, sml = load_segmenter(_checkpoint(c.segmenter, "segmenter", "segmentation", base), dev)
    pebal = load_pebal(_checkpoint(c.pebal, "pebal", "pebal", base), dev) if c.pebal else None
    density = (load_density(_checkpoint(c.density, "density", "", base, "synboost fit density"),
                            _checkpoint(c.segmenter, "segmenter", "segmentation", base), dev)
               if c.density else None)
    precision = d.precision if precision is None else precision
    common = dict(input_size=s.input_size, batch_size=batch_size or d.batch_size, mc_samples=s.mc_samples,
                  device=dev, amp=d.amp if amp is None else amp, pebal_model=pebal, density=density,
                  channels_last=d.channels_last if channels_last is None else channels_last,
                  precision="fp32" if backend != "torch" else precision)
    if cfg.detector == "posthoc":
        det = PosthocDetector(model, s.method, sml, **common)
    else:
        gen = load_generator(_checkpoint(c.generator, "generator", "synthesis", base), dev)
        dissim, meta = load_dissimilarity(_checkpoint(c.dissimilarity, "dissimilarity", "dissimilarity", base),
                                          dev)
        vgg19 = _perceptual(c.perceptual_vgg, base, dev)
        det = SynBoostDetector(model, gen, dissim, vgg19, meta["size"], sml, s.ensemble, s.ensemble_weights,
                               s.method, **common)
    if (d.freeze if freeze is None else freeze) and backend == "torch":  # networks loaded for this detector only
        det.freeze(exclude=("segmenter",) if segmenter is not None else ())  # a caller's network stays as it is
    if compile:
        det.set_compile()
    if backend != "torch":
        from synboost.detectors.runtimes import use_exported

        if not d.exported:
            raise ConfigError(f"defaults.backend '{backend}' runs the files of `synboost export`: set "
                              "defaults.exported to their folder (`synboost export PIPELINE --out DIR` writes "
                              "DIR/pipeline.yaml with both set)")
        use_exported(det, backend, Path(base or ".") / Path(d.exported).expanduser(), precision,
                     component_sources(cfg, base))
    return det


def component_sources(cfg: PipelineConfig, base: Path | None = None) -> dict[str, str]:
    """Each network of a pipeline and where its weights come from: the resolved checkpoint path (``segmenter``,
    ``pebal``, ``generator``, ``dissimilarity``) or the perceptual VGG's spec (``imagenet``, ``random``, a path)."""
    c = cfg.components
    out = {"segmenter": resolve_component(c.segmenter, base)}
    if c.pebal:
        out["pebal"] = resolve_component(c.pebal, base)
    if cfg.detector == "synboost":
        out.update(generator=resolve_component(c.generator, base),
                   dissimilarity=resolve_component(c.dissimilarity, base),
                   vgg=c.perceptual_vgg if c.perceptual_vgg in ("imagenet", "random", "")
                   else resolve_component(c.perceptual_vgg, base))
    return out


def load_pipeline(path: str | os.PathLike, overrides: Sequence[str] = (), device: str | None = None,
                  batch_size: int | None = None, amp: bool | None = None,
                  channels_last: bool | None = None, precision: str | Mapping[str, str] | None = None,
                  compile: bool | None = None, backend: str | None = None,
                  segmenter: Any = None, freeze: bool | None = None) -> PosthocDetector:
    """The detector of a pipeline file: ``synboost.load_pipeline("runs/demo/pipeline.yaml", device="cpu")(images)
    -> [{"anomaly": ..., "segmentation": ...}]``. ``overrides``: ``KEY=VALUE`` edits (``method=entropy``,
    ``score.ensemble=false``); the runtime arguments override the file's ``defaults`` (``precision``: ``fp32``,
    ``bf16``, ``mixed`` or per network, see :mod:`synboost.detectors.precision`; ``compile``: torch.compile;
    ``backend``: torch, onnxruntime, openvino or tensorrt over the files of ``synboost export``); ``segmenter``: a
    network in memory instead of the file's (``synboost.SegmenterAdapter(model, output_key="out")``); ``freeze``:
    rewrite the networks for inference (:mod:`synboost.detectors.freeze`, default ``defaults.freeze``: on)."""
    cfg = read_pipeline(path, overrides)
    return build_detector(cfg, Path(path).resolve().parent, device, batch_size, amp, channels_last, precision,
                          compile, backend, segmenter, freeze)


def _is_path(value: str) -> bool:
    """A component value that is a file path (not empty, not a keyword like ``imagenet``, not a manifest name)."""
    return bool(value) and value not in ("imagenet", "random") and bool(Path(value).suffix or "/" in value)


def _relative(value: str, folder: Path) -> str:
    if not _is_path(value):
        return value
    p = Path(value).expanduser().resolve()
    try:
        return os.path.relpath(p, folder.resolve())
    except ValueError:  # another drive (Windows)
        return str(p)


def write_pipeline_file(path: str | os.PathLike, **fields) -> Path:
    """Write a pipeline file from flat fields (``method=..., segmenter=..., batch_size=...``; see
    :func:`nest_fields`), validated against :class:`PipelineConfig`. Component paths are taken as given from
    the working directory (or absolute) and written relative to the file's folder, so the run can move."""
    from synboost.config import save_config

    path = Path(path)
    nested = nest_fields(fields)
    nested["components"] = {k: _relative(str(v), path.parent) for k, v in nested["components"].items()}
    return save_config(from_dict(PipelineConfig, nested), path)


def upgrade_pipeline_file(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Rewrite a flat pipeline file of version 0.1 in the current layout. Relative component paths keep pointing
    at the same files: they are rebased when ``out`` lies in another folder."""
    from synboost.config import save_config

    src = Path(path)
    dst = Path(out) if out else src
    cfg = read_pipeline(src, note=False)
    if dst.resolve().parent != src.resolve().parent:
        for f in dataclasses.fields(cfg.components):
            value = getattr(cfg.components, f.name)
            if _is_path(value) and not Path(value).expanduser().is_absolute():
                setattr(cfg.components, f.name, _relative(str(src.resolve().parent / value), dst.parent))
    return save_config(cfg, dst)
