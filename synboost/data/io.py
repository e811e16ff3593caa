"""Reading images and label maps safely, listing image folders completely, and writing any output atomically.

One reader for the whole package: every image goes through :func:`read_image`, every label map through
:func:`read_label`. Both turn the odd cases into a defined result or one clear :class:`ImageReadError` line:

* grayscale -> replicated to RGB; RGBA / LA -> alpha dropped; 16-bit -> scaled to 8 bit; palette PNGs are
  expanded by OpenCV; EXIF orientation is ignored (driving datasets are stored upright).
* missing, empty, truncated or non-image files, dangling links, folders -> ``ImageReadError("<path>: ...")``
  (its ``path`` attribute is the file). What the decoders print on stderr (``libpng error: ...``, OpenCV's
  ``[ WARN:...]`` lines) is caught and put into that line instead of reaching the console; a file that decodes
  but makes the decoder warn is named once per distinct message on the ``synboost.data.io`` logger.

:func:`scan_images` lists a folder and accounts for every entry: the images, and each entry it does not read
with the reason (a dangling link, a folder, another suffix, a special file); hidden and temporary entries (a
leading ``.``: our own ``.synboost.lock`` and ``.<name>.*.tmp`` files among them) are only counted.

Writers go through a temporary file in the target folder and ``os.replace`` so that an interrupted run never
leaves a half-written file behind.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2
import numpy as np

from synboost.errors import ImageReadError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm")

cv2.setNumThreads(1)  # the data loaders parallelise across files; OpenCV's own threads only contend
_log = logging.getLogger(__name__)


def _fail(path: Path, what: str) -> ImageReadError:
    err = ImageReadError(f"{path}: {what}")
    err.path = str(path)  # type: ignore[attr-defined]
    return err


# ------------------------------------------------------------------------------------- decoder stderr


#: a line a decoder library prints: OpenCV's log, libpng, libjpeg(-turbo), libtiff
_DECODER_LINE = re.compile(r"\s*(\[\s*(WARN|ERROR|INFO|DEBUG|FATAL)\b|libpng |libtiff|TIFF|Corrupt JPEG|Premature "
                           r"end of JPEG|Not a JPEG|Invalid (JPEG|SOS)|Bogus |Unsupported marker|JPEG )")
_OPENCV_PREFIX = re.compile(r"^\[\s*\w+:[\d@.]+\]\s*(global\s+)?(\S+\.(cpp|hpp|c|h):\d+\s+\w+\s+)?")


class _StderrCatcher:
    """fd 2 redirected into a temporary file while decoders run, so that libpng's ``fprintf(stderr, ...)`` and
    OpenCV's log lines never reach the console. Thread-safe: concurrent decodes share one redirection (fd 2 is
    the process's), an ``exclusive`` one waits until it runs alone (so that what was printed is its file's).
    Whatever else was written to fd 2 meanwhile (a progress bar, another thread's message) is written back."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._users = self._waiting = 0
        self._exclusive, self._file, self._saved = False, None, -1

    def after_fork(self) -> None:
        """In a forked child: its real stderr back if the fork came during a decode, and a fresh state."""
        if self._saved >= 0:
            os.dup2(self._saved, 2)
            os.close(self._saved)
        self.__init__()

    @contextlib.contextmanager
    def catch(self, exclusive: bool = False) -> Iterator[list[str]]:
        """Yield a list that receives, on exit, the decoder lines printed while inside (prefixes stripped)."""
        said: list[str] = []
        with self._cond:
            if exclusive:
                self._waiting += 1
                self._cond.wait_for(lambda: self._users == 0)
                self._waiting -= 1
                self._exclusive = True
            else:
                self._cond.wait_for(lambda: not self._exclusive and not self._waiting)
            if self._users == 0:
                self._start()
            self._users += 1
            start = self._offset()
        try:
            yield said
        finally:
            with self._cond:
                if self._saved >= 0:
                    text = os.pread(self._file.fileno(), self._offset() - start, start).decode("utf-8", "replace")
                    said += [_OPENCV_PREFIX.sub("", ln).strip() for ln in re.split(r"[\r\n]+", text)
                             if _DECODER_LINE.match(ln)]
                self._users -= 1
                if self._users == 0:
                    self._stop()
                    self._exclusive = False
                    self._cond.notify_all()

    def _offset(self) -> int:
        return os.lseek(self._file.fileno(), 0, os.SEEK_CUR) if self._saved >= 0 else 0

    def _start(self) -> None:
        if not hasattr(os, "pread"):
            return
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix=".synboost-stderr-")
            with contextlib.suppress(AttributeError, OSError, ValueError):
                sys.stderr.flush()
            self._saved = os.dup(2)
            os.dup2(self._file.fileno(), 2)
        except OSError:  # no fd 2 to redirect (a daemon): nothing reaches a console anyway
            self._saved = -1

    def _stop(self) -> None:
        if self._saved < 0:
            return
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._saved = -1
        fd = self._file.fileno()
        data = os.pread(fd, os.lseek(fd, 0, os.SEEK_CUR), 0)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        parts = re.split(rb"(?<=[\r\n])", data)  # a decoder line whose newline came late has another write inside
        others = b"".join(p for k, p in enumerate(parts) if not _DECODER_LINE.match(p.decode(errors="replace"))
                          or parts[k + 1:k + 2] == [b"\n"])
        if others:
            with contextlib.suppress(OSError):
                os.write(2, others)


