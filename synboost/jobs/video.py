"""Videos: ``synboost infer --pipeline P --video IN.mp4 --out DIR`` (``--video DIR``: every video of a folder).

Per video, ``DIR/<stem>/`` gets ``overlay.mp4`` (heatmap overlay, with the objects' boxes, at the input frame
rate), with ``save_maps`` ``maps/<frame:06d>.npz`` (float16 ``anomaly``), with ``objects`` ``objects.json`` (per
frame: index, time, :func:`~synboost.jobs.objects.find_objects`), and ``progress.json``; ``DIR/report.json`` lists
every video. PyAV decodes in a background thread, the detector takes batches of RGB uint8 frames, a writer thread
draws and encodes (libx264, else mpeg4; yuv420p, no B-frames; odd sizes padded by one edge pixel).

Resuming: the overlay is encoded in segments of ``segment_frames`` frames (``segments/seg_<start>_<count>.mp4``,
renamed into place after their maps and objects: a segment on disk is finished), so a killed run loses at most
one segment. The next run checks the input (size, mtime) and the settings against ``progress.json``, decodes the
frames already done without the detector (decoding, not seeking: exact on every container) and goes on. At the
end the segments' packets are remuxed into ``overlay.mp4`` (no re-encoding) and the segments removed. A corrupt or
truncated video (a decoder error, or fewer frames than the container declares) is one line naming the file and the
frames done; those frames are kept and joined like any others.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from synboost import viz
from synboost.data.io import atomic_path, write_json, write_npz
from synboost.errors import DataError, SynboostError
from synboost.jobs.objects import ObjectSettings

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".ts", ".mts", ".mpg", ".mpeg", ".wmv", ".flv")
SEGMENT_FRAMES = 120
_SEG = re.compile(r"seg_(\d{8})_(\d{6})\.mp4")
_CODECS = {"libx264": {"bf": "0", "crf": "18", "preset": "veryfast"}, "mpeg4": {"bf": "0", "qscale": "3"}}


class _Skip(Exception):
    """A video that cannot be (fully) processed: its one-line reason and the frames done."""

    def __init__(self, reason: str, frames: int = 0) -> None:
        super().__init__(reason)
        self.reason, self.frames = reason, frames


def _av():
    try:
        import av
    except ImportError:
        raise SynboostError("video needs PyAV: pip install av") from None
    return av


def pick_codec() -> str:
    """The encoder this PyAV build has: libx264, else mpeg4."""
    av = _av()
    for name in _CODECS:
        with contextlib.suppress(av.FFmpegError, ValueError):
            return av.codec.Codec(name, "w").name
    raise SynboostError("this PyAV build has neither the libx264 nor the mpeg4 encoder; reinstall av (pip install av)")


def list_videos(path: str | os.PathLike) -> tuple[list[tuple[str, Path]], list[dict[str, str]]]:
    """(stem, file) of a video file, or of every video in a folder (by suffix, sorted), and the folder's other
    files as ``{"path", "reason"}`` (subfolders and hidden entries are not listed)."""
    p = Path(path)
    if p.is_file():
        return [(p.stem, p)], []
    if not p.is_dir():
        raise DataError(f"{p}: no such video file or folder; give a video (.mp4, .mkv, ...) or a folder of them")
    videos, ignored = [], []
    for f in sorted(p.iterdir()):
        if f.name.startswith(".") or f.is_dir():
            continue
        if f.suffix.lower() in VIDEO_SUFFIXES:
            videos.append((f.stem, f))
        else:
            ignored.append({"path": str(f), "reason": f"not a video ({', '.join(VIDEO_SUFFIXES[:4])}, ...)"})
    if not videos:
        raise DataError(f"{p}: no videos ({', '.join(VIDEO_SUFFIXES)}) in the folder")
    return videos, ignored


class _Segments:
    """The overlay encoder, one closed segment file every ``size`` frames (runs on the writer thread)."""

    def __init__(self, folder: Path, fps, codec: str, size: int, objects: bool) -> None:
        self.folder, self.fps, self.codec, self.size, self.objects = folder, fps, codec, size, objects
        self.out = self.stream = self.tmp = None
        self.start, self.count, self.entries = 0, 0, []

    def add(self, index: int, image: np.ndarray, entry: dict | None) -> None:
        av = _av()
        if self.out is None:
            self.start, self.count, self.entries = index, 0, []
            self.folder.mkdir(parents=True, exist_ok=True)
            self.tmp = self.folder / f".seg_{index:08d}.tmp.mp4"
            self.out = av.open(str(self.tmp), "w")
            self.stream = self.out.add_stream(self.codec, rate=self.fps, options=_CODECS[self.codec])
            self.stream.height, self.stream.width = image.shape[0], image.shape[1]
            self.stream.pix_fmt = "yuv420p"
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            self.out.mux(packet)
        self.count += 1
        if entry is not None:
            self.entries.append(entry)
        if self.count >= self.size:
            self.commit()

    def commit(self) -> None:
        """Close the open segment: flush, write its objects, rename it into place (the segment is then done)."""
        if self.out is None:
            return
        for packet in self.stream.encode():
            self.out.mux(packet)
        self.out.close()
        name = f"seg_{self.start:08d}_{self.count:06d}"
        if self.objects:
            write_json(self.folder / f"{name}.json", self.entries)
        os.replace(self.tmp, self.folder / f"{name}.mp4")
        self.out = None

    def abort(self) -> None:
        """Drop the open segment (an error or an interrupt): its frames are redone by the next run."""
        if self.out is not None:
            with contextlib.suppress(Exception):
                self.out.close()
            self.tmp.unlink(missing_ok=True)
            self.out = None


def finished_segments(folder: Path, maps: Path | None = None, objects: bool = False) -> list[tuple[int, int, Path]]:
    """The segments on disk that continue each other from frame 0 (start, count, file) and have their objects
    file and (``maps``) their frames' maps; the rest are removed (left by a killed run, or by another one)."""
    found = sorted((int(m[1]), int(m[2]), f) for f in folder.glob("seg_*.mp4") if (m := _SEG.fullmatch(f.name)))
    chain, end = [], 0
    for start, count, f in found:
        ok = start == end and (not objects or f.with_suffix(".json").is_file())
        ok = ok and (maps is None or all((maps / f"{i:06d}.npz").is_file() for i in range(start, start + count)))
        if not ok:
            break
        chain.append((start, count, f))
        end = start + count
    keep = {f.stem for _, _, f in chain}
    for f in folder.iterdir():
        if f.name.startswith(".seg_") or (f.name.startswith("seg_") and f.stem not in keep):
            f.unlink(missing_ok=True)
    return chain


