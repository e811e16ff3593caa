"""Benchmark submission formats: SegmentMeIfYouCan's HDF5 score files and the Fishyscapes container outputs.

**SegmentMeIfYouCan** (``road_anomaly_benchmark.Evaluation.save_output``): one file per frame,
``<root>/anomaly_p/<method>/<dataset>/<fid>.hdf5`` holding the HDF5 dataset ``value``: the anomaly map (higher =
more anomalous) cast to **float16**, written with ``compression=9`` (h5py: gzip at level 9). ``<root>`` plays the
role of the benchmark's ``DIR_OUTPUTS``; ``<dataset>`` is the name the benchmark stores frames under:
``AnomalyTrack-all``, ``ObstacleTrack-all``, ``LostAndFound-test`` (the splits it asks inference for; its
validation / test / NoKnown splits read these folders). ``<fid>`` is the image stem (LostAndFound: without
``_leftImg8bit``). Then ``DIR_OUTPUTS=<root> python -m road_anomaly_benchmark metric ...`` scores the files.
float16 keeps 11 significant bits: maps in [0, 1] lose ~3e-4 AP; wide-range scores (energies, logits) gain more
ties. Values beyond float16's range (|x| > 65504) are clipped to it rather than becoming infinite.

**Fishyscapes** (the container contract of ``hermannsblum/fishyscapes``): per image ``<dir>/<id>_anomaly.npy``
(float32 map, higher = more anomalous) and ``<dir>/<id>_segmentation.npy`` (train ids < 20; the validator wants
1024 x 2048 uint8-compatible ids). ``<id>`` is the image's stem without a trailing ``_rgb`` / ``_leftImg8bit``;
the validator sorts by the integer before the first ``_``. A pull request carries
``validation_performance.json`` (``ap`` and ``fpr`` as fractions on the public validation images), which
:func:`write_validation_performance` writes.

Every file is written atomically (a temporary file in the folder, then renamed), so an interrupted run never
leaves a half-written file; a file's presence means it is complete.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from synboost.data.io import atomic_path, write_json, write_npy
from synboost.errors import ConfigError, DataError

FORMATS = ("smiyc", "fishyscapes")
SMIYC_KEY = "value"  #: the HDF5 dataset name the benchmark reads
SMIYC_GZIP_LEVEL = 9
#: SegmentMeIfYouCan track -> the dataset folder its frames are stored under
SMIYC_DATASETS = {"anomaly": "AnomalyTrack-all", "obstacle": "ObstacleTrack-all"}
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_SUFFIXES = ("_leftImg8bit", "_rgb")


def parse_formats(formats: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"smiyc,fishyscapes"`` or a list -> a checked tuple (empty for None / "")."""
    if formats is None:
        return ()
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out = tuple(dict.fromkeys(f.strip().lower() for f in items if f.strip()))
    bad = [f for f in out if f not in FORMATS]
    if bad:
        raise ConfigError(f"unknown submission format {bad[0]!r}; choose from {', '.join(FORMATS)}")
    return out


def frame_id(name: str) -> str:
    """The benchmark id of a sample name: its last path part without ``_leftImg8bit`` / ``_rgb``."""
    stem = name.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in _SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def smiyc_dataset_name(dataset) -> str | None:
    """The SegmentMeIfYouCan storage name of one of our readers' datasets (None if it is not a SMIYC set)."""
    from synboost.data.benchmarks import LostAndFoundDataset, SMIYCDataset

    if isinstance(dataset, SMIYCDataset):
        return SMIYC_DATASETS[dataset.track]
    if isinstance(dataset, LostAndFoundDataset):
        return f"LostAndFound-{dataset.split}"
    return None


def guess_smiyc_dataset(images_dir: str | os.PathLike) -> str:
    """The SMIYC dataset name for a folder of images: ``dataset_AnomalyTrack/images`` -> AnomalyTrack-all,
    ``dataset_ObstacleTrack/images`` -> ObstacleTrack-all, ``.../leftImg8bit/<split>`` -> LostAndFound-<split>;
    otherwise the folder's own name."""
    p = Path(images_dir).resolve()
    parts = [p.name, p.parent.name]
    for track, folder in (("anomaly", "dataset_AnomalyTrack"), ("obstacle", "dataset_ObstacleTrack")):
        if folder in parts:
            return SMIYC_DATASETS[track]
    if p.parent.name == "leftImg8bit":
        return f"LostAndFound-{p.name}"
    if p.name == "leftImg8bit":
        return "LostAndFound-test"
    return p.name


# ------------------------------------------------------------------------------------------------ the files


def smiyc_path(root: str | os.PathLike, method: str, dataset: str, name: str) -> Path:
    """``<root>/anomaly_p/<method>/<dataset>/<fid>.hdf5``."""
    return Path(root) / "anomaly_p" / method / dataset / f"{frame_id(name)}.hdf5"


