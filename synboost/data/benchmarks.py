"""Readers for the anomaly-segmentation benchmarks, in their released and their pre-processed layouts.

All return :class:`~synboost.data.datasets.Sample` dicts with ``anomaly`` (uint8: 0 inlier, 1 anomaly,
255 void / outside the ROI) wherever the benchmark publishes labels, and pair files by name (see
:mod:`synboost.data.datasets` for the shared rules and errors).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Collection

import numpy as np

from synboost.data.datasets import (
    ImageDataset,
    SampleFiles,
    decode_anomaly,
    decode_train_ids,
    id_table,
    require_dir,
    require_samples,
    require_target,
)
from synboost.data.io import list_images, read_label
from synboost.data.labels import IGNORE
from synboost.errors import DataError, ImageReadError

#: Fishyscapes variant -> its folder names (PEBAL's copy of SynBoost's layout, SynBoost's own tar)
FISHYSCAPES_FOLDERS = {"laf": ("LostAndFound", "fs_lost_and_found"), "static": ("Static", "fs_static")}
#: SegmentMeIfYouCan track -> its folder name
SMIYC_FOLDERS = {"anomaly": "dataset_AnomalyTrack", "obstacle": "dataset_ObstacleTrack"}

# ------------------------------------------------------------------------------ SynBoost's folder layout


def anomaly_folder_files(root: Path, roi: bool, what: str) -> list[SampleFiles]:
    """Samples of the SynBoost layout: ``original/<name>.{png,jpg}``, ``labels/<name>.png`` (0/1/255),
    optionally ``labels_with_ROI/<name>.png`` (used instead when ``roi``) and ``semantic/<name>.png``
    (train ids, read as ``label``)."""
    pattern = "original/*.{png,jpg}"
    images_dir = require_dir(root, "original", pattern, what)
    labels_dir = require_dir(root, "labels", "labels/<name>.png", f"{what}: anomaly labels 0 / 1 / 255")
    if roi and (root / "labels_with_ROI").is_dir():
        labels_dir = root / "labels_with_ROI"
    semantic_dir = root / "semantic"
    files = []
    for image in list_images(images_dir):
        targets = {"anomaly": (require_target(image, labels_dir / f"{image.stem}.png"), decode_anomaly)}
        if semantic_dir.is_dir():
            targets["label"] = (require_target(image, semantic_dir / f"{image.stem}.png"), decode_train_ids)
        files.append(SampleFiles(image.stem, image, targets))
    return require_samples(files, root, pattern, what)


class AnomalyFolderDataset(ImageDataset):
    """The pre-processed layout of SynBoost (also read by PEBAL) and of the synthetic world's anomaly split.

    ``original/<name>.{png,jpg}`` + ``labels/<name>.png`` (0 inlier, 1 anomaly, 255 void) -> ``anomaly``;
    with ``roi=True`` the ``labels_with_ROI/`` masks (255 outside the region of interest) are used where
    that folder exists, else ``labels/``; a ``semantic/`` folder (train ids) adds ``label``.
    """

    def __init__(self, root: str | os.PathLike, roi: bool = False) -> None:
        root = Path(root)
        super().__init__(root, anomaly_folder_files(root, roi, "an anomaly set in SynBoost's layout"))


class FishyscapesDataset(AnomalyFolderDataset):
    """Fishyscapes Lost & Found (``variant="laf"``, 100 val images) or Static (``"static"``, 30 val images) in
    SynBoost's layout: ``fishyscapes/{LostAndFound,Static}/{original,labels}`` (SynBoost's own tar names them
    ``fs_lost_and_found`` / ``fs_static``). ``root`` is the folder holding ``fishyscapes``, the ``fishyscapes``
    folder, or the variant folder itself.
    """

    def __init__(self, root: str | os.PathLike, variant: str = "laf", roi: bool = False) -> None:
        root = Path(root)
        if variant not in FISHYSCAPES_FOLDERS:
            raise DataError(f"Fishyscapes variant '{variant}': expected one of {', '.join(FISHYSCAPES_FOLDERS)}")
        self.variant = variant
        names = FISHYSCAPES_FOLDERS[variant]
        first = names[0]
        others = {n for v, ns in FISHYSCAPES_FOLDERS.items() if v != variant for n in ns}
        candidates = [base / n for base in (root, root / "fishyscapes") for n in names]
        if root.name not in others:  # the variant folder itself, unless it is the other variant's
            candidates.insert(0, root)
        folder = next((c for c in candidates if (c / "original").is_dir()), None)
        if folder is None:
            raise DataError(
                f"{root}: expected {first}/original/*.png (Fishyscapes {first} val, SynBoost layout; "
                f"also fishyscapes/{first}/ or the {first} folder itself); found no such folder"
            )
        super().__init__(folder, roi=roi)


# ------------------------------------------------------------------------------------------- Road Anomaly

_ROAD_ANOMALY_TABLE = id_table([0, 1, 2])


def decode_road_anomaly(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Road Anomaly's ``labels_semantic.png``: 2 anomaly -> 1; 0 (and 1, LabelGrab's "road") -> 0; no void."""
    return (read_label(path, shape, _ROAD_ANOMALY_TABLE) == 2).astype(np.uint8)