_CATCHER = _StderrCatcher()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_CATCHER.after_fork)
_warned: set[str] = set()


def _decode(buf: np.ndarray, flags: int, path: Path) -> np.ndarray:
    """``cv2.imdecode`` with the decoders' stderr caught: a failure raises with what they said, a warning on a
    decoded file is logged (once per distinct message)."""
    def attempt(exclusive: bool) -> tuple[np.ndarray | None, list[str]]:
        with _CATCHER.catch(exclusive) as said:
            try:
                img = cv2.imdecode(buf, flags)
            except cv2.error as e:
                img = None
                said.append(" ".join(str(e).split()))
        return (None if img is None or img.size == 0 else img), said

    img, said = attempt(False)
    if img is None or said:  # again alone, so that what the decoders say is this file's
        img, said = attempt(True)
    said = list(dict.fromkeys(s for s in said if s))
    if img is None:
        detail = f"; the decoder said: {'; '.join(said)[:300]}" if said else ""
        raise _fail(path, f"not a readable image (corrupt, truncated or unsupported format{detail})")
    for msg in said:
        if msg not in _warned:
            _warned.add(msg)
            _log.warning("%s: decoded, but the decoder warned: %s (later files with this message are not named)",
                         path, msg)
    return img


def _imread(path: Path, flags: int) -> np.ndarray:
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise _fail(path, f"dangling symlink -> {os.readlink(path)}; fix or remove the link") from None
        raise _fail(path, "file not found") from None
    except OSError as e:
        raise _fail(path, f"cannot read the file ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise _fail(path, "is a folder, expected an image file")
    if not stat.S_ISREG(st.st_mode):
        raise _fail(path, "not a regular file (a FIFO, socket or device), expected an image file")
    if st.st_size == 0:
        raise _fail(path, "file is empty")
    try:  # np.fromfile + imdecode handles non-ASCII paths
        buf = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise _fail(path, f"cannot read the file ({e.strerror or e})") from None
    return _decode(buf, flags, path)


def _to_uint8(img: np.ndarray, path: Path) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    if img.dtype in (np.float32, np.float64):
        return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    raise _fail(path, f"unsupported pixel type {img.dtype}")


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
    raise _fail(path, f"{channels} channels; expected a gray, RGB or RGBA image")


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
        if lab.shape[2] in (3, 4) and (lab[..., 1] == lab[..., 0]).all() and (lab[..., 2] == lab[..., 0]).all():
            lab = lab[..., 0]
        else:
            raise _fail(path, f"label map has {lab.shape[2]} colour channels; expected a single-channel id image "
                        "(not the *_color.png visualisation)")
    if lab.dtype not in (np.uint8, np.uint16):
        raise _fail(path, f"label map of type {lab.dtype}; expected 8- or 16-bit integer ids")
    if shape is not None and tuple(lab.shape[:2]) != tuple(shape):
        raise _fail(path, f"label map is {lab.shape[0]}x{lab.shape[1]} but its image is {shape[0]}x{shape[1]}; "
                    "labels must have the image's size")
    if valid_ids is not None:
        present = np.unique(lab)
        bad = present[(present >= len(valid_ids)) | ~valid_ids[np.minimum(present, len(valid_ids) - 1)]]
        if bad.size:
            raise _fail(path, f"unknown label ids {bad[:10].tolist()} for this dataset")
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
        raise _fail(path, f"could not encode image of shape {arr.shape} and type {arr.dtype}")
    with atomic_path(path) as tmp:
        buf.tofile(str(tmp))


def write_npy(path: str | os.PathLike, arr: np.ndarray) -> None:
    """``np.save`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(arr))


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """JSON (numpy scalars and arrays, paths converted) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """A text file atomically."""
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


@dataclass(frozen=True)
class Ignored:
    """A folder entry that is not read as an image, and why. ``kind``: ``link`` (dangling), ``folder`` (named
    like an image), ``subfolder`` (not searched), ``suffix`` (not an image suffix), ``special`` (a FIFO, socket
    or device), ``unreadable`` (cannot be listed or inspected)."""

    path: Path
    reason: str
    kind: str

    def as_dict(self) -> dict[str, str]:
        """``{"path": ..., "reason": ...}`` for a JSON report."""
        return {"path": str(self.path), "reason": self.reason}


@dataclass
class Listing:
    """What :func:`scan_images` found: the image files (sorted), every other entry with its reason, and how
    many hidden / temporary entries (names starting with ``.``) were passed over."""

    images: list[Path] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)
    hidden: int = 0


