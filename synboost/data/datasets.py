"""Dataset readers: one sample type for every layout, files paired by name, one-line errors.

Every reader is a map-style dataset (``len(ds)``, ``ds[i]``) that works with torch's ``DataLoader`` without
importing torch. ``ds[i]`` is a :class:`Sample` dict:

* ``name``: a stable id (the file stem, or a path relative to the root without suffix);
* ``image``: RGB uint8 (H, W, 3);
* where the dataset has them: ``label`` (train ids uint8, 255 = ignore), ``anomaly`` (uint8: 0 inlier,
  1 anomaly, 255 void / outside the ROI), ``instances`` (int32 Cityscapes instance ids, when asked for),
  ``mask`` (bool object mask, COCO outliers).

Pairing: the images are listed, and each image's target files are found **by its name**, never by sorted
order (the official code pairs sorted lists, so one missing file shifts every later pair). An image whose
target file is missing is a :class:`DataError` naming the image and the expected file; target files without
an image are not read. A missing root or sub-folder and an empty dataset are :class:`DataError` lines saying
which path was expected and what it should hold. A bad file found while reading a sample (corrupt, wrong size,
unknown ids) raises :class:`ImageReadError` from :mod:`synboost.data.io` naming the file; the caller skips and
reports it.

This module holds the common base, Cityscapes, plain image folders and the COCO outliers of Meta-OoD / PEBAL;
the anomaly benchmarks (Fishyscapes, Road Anomaly, SegmentMeIfYouCan, LostAndFound and the SynBoost folder
layout) live in :mod:`synboost.data.benchmarks`, and the :func:`~synboost.data.kinds.open_dataset` factory that
opens any of them from a ``kind:path`` spec in :mod:`synboost.data.kinds`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, TypedDict

import numpy as np

from synboost.data.io import list_images, read_image, read_label
from synboost.data.labels import IGNORE, NUM_CLASSES, ids_to_train_ids
from synboost.errors import DataError

#: reads one target file given the (H, W) of its image
Decoder = Callable[[Path, tuple[int, int]], np.ndarray]


class Sample(TypedDict, total=False):
    """What ``dataset[i]`` returns; ``name`` and ``image`` are always present."""

    name: str
    image: np.ndarray
    label: np.ndarray
    anomaly: np.ndarray
    instances: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class SampleFiles:
    """One sample's files: its image and, per sample key, a target file with the decoder that reads it."""

    name: str
    image: Path
    targets: dict[str, tuple[Path, Decoder]] = field(default_factory=dict)


class ImageDataset:
    """Base of every reader: a list of :class:`SampleFiles`, read on access."""

    def __init__(self, root: Path, files: list[SampleFiles]) -> None:
        self.root = root
        self._files = files
        self.names: list[str] = [f.name for f in files]
        first_with_name: dict[str, Path] = {}
        for f in files:
            if f.name in first_with_name:
                raise DataError(
                    f"{f.image}: same sample name '{f.name}' as {first_with_name[f.name]}; names must be unique"
                )
            first_with_name[f.name] = f.image

    def __len__(self) -> int:
        return len(self._files)

    def image_path(self, i: int) -> Path:
        return self._files[i].image

    def __getitem__(self, i: int) -> Sample:
        files = self._files[range(len(self._files))[i]]  # negative indices, IndexError past the end
        image = read_image(files.image)
        sample = Sample(name=files.name, image=image)
        for key, (path, decode) in files.targets.items():
            sample[key] = decode(path, image.shape[:2])  # type: ignore[literal-required]
        return sample

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, {len(self)} samples)"


# ------------------------------------------------------------------------------------------- shared helpers


def require_dir(base: Path, rel: str, pattern: str, what: str) -> Path:
    """``base / rel`` if it is a folder, else a DataError saying what it should contain."""
    if not base.is_dir():
        raise DataError(f"{base}: expected a folder holding {pattern} ({what}); found no such folder")
    folder = base / rel
    if not folder.is_dir():
        raise DataError(f"{base}: expected {pattern} ({what}); found no such folder")
    return folder


def require_samples(files: list[SampleFiles], base: Path, pattern: str, what: str) -> list[SampleFiles]:
    """``files`` unless empty: an empty dataset is an error naming the expected files."""
    if not files:
        raise DataError(f"{base}: expected {pattern} ({what}); found no such files")
    return files


def require_target(image: Path, expected: Path, *alternatives: Path) -> Path:
    """The first of ``expected, *alternatives`` that exists, else a DataError naming the image and ``expected``."""
    for path in (expected, *alternatives):
        if path.is_file():
            return path
    raise DataError(f"{image}: no matching label file; expected {expected}")


def id_table(ids: Iterable[int]) -> np.ndarray:
    """Boolean table for :func:`read_label`'s ``valid_ids``: True at each allowed id."""
    table = np.zeros(256, dtype=bool)
    table[list(ids)] = True
    return table


TRAIN_ID_TABLE = id_table([*range(NUM_CLASSES), IGNORE])
ANOMALY_TABLE = id_table([0, 1, IGNORE])