class RoadAnomalyDataset(ImageDataset):
    """Road Anomaly (Lis et al. 2019, 60 images): the original release, ``frames/<name>.jpg`` +
    ``frames/<name>.labels/labels_semantic.png``, or SynBoost's layout ``original/`` + ``labels/`` (0/1).
    Every pixel is evaluated (the labels have no void)."""

    def __init__(self, root: str | os.PathLike) -> None:
        root = Path(root)
        what = "Road Anomaly"
        if (root / "frames").is_dir() or not (root / "original").is_dir():
            pattern = "frames/<name>.jpg + frames/<name>.labels/labels_semantic.png (or original/ + labels/)"
            frames = require_dir(root, "frames", pattern, what)
            files = [
                SampleFiles(image.stem, image, {"anomaly": (self._label(image), decode_road_anomaly)})
                for image in list_images(frames)
            ]
            files = require_samples(files, root, pattern, what)
        else:
            files = anomaly_folder_files(root, roi=False, what=what)
        super().__init__(root, files)

    @staticmethod
    def _label(image: Path) -> Path:
        return require_target(image, image.parent / f"{image.stem}.labels" / "labels_semantic.png")


# ------------------------------------------------------------------------------------- SegmentMeIfYouCan


class SMIYCDataset(ImageDataset):
    """SegmentMeIfYouCan: ``track="anomaly"`` (``dataset_AnomalyTrack/images/<fid>.jpg``, RoadAnomaly21) or
    ``"obstacle"`` (``dataset_ObstacleTrack/images/<fid>.webp``, RoadObstacle21).

    ``labels_masks/<fid>_labels_semantic.png`` (0 / 1 / 255) becomes ``anomaly`` where it exists (the public
    validation frames); frames without one (the hidden test set) have no ``anomaly`` key, or are left out with
    ``labelled_only=True``. ``root`` is the track folder or the folder that holds it.
    """

    def __init__(self, root: str | os.PathLike, track: str = "anomaly", labelled_only: bool = False) -> None:
        root = Path(root)
        if track not in SMIYC_FOLDERS:
            raise DataError(f"SegmentMeIfYouCan track '{track}': expected one of {', '.join(SMIYC_FOLDERS)}")
        self.track = track
        folder_name = SMIYC_FOLDERS[track]
        folder = root if root.name == folder_name else root / folder_name
        if not folder.is_dir():
            raise DataError(
                f"{root}: expected {folder_name}/images/ (the SegmentMeIfYouCan {track} track); found no such folder"
            )
        what = f"the SegmentMeIfYouCan {track} track frames"
        images = require_dir(folder, "images", "images/<fid>.{jpg,webp}", what)
        files = []
        for image in list_images(images):
            label = folder / "labels_masks" / f"{image.stem}_labels_semantic.png"
            if label.is_file():
                files.append(SampleFiles(image.stem, image, {"anomaly": (label, decode_anomaly)}))
            elif not labelled_only:
                files.append(SampleFiles(image.stem, image))
        pattern = "images/<fid>.{jpg,webp}"
        if labelled_only:
            pattern += " with labels_masks/<fid>_labels_semantic.png"
        super().__init__(folder, require_samples(files, folder, pattern, what))


# ------------------------------------------------------------------------------------------ LostAndFound


def _lut(default: int, pairs: dict[int, int]) -> np.ndarray:
    lut = np.full(256, default, dtype=np.uint8)
    for src, dst in pairs.items():
        lut[src] = dst
    return lut


_LAF_FROM_IDS = _lut(1, {0: IGNORE, 1: 0})  # 0 void, 1 free road, 2.. obstacle classes
_LAF_FROM_TRAIN_IDS = _lut(IGNORE, {1: 0, 2: 1})  # PEBAL / Meta-OoD: in = 1, out = 2, else ignore


