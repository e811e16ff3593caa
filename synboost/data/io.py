"""Reading images and label maps safely, and writing any output atomically.

One reader for the whole package: every image goes through :func:`read_image`, every label map through
:func:`read_label`. Both turn the odd cases into a defined result or one clear :class:`ImageReadError` line:

* grayscale -> replicated to RGB; RGBA / LA -> alpha dropped; 16-bit -> scaled to 8 bit; palette PNGs are
  expanded by OpenCV; EXIF orientation is ignored (driving datasets are stored upright).
* missing, empty, truncated or non-image files -> ``ImageReadError("<path>: ...")``.

Writers go through a temporary file in the target folder and ``os.replace`` so that an interrupted run never
leaves a half-written file behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from synboost.errors import ImageReadError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm")

cv2.setNumThreads(1)  # the data loaders parallelise across files; OpenCV's own threads only contend


def _imread(path: Path, flags: int) -> np.ndarray:
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, expected an image file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: file is empty")
    # np.fromfile + imdecode handles non-ASCII paths and never prints OpenCV warnings for bad files
    buf = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(buf, flags)
    if img is None or img.size == 0:
        raise ImageReadError(f"{path}: not a readable image (corrupt or unsupported format)")
    return img


def _to_uint8(img: np.ndarray, path: Path) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    if img.dtype in (np.float32, np.float64):
        return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    raise ImageReadError(f"{path}: unsupported pixel type {img.dtype}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 of shape (H, W, 3)."""
    path = Path(path)
    img = _to_uint8(_imread(path, cv2.IMREAD_UNCHANGED), path)
    if img.ndim == 2:
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    channels = img.shape[2]
    if channels == 1:
        return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    if channels == 2:  # gray + alpha
        return np.ascontiguousarray(np.repeat(img[:, :, :1], 3, axis=2))
    if channels == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    raise ImageReadError(f"{path}: {channels} channels; expected a gray, RGB or RGBA image")


def read_label(
    path: str | os.PathLike,
    shape: tuple[int, int] | None = None,
    valid_ids: np.ndarray | None = None,
) -> np.ndarray:
    """Read a single-channel label map (ids as stored, uint8 or uint16).

    ``shape``: the (H, W) it must have (the image's size); ``valid_ids``: if given, a boolean table indexed by id
    that says which ids may occur. Colour label images are refused with a message: they are visualisations.
    """
    path = Path(path)
    lab = _imread(path, cv2.IMREAD_UNCHANGED)
    if lab.ndim == 3:
        if lab.shape[2] in (3, 4) and np.array_equal(lab[..., 0], lab[..., 1]) and np.array_equal(lab[..., 0], lab[..., 2]):
            lab = lab[..., 0]
        else:
            raise ImageReadError(
                f"{path}: label map has {lab.shape[2]} colour channels; expected a single-channel id image "
                "(not the *_color.png visualisation)"
            )
    if lab.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"{path}: label map of type {lab.dtype}; expected 8- or 16-bit integer ids")
    if shape is not None and tuple(lab.shape[:2]) != tuple(shape):
        raise ImageReadError(
            f"{path}: label map is {lab.shape[0]}x{lab.shape[1]} but its image is {shape[0]}x{shape[1]}; "
            "labels must have the image's size"
        )
    if valid_ids is not None:
        present = np.unique(lab)
        bad = present[(present >= len(valid_ids)) | ~valid_ids[np.minimum(present, len(valid_ids) - 1)]]
        if bad.size:
            raise ImageReadError(f"{path}: unknown label ids {bad[:10].tolist()} for this dataset")
    return lab


# ---------------------------------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_image(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write an RGB (H, W, 3) or single-channel (H, W) uint8/uint16 image atomically; format from the suffix."""
    path = Path(path)
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(path.suffix or ".png", arr)
    if not ok:
        raise ImageReadError(f"{path}: could not encode image of shape {arr.shape} and type {arr.dtype}")
    with atomic_path(path) as tmp:
        buf.tofile(str(tmp))


def write_npy(path: str | os.PathLike, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(arr))


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files in a folder, sorted by name (hidden and temporary files skipped)."""
    folder = Path(folder)
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