def join_segments(segments: list[Path], out: Path) -> int:
    """Remux the segments' packets, one after the other, into ``out`` (atomically); returns the frame count.
    Segments must share codec, size, time base and codec headers (they do: one encoder setting per run)."""
    av = _av()
    frames = 0
    with atomic_path(out) as tmp, av.open(str(tmp), "w") as dst:
        ost, first, offset = None, None, 0
        for seg in segments:
            with av.open(str(seg)) as src:
                ist = src.streams.video[0]
                key = (ist.codec_context.name, ist.width, ist.height, ist.time_base, bytes(ist.codec_context.extradata
                                                                                           or b""))
                if ost is None:
                    ost, first = dst.add_stream_from_template(ist), key
                elif key != first:
                    raise DataError(f"{seg}: encoded with other settings than {segments[0].name}; run with --fresh")
                step = max(1, round(1 / (ist.average_rate * ist.time_base))) if ist.average_rate else 1
                end = offset
                for packet in src.demux(ist):
                    if packet.dts is None:
                        continue
                    packet.pts += offset
                    packet.dts += offset
                    end = max(end, packet.pts + (packet.duration or step))
                    packet.stream = ost
                    dst.mux(packet)
                    frames += 1
                offset = end
    return frames


class _Video:
    """One video's run into its folder (see the module docstring)."""

    def __init__(self, detector, src: Path, folder: Path, save_maps: bool, objects: ObjectSettings | None,
                 segment_frames: int, codec: str) -> None:
        self.detector, self.src, self.dir, self.save_maps, self.objects = detector, src, folder, save_maps, objects
        self.segment_frames, self.codec = segment_frames, codec
        self.seg_dir, self.maps = folder / "segments", folder / "maps"
        self.progress_path, self.overlay = folder / "progress.json", folder / "overlay.mp4"
        try:
            st = os.stat(src)
        except OSError as e:
            raise _Skip(f"{src}: cannot be read ({e.strerror}); check the file") from None
        self.signature = {"source": str(src.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                          "save_maps": save_maps, "codec": codec,
                          "objects": None if objects is None else {k: v for k, v in objects.as_dict().items()
                                                                   if k != "source"}}
        self.entry: dict[str, Any] = {"name": folder.name, "file": str(src), "overlay": str(self.overlay),
                                      "maps": str(self.maps) if save_maps else None,
                                      "objects": str(folder / "objects.json") if objects else None, "new_frames": 0}

    def _state(self, resume: bool) -> dict | None:
        """The earlier run's progress (None: start afresh, after removing its outputs)."""
        old = None
        if resume and self.progress_path.is_file():
            with contextlib.suppress(OSError, ValueError):
                old = json.loads(self.progress_path.read_text())
        if old is None:
            shutil.rmtree(self.seg_dir, ignore_errors=True)
            shutil.rmtree(self.maps, ignore_errors=True)
            for p in (self.overlay, self.dir / "objects.json", self.progress_path):
                p.unlink(missing_ok=True)
            return None
        was = old.get("signature", {})
        if any(was.get(k) != self.signature[k] for k in ("source", "size", "mtime_ns")):
            raise _Skip(f"{self.src}: the file changed since the run in {self.dir} began (size or time differ); "
                        "run with --fresh to start over")
        changed = [f"{k} {was.get(k)} -> {v}" for k, v in self.signature.items() if was.get(k) != v]
        if changed:
            raise _Skip(f"{self.dir}: started with other settings ({'; '.join(changed)}); run with the same flags, "
                        "or --fresh to start over")
        return old

    def run(self, resume: bool, progress: bool) -> dict[str, Any]:
        """Process the video; returns its report entry (``status`` done | done_earlier; ``reason``: the one line
        of a corrupt or truncated video, whose frames up to there are done)."""
        old = self._state(resume)
        if old and old.get("finished") and self.overlay.is_file():
            shutil.rmtree(self.seg_dir, ignore_errors=True)
            return {**self.entry, **{k: old.get(k) for k in ("frames", "fps", "reason")}, "status": "done_earlier"}
        self.dir.mkdir(parents=True, exist_ok=True)
        chain = finished_segments(self.seg_dir, self.maps if self.save_maps else None, self.objects is not None) \
            if self.seg_dir.is_dir() else []
        start = chain[-1][0] + chain[-1][1] if chain else 0
        av = _av()
        try:
            container = av.open(str(self.src))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise _Skip(f"{self.src}: cannot be read as a video ({' '.join(str(e).split())}); re-encode or copy it "
                        f"again and run with --fresh" + (f" ({start} frames done earlier are kept)" if start else ""),
                        start) from None
        with container:
            if not container.streams.video:
                raise _Skip(f"{self.src}: has no video stream; give a video file", start)
            stream = container.streams.video[0]
            fps = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not fps:
                raise _Skip(f"{self.src}: has no frame rate; re-encode it with one (ffmpeg -r 25 ...)", start)
            declared = int(stream.frames or 0)
            self.entry["fps"] = str(fps)
            write_json(self.progress_path, {"signature": self.signature, "finished": False, "fps": str(fps)})
            done, reason = self._frames(container, stream, fps, start, declared, progress)
        total = start + done
        self.entry.update(new_frames=done, frames=total)
        if reason is None and declared and total < declared:
            reason = f"{self.src}: the video ends after {total} of the {declared} frames it declares (truncated?)"
        if reason is not None:
            reason += (f"; the {total} frames done are in {self.overlay}" if total else "; no frame could be read") \
                + "; copy the complete file again and run with --fresh"
        if total == 0:
            raise _Skip(reason or f"{self.src}: the video has no frames", 0)
        self._finish(fps, total, reason)
        return {**self.entry, "status": "done", "reason": reason}

    def _frames(self, container, stream, fps, start: int, declared: int, progress: bool) -> tuple[int, str | None]:
        """Decode (thread), detect (here), draw and encode (writer thread) frames ``start..``; returns the number
        of frames done and the decoder's one-line error (None at a clean end)."""
        bs = max(1, int(getattr(self.detector, "batch_size", 1) or 1))
        q: queue.Queue = queue.Queue(maxsize=2 * bs + 2)
        stop = threading.Event()
        error: list[str] = []
        crash: list[BaseException] = []
        ffmpeg_error = (_av().FFmpegError, OSError)

        def decode() -> None:
            i, size = 0, None
            try:
                for frame in container.decode(stream):
                    if stop.is_set():
                        return
                    if i >= start:
                        size = size or (frame.width, frame.height)
                        if (frame.width, frame.height) != size:
                            frame = frame.reformat(width=size[0], height=size[1])
                        rgb = frame.to_ndarray(format="rgb24")
                        while not stop.is_set():
                            with contextlib.suppress(queue.Full):
                                q.put((i, frame.time, rgb), timeout=0.1)
                                break
                    i += 1
            except ffmpeg_error as e:  # the file is corrupt or truncated from here on
                error.append(f"{self.src}: the video is corrupt or truncated at frame {i} ({' '.join(str(e).split())})")
            except BaseException as e:  # anything else is not the file's fault: raised in the main thread
                crash.append(e)
            finally:
                q.put(None)

        segments = _Segments(self.seg_dir, fps, self.codec, self.segment_frames, self.objects is not None)
        writer = ThreadPoolExecutor(1, thread_name_prefix="synboost-video-write")
        pending: deque = deque()
        bar = tqdm(total=declared or None, initial=start, unit="frame", desc=self.dir.name, disable=not progress,
                   dynamic_ncols=True, leave=False)
        done = 0
        reader = threading.Thread(target=decode, name="synboost-video-read", daemon=True)
        reader.start()
        try:
            batch, end = [], False
            while not end:
                item = q.get()
                end = item is None
                if not end:
                    batch.append(item)
                if batch and (end or len(batch) >= bs):
                    for (i, t, rgb), res in zip(batch, self._detect([b[2] for b in batch])):
                        pending.append(writer.submit(self._write, segments, i, t, rgb, res))
                    batch = []
                while pending and (end or len(pending) > 2 * bs):
                    pending.popleft().result()
                    done += 1
                    bar.update()
            if crash:
                raise crash[0]
            writer.submit(segments.commit).result()
        finally:
            stop.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    q.get_nowait()
            reader.join()
            writer.shutdown(wait=True, cancel_futures=True)
            segments.abort()
            bar.close()
        return done, (error[0] if error else None)

    def _detect(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        maps = [np.asarray(r["anomaly"], np.float32) for r in self.detector(frames)]
        if len(maps) != len(frames) or any(m.shape != f.shape[:2] for m, f in zip(maps, frames)):
            raise RuntimeError(f"{type(self.detector).__name__} gave {len(maps)} maps of shapes "
                               f"{sorted({m.shape for m in maps})} for {len(frames)} frames of {frames[0].shape[:2]}")
        return maps

    def _write(self, segments: _Segments, i: int, t: float | None, rgb: np.ndarray, anomaly: np.ndarray) -> None:
        if self.save_maps:
            write_npz(self.maps / f"{i:06d}.npz", anomaly=anomaly.astype(np.float16))
        image = viz.overlay(rgb, anomaly)
        entry = None
        if self.objects is not None:
            objs = self.objects.find(anomaly)
            image = viz.draw_objects(image, objs)
            entry = {"frame": i, "time": None if t is None else round(float(t), 6), "objects": objs}
        pad = ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0))
        segments.add(i, np.pad(image, pad, mode="edge") if any(p[1] for p in pad) else image, entry)

    def _finish(self, fps, total: int, reason: str | None) -> None:
        """Join the segments into overlay.mp4 (+ objects.json), mark the video finished, remove the segments."""
        chain = finished_segments(self.seg_dir, None, self.objects is not None)
        if not chain or chain[-1][0] + chain[-1][1] != total:
            raise SynboostError(f"{self.seg_dir}: the segments do not cover frames 0..{total - 1}; run with --fresh")
        if self.objects is not None:
            frames = [e for _, _, f in chain for e in json.loads(f.with_suffix(".json").read_text())]
            write_json(self.dir / "objects.json", {"video": str(self.src), "fps": str(fps),
                                                   **self.objects.as_dict(), "frames": frames})
        join_segments([f for _, _, f in chain], self.overlay)
        write_json(self.progress_path, {"signature": self.signature, "finished": True, "frames": total,
                                        "fps": str(fps), "reason": reason})
        shutil.rmtree(self.seg_dir, ignore_errors=True)