def decode_laf_ids(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """LostAndFound ``gtCoarse_labelIds``: 0 void -> 255, 1 road -> 0, every obstacle id (>= 2) -> 1."""
    return _LAF_FROM_IDS[np.minimum(read_label(path, shape), 255)]


def decode_laf_train_ids(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """LostAndFound ``gtCoarse_labelTrainIds``: 1 road -> 0, 2 obstacle -> 1, anything else -> 255."""
    return _LAF_FROM_TRAIN_IDS[np.minimum(read_label(path, shape), 255)]


def read_name_list(path: str | os.PathLike) -> set[str]:
    """Names from a text file, one per line; blank lines and ``#`` comments are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: expected a text file of scene or frame names, one per line; found no such file")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {line for line in lines if line}


class LostAndFoundDataset(ImageDataset):
    """LostAndFound (Pinggera et al. 2016) in its Cityscapes-style release; the test split has 1203 frames.

    Images ``leftImg8bit/<split>/<scene>/<stem>_leftImg8bit.png``; labels
    ``gtCoarse/<split>/<scene>/<stem>_gtCoarse_labelIds.png`` (0 void -> 255, 1 road -> 0, obstacles >= 2 -> 1,
    so the ROI is road + obstacles), or ``<stem>_gtCoarse_labelTrainIds.png`` where labelIds is absent
    (1 -> 0, 2 -> 1, else 255, as PEBAL reads it). Names are the stems.

    ``drop_empty``: leave out frames whose label has no road and no obstacle pixel. They are found by decoding
    every label once when the dataset is opened (about 10 ms per 2048x1024 label, so 10-20 s for the 1203 test
    frames). The criterion is the one SegmentMeIfYouCan and SynBoost state for the 17 test frames they drop as
    invalid (an all-zero labelIds map); they drop them by position in the sorted frame list, which shifts on a
    partial copy, this reader by content. A label that cannot be read here is kept, so that reading its
    sample reports it. Dropped names are in ``dropped``.

    ``no_known``: the frames to leave out for the "NoKnown" variant (SegmentMeIfYouCan's LostAndFound-testNoKnown,
    1043 frames: without the scene with children and the bicycle sequences), as a collection of names or the
    path of a text file with one name per line. A name is a scene folder (``<scene>``), a frame stem, or
    ``<scene>/<stem>``. The benchmark's own list is a data file given here like any other; excluded names are
    in ``excluded``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "test",
        no_known: str | os.PathLike | Collection[str] | None = None,
        drop_empty: bool = True,
    ) -> None:
        root = Path(root)
        self.split = split
        what = f"the LostAndFound {split} images"
        pattern = f"leftImg8bit/{split}/<scene>/*_leftImg8bit.png"
        images_dir = require_dir(root, f"leftImg8bit/{split}", pattern, what)
        gt_pattern = f"gtCoarse/{split}/<scene>/*_gtCoarse_labelIds.png"
        gt_dir = require_dir(root, f"gtCoarse/{split}", gt_pattern, "the LostAndFound labels")
        exclude = read_name_list(no_known) if isinstance(no_known, (str, os.PathLike)) else set(no_known or ())
        self.excluded: list[str] = []
        self.dropped: list[str] = []
        files = []
        for scene in sorted(p for p in images_dir.iterdir() if p.is_dir()):
            for image in list_images(scene):
                if not image.stem.endswith("_leftImg8bit"):
                    continue
                stem = image.stem[: -len("_leftImg8bit")]
                if exclude & {scene.name, stem, f"{scene.name}/{stem}"}:
                    self.excluded.append(stem)
                    continue
                gt = gt_dir / scene.name / f"{stem}_gtCoarse"
                ids = Path(f"{gt}_labelIds.png")
                label = require_target(image, ids, Path(f"{gt}_labelTrainIds.png"))
                decode = decode_laf_ids if label == ids else decode_laf_train_ids
                if drop_empty and _is_empty(label, label_ids=label == ids):
                    self.dropped.append(stem)
                    continue
                files.append(SampleFiles(stem, image, {"anomaly": (label, decode)}))
        super().__init__(root, require_samples(files, root, pattern, what))


def _is_empty(label: Path, label_ids: bool) -> bool:
    """True if the label has no road and no obstacle pixel; False if it cannot be read (reported later)."""
    try:
        lab = read_label(label)
    except ImageReadError:
        return False
    return not (lab.any() if label_ids else ((lab == 1) | (lab == 2)).any())