def fishyscapes_paths(folder: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """``(<folder>/<id>_anomaly.npy, <folder>/<id>_segmentation.npy)``."""
    i = frame_id(name)
    return Path(folder) / f"{i}_anomaly.npy", Path(folder) / f"{i}_segmentation.npy"


def _h5py():
    try:
        import h5py
    except ImportError:  # pragma: no cover - a declared dependency
        raise ConfigError("the SegmentMeIfYouCan format needs h5py: pip install h5py") from None
    return h5py


def to_float16(anomaly: np.ndarray) -> np.ndarray:
    """The map as SMIYC stores it: float16, with values beyond float16's range clipped to it (NaN refused)."""
    a = np.asarray(anomaly)
    if a.ndim != 2:
        raise DataError(f"an anomaly map must be H x W, got shape {a.shape}")
    if np.isnan(a).any():
        raise DataError("the anomaly map contains NaN; the benchmarks cannot score it")
    return np.clip(a, -_FLOAT16_MAX, _FLOAT16_MAX).astype(np.float16)


def write_smiyc(path: str | os.PathLike, anomaly: np.ndarray) -> Path:
    """One SegmentMeIfYouCan frame file (dataset ``value``, float16, gzip 9), atomically."""
    h5py = _h5py()
    value = to_float16(anomaly)
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset(SMIYC_KEY, data=value, compression="gzip", compression_opts=SMIYC_GZIP_LEVEL)
    return path


def read_smiyc(path: str | os.PathLike) -> np.ndarray:
    """The float16 map of a SegmentMeIfYouCan frame file."""
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            return f[SMIYC_KEY][()]
    except (OSError, KeyError) as e:
        raise DataError(f"{path}: not a SegmentMeIfYouCan score file with dataset '{SMIYC_KEY}' ({e})") from None


def write_fishyscapes(folder: str | os.PathLike, name: str, anomaly: np.ndarray,
                      segmentation: np.ndarray) -> tuple[Path, Path]:
    """``<id>_segmentation.npy`` (uint8 train ids), then ``<id>_anomaly.npy`` (float32), each atomically."""
    anomaly_path, seg_path = fishyscapes_paths(folder, name)
    write_npy(seg_path, fishyscapes_segmentation(segmentation))
    write_npy(anomaly_path, np.asarray(anomaly, np.float32))
    return anomaly_path, seg_path


def fishyscapes_segmentation(segmentation: np.ndarray) -> np.ndarray:
    """Train ids as uint8; the Fishyscapes validator refuses ids outside [0, 20)."""
    seg = np.asarray(segmentation)
    if seg.size and (seg.min() < 0 or seg.max() >= 20):
        raise DataError(f"segmentation ids must lie in [0, 20) for Fishyscapes; got {seg.min()}..{seg.max()}")
    return seg.astype(np.uint8)


def write_validation_performance(folder: str | os.PathLike, ap: float, fpr: float) -> Path:
    """``validation_performance.json`` of a Fishyscapes pull request (fractions, as the benchmark's own file)."""
    path = Path(folder) / "validation_performance.json"
    write_json(path, {"ap": float(ap), "fpr": float(fpr)})
    return path


# --------------------------------------------------------------------------------------- one run's target


@dataclass(frozen=True)
class Submission:
    """Where one method's submission files go: SMIYC files under ``root`` (method ``method``, dataset folder
    ``dataset``), Fishyscapes files in ``fishyscapes_dir`` (default ``root``)."""

    root: Path
    formats: tuple[str, ...]
    method: str = "method"
    dataset: str = "dataset"
    fishyscapes_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", parse_formats(self.formats))
        object.__setattr__(self, "root", Path(self.root))

    @property
    def fishyscapes_folder(self) -> Path:
        return Path(self.fishyscapes_dir) if self.fishyscapes_dir is not None else self.root

    def paths(self, name: str) -> dict[str, Path]:
        """The files ``name`` gets, in write order (keys ``fishyscapes_segmentation``, ``fishyscapes``,
        ``smiyc``)."""
        out: dict[str, Path] = {}
        if "fishyscapes" in self.formats:
            anomaly, seg = fishyscapes_paths(self.fishyscapes_folder, name)
            out["fishyscapes_segmentation"] = seg
            out["fishyscapes"] = anomaly
        if "smiyc" in self.formats:
            out["smiyc"] = smiyc_path(self.root, self.method, self.dataset, name)
        return out

    def done(self, name: str) -> bool:
        return all(p.exists() for p in self.paths(name).values())

    def write(self, name: str, anomaly: np.ndarray, segmentation: np.ndarray | None) -> None:
        for key, path in self.paths(name).items():
            write_output(key, path, anomaly, segmentation)


def write_output(key: str, path: Path, anomaly: np.ndarray, segmentation: np.ndarray | None) -> None:
    """Write one submission file of kind ``key`` (a key of :meth:`Submission.paths`)."""
    if key == "smiyc":
        write_smiyc(path, anomaly)
    elif key == "fishyscapes":
        write_npy(path, np.asarray(anomaly, np.float32))
    elif key == "fishyscapes_segmentation":
        if segmentation is None:
            raise DataError(f"{path}: the Fishyscapes format needs the segmentation, and the detector gave none")
        write_npy(path, fishyscapes_segmentation(segmentation))
    else:
        raise ConfigError(f"unknown submission file kind {key!r}")
