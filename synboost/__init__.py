"""synboost: pixel-wise anomaly segmentation of driving scenes (SynBoost, PEBAL and the uncertainty baselines).

The front door, re-exported lazily (importing ``synboost`` does not import torch)::

    import synboost
    det = synboost.load_pipeline("runs/demo/pipeline.yaml", device="cpu", batch_size=8)
    maps = det(images)                      # [{"anomaly": HxW float32, "segmentation": HxW uint8}, ...]
    report = synboost.evaluate(det, "synthetic:runs/demo/world", ["entropy", "synboost"])
    net = synboost.create_model("dissimilarity", width=0.25)      # any of synboost.list_models()
    data = synboost.open_dataset("fishyscapes_laf:/data/fishyscapes")
    seg = synboost.SegmenterAdapter(torchvision_model, output_key="out")   # any network as the segmenter
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

#: public name -> the module that defines it
_FRONT_DOOR = {
    "load_pipeline": "synboost.detectors.detector",
    "evaluate": "synboost.jobs.evaluate",
    "create_model": "synboost.models.registry",
    "list_models": "synboost.models.registry",
    "open_dataset": "synboost.data.kinds",
    "save_component": "synboost.detectors.components",
    "load_component": "synboost.detectors.components",
    "load_segmenter": "synboost.detectors.components",
    "SegmenterAdapter": "synboost.detectors.adapter",
}

__all__ = ["__version__", *_FRONT_DOOR]


def __getattr__(name: str) -> Any:
    if name in _FRONT_DOOR:
        value = getattr(importlib.import_module(_FRONT_DOOR[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'synboost' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FRONT_DOOR))