def run_video(detector, video: str | os.PathLike, out_dir: str | os.PathLike, *, save_maps: bool = False,
              objects: ObjectSettings | None = None, resume: bool = True, progress: bool = True,
              segment_frames: int = SEGMENT_FRAMES, codec: str | None = None, info: dict | None = None,
              lock: bool = True) -> dict[str, Any]:
    """Run ``detector`` over a video file or a folder of videos; outputs under ``out_dir/<stem>/`` (see the module
    docstring); returns the run report (also ``out_dir/report.json``, rewritten after every video). ``objects``:
    find objects per frame and draw their boxes. ``lock``: hold the output folder's FolderLock."""
    from synboost.runtime import FolderLock

    items, ignored = list_videos(video)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: the output folder is a file; give a folder (created if missing)")
    codec = codec or pick_codec()
    if segment_frames < 1:
        raise DataError(f"segment_frames={segment_frames}: give 1 or more")
    entries: list[dict] = []
    t0 = time.perf_counter()

    def report(finished: bool) -> dict[str, Any]:
        secs, new = time.perf_counter() - t0, sum(e.get("new_frames", 0) for e in entries)
        by = {s: [e["name"] for e in entries if e["status"] == s] for s in ("done", "done_earlier", "skipped")}
        skipped = [{"name": e["name"], "file": e["file"], "reason": e["reason"], "frames_done": e.get("frames") or 0}
                   for e in entries if e.get("reason")]  # and the videos cut short, with the frames done
        rep = {"method": getattr(detector, "method", None), "detector": type(detector).__name__, **(info or {}),
               "video": str(video), "out_dir": str(out), "save_maps": save_maps,
               "objects": objects.as_dict() if objects else None, "codec": codec, "finished": finished,
               "counts": {"videos": len(items), **{k: len(v) for k, v in by.items()},
                          "cut_short": len(skipped) - len(by["skipped"]), "ignored": len(ignored)},
               "frames": new, "seconds": round(secs, 3), "frames_per_s": round(new / secs, 3) if secs > 0 else 0.0,
               "videos": entries, "done": by["done"], "done_earlier": by["done_earlier"], "skipped": skipped,
               "ignored": ignored}
        write_json(out / "report.json", rep)
        return rep

    with FolderLock(out, "infer") if lock else contextlib.nullcontext():
        ok = False
        try:
            seen: dict[str, Path] = {}
            for name, path in items:
                if name in seen:
                    entries.append({"name": name, "file": str(path), "status": "skipped", "frames": 0,
                                    "reason": f"{path}: same output name '{name}' as {seen[name]}; rename one"})
                    continue
                seen[name] = path
                job = None
                try:
                    job = _Video(detector, path, out / name, save_maps, objects, segment_frames, codec)
                    entries.append(job.run(resume, progress))
                except _Skip as e:
                    entries.append({**(job.entry if job else {"name": name, "file": str(path)}), "status": "skipped",
                                    "reason": e.reason, "frames": e.frames})
                report(False)
            ok = True
        finally:
            final = report(ok)
    return final