def scan_images(folder: str | os.PathLike, recursive: bool = False, exclude: Iterable[str | os.PathLike] = ()
                ) -> Listing:
    """Every entry of ``folder`` accounted for: image files (by suffix) and the ignored entries with a reason.

    ``recursive``: search subfolders too (links to folders are not followed; they are reported). ``exclude``:
    folders passed over in silence (a run's own output folder inside its input)."""
    out = Listing()
    _scan(Path(folder), recursive, {Path(p).resolve() for p in exclude}, out)
    out.images.sort()
    out.ignored.sort(key=lambda i: i.path)
    return out


def _scan(folder: Path, recursive: bool, exclude: set[Path], out: Listing) -> None:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        out.ignored.append(Ignored(folder, f"cannot list the folder ({e.strerror or e})", "unreadable"))
        return

    def ignore(p: Path, reason: str, kind: str) -> None:
        out.ignored.append(Ignored(p, reason, kind))

    for e in entries:
        p = Path(e.path)
        if e.name.startswith("."):
            out.hidden += 1
            continue
        try:
            link = e.is_symlink()
            if link and not p.exists():
                ignore(p, f"dangling symlink -> {os.readlink(p)}", "link")
            elif e.is_dir():
                if exclude and p.resolve() in exclude:
                    continue
                if recursive and not link:
                    _scan(p, True, exclude, out)
                elif recursive:
                    ignore(p, f"a link to a folder (-> {os.readlink(p)}); not followed, pass that folder itself",
                           "subfolder")
                elif p.suffix.lower() in IMAGE_EXTENSIONS:
                    ignore(p, "a folder, not an image", "folder")
                else:
                    ignore(p, "a subfolder; not searched (pass recursive / --recursive)", "subfolder")
            elif not e.is_file():
                ignore(p, "not a regular file (a FIFO, socket or device)", "special")
            elif p.suffix.lower() not in IMAGE_EXTENSIONS:
                ignore(p, f"not an image suffix ({p.suffix or 'none'})", "suffix")
            else:
                out.images.append(p)
        except OSError as err:
            ignore(p, f"cannot inspect the entry ({err.strerror or err})", "unreadable")


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files in a folder, sorted by name (:func:`scan_images` without the report of the other entries)."""
    return scan_images(folder, recursive).images
