"""Per-network precision, torch.compile and its warm-up line: the runtime settings ``defaults.precision`` and
``defaults.compile`` of a pipeline file.

Precision is chosen per network: ``segmenter`` (and a PEBAL fine-tune beside it), ``generator`` (with its style
encoder), ``vgg`` (the perceptual difference) and ``dissimilarity``, each ``fp32`` or ``bf16``. A bf16 network runs
in its own autocast region (weights and activations in bf16 where autocast puts them, on the CPU's AMX / AVX512-BF16
units through oneDNN, fastest in channels_last); what leaves a region is cast back to float32, so every score,
softmax and the final fusion is computed in float32. Spellings::

    auto                                   # the default: bf16 where the device has bf16 units (CUDA, a CPU with
                                           # AVX512-BF16 / AMX) when `amp`, else fp32
    fp32 | bf16                            # every network
    mixed                                  # segmenter fp32, the rest bf16 (the labels stay those of fp32)
    segmenter:fp32,generator:bf16,...      # per network; networks not named are fp32

bf16 is used only where the device computes it natively (:func:`synboost.runtime.bf16_supported`): elsewhere the
detector runs fp32 and says so in one line.
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Mapping

import torch

from synboost.errors import ConfigError

#: the networks whose precision a pipeline chooses
NETWORKS = ("segmenter", "generator", "vgg", "dissimilarity")
#: the dtypes a network can run in
DTYPES = ("fp32", "bf16")
PRESETS: dict[str, dict[str, str]] = {
    "fp32": {n: "fp32" for n in NETWORKS},
    "bf16": {n: "bf16" for n in NETWORKS},
    "mixed": {"segmenter": "fp32", "generator": "bf16", "vgg": "bf16", "dissimilarity": "bf16"},
}
_HOW = ("auto | fp32 | bf16 | mixed | per network, e.g. segmenter:fp32,generator:bf16,vgg:bf16,dissimilarity:bf16 "
        f"(networks: {', '.join(NETWORKS)})")


def parse_precision(spec: str | Mapping[str, str] | None) -> dict[str, str] | None:
    """The dtype of each network named by ``spec`` (see the module docstring), or None for ``auto``; a
    :class:`ConfigError` naming ``defaults.precision`` and the spellings otherwise."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "auto")):
        return None
    if isinstance(spec, Mapping):
        items = [(str(k), str(v)) for k, v in spec.items()]
    else:
        text = spec.strip().lower()
        if text in PRESETS:
            return dict(PRESETS[text])
        items = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, dtype = part.replace("=", ":").partition(":")
            if not sep:
                raise ConfigError(f"defaults.precision '{spec}': '{part}' is not network:dtype; use {_HOW}")
            items.append((name.strip(), dtype.strip()))
    out = dict(PRESETS["fp32"])
    for name, dtype in items:
        name, dtype = name.lower(), dtype.lower().replace("float32", "fp32").replace("bfloat16", "bf16")
        if name not in NETWORKS:
            raise ConfigError(f"defaults.precision '{spec}': unknown network '{name}'; use {_HOW}")
        if dtype not in DTYPES:
            raise ConfigError(f"defaults.precision '{spec}': dtype '{dtype}' of {name} is not fp32 or bf16; "
                              f"use {_HOW}")
        out[name] = dtype
    return out


def describe(precision: Mapping[str, str]) -> str:
    """``fp32``, ``bf16``, ``mixed`` or ``segmenter:fp32,generator:bf16,...``: the shortest spelling."""
    for name, preset in PRESETS.items():
        if dict(precision) == preset:
            return name
    return ",".join(f"{n}:{precision[n]}" for n in NETWORKS)


def resolve_precision(spec: str | Mapping[str, str] | None, device: torch.device | str, amp: bool = True,
                      backend: str = "torch") -> dict[str, str]:
    """Each network's dtype as it will run on ``device`` with ``backend``. ``auto``: with torch and ``amp``,
    bf16 on CUDA and on a CPU with bf16 units (chosen by ``synboost bench accuracy`` on the trained demo pipeline:
    every variant within 0.3 AP and 1 FPR95 point of fp32, see BENCHMARKS.md), else fp32; with onnxruntime /
    OpenVINO, fp32. bf16 asked for where it cannot run (a CPU without bf16 units, a GPU without bf16, onnxruntime) gives
    fp32 everywhere, with one line on stderr that says so."""
    from synboost import runtime

    device = torch.device(device)
    asked = parse_precision(spec)
    if asked is None:
        bf16 = backend == "torch" and amp and runtime.bf16_supported(device)
        return dict(PRESETS["bf16" if bf16 else "fp32"])
    wanted = [n for n in NETWORKS if asked[n] == "bf16"]
    if not wanted:
        return asked
    why = ""
    if backend == "onnxruntime" or backend == "tensorrt":
        why = (f"{backend} runs the exported fp32 graphs (backend openvino runs bf16 on a CPU with bf16 units, "
               "backend torch everywhere bf16 is native)")
    elif backend == "openvino":
        why = "" if runtime.cpu_bf16_supported() else "this CPU has no bf16 units (torch.cpu.get_capabilities())"
    elif not runtime.bf16_supported(device):
        why = ("this CPU has no bf16 units (torch.cpu.get_capabilities())" if device.type == "cpu"
               else f"{device} does not support bf16")
    if why:
        print(f"note: precision bf16 asked for ({', '.join(wanted)}), but {why}: running every network in fp32",
              file=sys.stderr)
        return dict(PRESETS["fp32"])
    return asked


def autocast(device: torch.device, dtype: str):
    """The autocast region of a network running in ``dtype`` (a disabled one for fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")


def compile_networks(nets: Iterable[torch.nn.Module]) -> None:
    """``torch.compile`` (inductor, static shapes) each network in place: the module objects stay, so their
    attributes and weights are those of the eager ones; the first call of each input shape compiles."""
    for net in nets:
        if isinstance(net, torch.nn.Module) and getattr(net, "_compiled_call_impl", None) is None:
            net.compile(dynamic=False)


class WarmUp:
    """Times the first batch of each input shape of a compiled detector and prints one line about it."""

    def __init__(self):
        self.seen: set[tuple] = set()

    def __call__(self, shape: tuple, fn):
        """``fn()``, timed and reported when ``shape`` is new; a compile failure is one error with the fix."""
        if shape in self.seen:
            return fn()
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as e:  # inductor needs a C++ compiler on the CPU, Triton on CUDA
            if "torch._dynamo" not in type(e).__module__ and "inductor" not in type(e).__module__:
                raise
            raise ConfigError(f"defaults.compile: torch.compile failed on the first batch ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:200]}); set compile: false") from None
        self.seen.add(shape)
        print(f"note: torch.compile: the first batch of shape {'x'.join(map(str, shape))} took "
              f"{time.perf_counter() - t0:.1f} s (compiling; later batches of that shape reuse it)", file=sys.stderr)
        return out
