"""The dataset kinds and the :func:`open_dataset` factory: a ``"<kind>:<path>[@split]"`` spec, or a bare folder
whose kind is detected from its contents, opens the reader of :mod:`synboost.data.datasets` or
:mod:`synboost.data.benchmarks` for it. Later readers add an entry to :data:`KINDS`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from synboost.data.benchmarks import (
    FISHYSCAPES_FOLDERS,
    SMIYC_FOLDERS,
    AnomalyFolderDataset,
    FishyscapesDataset,
    LostAndFoundDataset,
    RoadAnomalyDataset,
    SMIYCDataset,
)
from synboost.data.datasets import CityscapesDataset, CocoOutliers, ImageDataset, ImageFolder
from synboost.data.io import list_images
from synboost.errors import DataError


@dataclass(frozen=True)
class DatasetKind:
    """How ``open_dataset`` opens one kind: ``open(path, **kw)``, how to recognise it, what it holds."""

    open: Callable[..., ImageDataset]
    contents: str
    detect: Callable[[Path], bool] | None = None
    has_splits: bool = False


def _open_synthetic(path: Path, split: str | None = None, **kw: Any) -> ImageDataset:
    if split is None:
        return AnomalyFolderDataset(path / "anomaly" / "test", **kw)
    return CityscapesDataset(path, split=split, **kw)


def _is_dir(*parts: str) -> Callable[[Path], bool]:
    return lambda root: all((root / p).is_dir() for p in parts)


def _variant(names: dict[str, tuple[str, ...]], mine: str, sub: str) -> Callable[[Path], bool]:
    """Detector for one of two dataset variants that are often kept side by side (``names``: variant -> folder
    names; ``sub``: a folder each variant holds). It matches the variant folder itself, or a folder holding
    this variant but not the other one (with both, the user must name the kind)."""

    def holds(root: Path, variant: str) -> bool:
        return any((root / n / sub).is_dir() for n in names[variant])

    def detect(root: Path) -> bool:
        if root.name in names[mine]:
            return (root / sub).is_dir()
        return holds(root, mine) and not any(holds(root, v) for v in names if v != mine)

    return detect


_FISHY = {v: (*names, *(f"fishyscapes/{n}" for n in names)) for v, names in FISHYSCAPES_FOLDERS.items()}
_SMIYC = {v: (name,) for v, name in SMIYC_FOLDERS.items()}


def _is_coco(root: Path) -> bool:
    return any((base / "annotations/ood_seg_train2017").is_dir() for base in (root, root / "coco"))


def _has_images(root: Path) -> bool:
    return bool(list_images(root))


#: every kind ``open_dataset`` knows, in auto-detection order (the first whose detector matches wins);
#: later readers add an entry here
KINDS: dict[str, DatasetKind] = {
    "synthetic": DatasetKind(
        _open_synthetic,
        "the synthetic world: anomaly/test/, or Cityscapes layout with @train / @val",
        _is_dir("anomaly/test/original"),
        has_splits=True,
    ),
    "lostandfound": DatasetKind(
        LostAndFoundDataset,
        "leftImg8bit/ + gtCoarse/",
        _is_dir("leftImg8bit", "gtCoarse"),
        has_splits=True,
    ),
    "cityscapes": DatasetKind(CityscapesDataset, "leftImg8bit/ + gtFine/", _is_dir("leftImg8bit"), has_splits=True),
    "fishyscapes_laf": DatasetKind(
        partial(FishyscapesDataset, variant="laf"),
        "fishyscapes/LostAndFound/{original,labels}/",
        _variant(_FISHY, "laf", "original"),
    ),
    "fishyscapes_static": DatasetKind(
        partial(FishyscapesDataset, variant="static"),
        "fishyscapes/Static/{original,labels}/",
        _variant(_FISHY, "static", "original"),
    ),
    "road_anomaly": DatasetKind(RoadAnomalyDataset, "frames/ or original/ + labels/", _is_dir("frames")),
    "smiyc_anomaly": DatasetKind(
        partial(SMIYCDataset, track="anomaly"),
        "dataset_AnomalyTrack/images/",
        _variant(_SMIYC, "anomaly", "images"),
    ),
    "smiyc_obstacle": DatasetKind(
        partial(SMIYCDataset, track="obstacle"),
        "dataset_ObstacleTrack/images/",
        _variant(_SMIYC, "obstacle", "images"),
    ),
    "coco_outliers": DatasetKind(CocoOutliers, "annotations/ood_seg_train2017/ + train2017/", _is_coco),
    "anomaly_folder": DatasetKind(
        AnomalyFolderDataset, "original/ + labels/", _is_dir("original", "labels")
    ),
    "folder": DatasetKind(ImageFolder, "images, no labels", _has_images),
}

_SPLIT = re.compile(r"(.+)@([A-Za-z0-9_]+)")


def detect_kind(path: str | os.PathLike) -> str:
    """The first kind in :data:`KINDS` whose detector recognises the folder, or a DataError listing the kinds."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: expected a dataset folder; found no such folder")
    for name, kind in KINDS.items():
        if kind.detect is not None and kind.detect(root):
            return name
    raise DataError(
        f"{root}: cannot tell the dataset kind from its contents; name it as <kind>:<path> with kind one of: "
        + "; ".join(f"{name} ({kind.contents})" for name, kind in KINDS.items())
    )


def open_dataset(spec: str | os.PathLike, **kw: Any) -> ImageDataset:
    """Open a dataset from ``"<kind>:<path>"`` (``@<split>`` after the path for kinds with splits), or from a
    bare path whose kind is detected from its contents. Keyword arguments go to the reader.

    ``synthetic:DIR`` is the synthetic world's anomaly test split (``DIR/anomaly/test``), ``synthetic:DIR@train``
    / ``@val`` its Cityscapes-layout splits; ``cityscapes:DIR@val`` equals ``CityscapesDataset(DIR, "val")``.
    """
    text = os.fspath(spec)
    prefix, sep, rest = text.partition(":")
    if sep and prefix in KINDS:
        kind: str | None = prefix
        path_text = rest
    elif sep and re.fullmatch(r"[a-z][a-z0-9_]+", prefix):
        raise DataError(f"{text}: unknown dataset kind '{prefix}'; kinds: {', '.join(KINDS)}")
    else:
        kind, path_text = None, text
    split = None
    match = _SPLIT.fullmatch(path_text)
    if match and not Path(path_text).exists():
        path_text, split = match.groups()
    path = Path(path_text)
    kind = kind or detect_kind(path)
    if split is not None:
        if not KINDS[kind].has_splits:
            raise DataError(f"{text}: the {kind} kind has no splits; drop '@{split}'")
        kw["split"] = split
    return KINDS[kind].open(path, **kw)