def decode_train_ids(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A train-id map (0..18, 255 ignore); any other value is an ImageReadError."""
    return read_label(path, shape, TRAIN_ID_TABLE).astype(np.uint8)


def decode_cityscapes_ids(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A Cityscapes labelIds map -> train ids with the official 34 -> 19 table (ids above 33 -> 255)."""
    return ids_to_train_ids(read_label(path, shape))


def decode_instances(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A Cityscapes instanceIds map (16 bit: label id, or label id * 1000 + instance) as int32."""
    return read_label(path, shape).astype(np.int32)


def decode_anomaly(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """An anomaly mask already in 0 inlier / 1 anomaly / 255 void; other values are an ImageReadError."""
    return read_label(path, shape, ANOMALY_TABLE).astype(np.uint8)


def decode_object_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A COCO outlier mask: any value above 0 (Meta-OoD writes 254) is the object."""
    return read_label(path, shape) > 0


# ----------------------------------------------------------------------------------------------- Cityscapes


class CityscapesDataset(ImageDataset):
    """Cityscapes (and the synthetic world, which writes the same layout).

    Images ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png``; labels
    ``gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`` mapped to train ids with the official table, or
    ``<stem>_gtFine_labelTrainIds.png`` where the labelIds file is absent; with ``with_instances``,
    ``<stem>_gtFine_instanceIds.png`` as ``instances``. Names are the stems (``aachen_000000_000019``).
    The ``test`` split has no ``label`` key: Cityscapes ships placeholder test labels, which are not read.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", with_instances: bool = False) -> None:
        root = Path(root)
        self.split = split
        pattern = f"leftImg8bit/{split}/<city>/*_leftImg8bit.png"
        images_dir = require_dir(root, f"leftImg8bit/{split}", pattern, "the Cityscapes images")
        labelled = split != "test"
        if with_instances and not labelled:
            raise DataError(f"{root}: the Cityscapes test split has no instance labels; use with_instances=False")
        gt_pattern = f"gtFine/{split}/<city>/*_gtFine_labelIds.png"
        gt_dir = require_dir(root, f"gtFine/{split}", gt_pattern, "the Cityscapes labels") if labelled else None
        files = []
        for city in sorted(p for p in images_dir.iterdir() if p.is_dir()):
            for image in list_images(city):
                if not image.stem.endswith("_leftImg8bit"):
                    continue
                stem = image.stem[: -len("_leftImg8bit")]
                targets = {}
                if gt_dir is not None:
                    gt = gt_dir / city.name / f"{stem}_gtFine"
                    targets["label"] = self._label(image, gt)
                    if with_instances:
                        targets["instances"] = (require_target(image, Path(f"{gt}_instanceIds.png")), decode_instances)
                files.append(SampleFiles(stem, image, targets))
        super().__init__(root, require_samples(files, root, pattern, "the Cityscapes images"))

    @staticmethod
    def _label(image: Path, gt: Path) -> tuple[Path, Decoder]:
        ids = Path(f"{gt}_labelIds.png")
        label = require_target(image, ids, Path(f"{gt}_labelTrainIds.png"))
        return label, decode_cityscapes_ids if label == ids else decode_train_ids


# ------------------------------------------------------------------------------------- plain folders, COCO


class ImageFolder(ImageDataset):
    """Plain images for inference (no labels); names are paths relative to ``root`` without suffix."""

    def __init__(self, root: str | os.PathLike, recursive: bool = False) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: expected a folder of images (.png, .jpg, ...); found no such folder")
        files = [SampleFiles(p.relative_to(root).with_suffix("").as_posix(), p) for p in list_images(root, recursive)]
        pattern = "**/*.{png,jpg,...}" if recursive else "*.{png,jpg,...}"
        super().__init__(root, require_samples(files, root, pattern, "images"))


class CocoOutliers(ImageDataset):
    """COCO objects for outlier exposure / AnomalyMix, as prepared by Meta-OoD and used by PEBAL.

    Masks ``annotations/ood_seg_train2017/<12-digit id>.png`` (the union of the kept image's annotated objects,
    any value above 0) drive the list; images ``train2017/<id>.jpg``. ``root`` is the ``coco`` folder or the
    folder that holds it. Samples carry ``mask`` (bool) instead of labels.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        root = Path(root)
        if (root / "coco").is_dir() and not (root / "annotations").is_dir():
            root = root / "coco"
        pattern = "annotations/ood_seg_train2017/<id>.png"
        what = "COCO outlier masks from Meta-OoD's prepare_coco_segmentation.py"
        masks_dir = require_dir(root, "annotations/ood_seg_train2017", pattern, what)
        images_dir = require_dir(root, "train2017", "train2017/<id>.jpg", "the COCO 2017 train images")
        files = []
        for mask in list_images(masks_dir):
            image = images_dir / f"{mask.stem}.jpg"
            if not image.is_file():
                raise DataError(f"{mask}: no matching COCO image; expected {image}")
            files.append(SampleFiles(mask.stem, image, {"mask": (mask, decode_object_mask)}))
        super().__init__(root, require_samples(files, root, pattern, what))
