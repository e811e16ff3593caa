"""Folder runs: a detector over a folder of images -> anomaly maps, pictures and a run report.

The job behind ``synboost infer --pipeline P --images DIR --out DIR``. Per image ``<name>`` (the path relative to
the images folder without suffix; subfolders are kept when ``recursive``), ``out`` receives, each file atomically:

* ``segmentation/<name>.png`` train ids (uint8), ``heatmaps/<name>.png`` (:func:`viz.heatmap`),
  ``overlays/<name>.png`` (:func:`viz.overlay`), then LAST ``maps/<name>.npy`` (float32 anomaly map at the input
  size; ``maps/<name>.npz`` holding float16 ``anomaly`` with ``float16=True``). With ``objects``
  (:class:`synboost.jobs.objects.ObjectSettings`) also ``objects/<name>.json``, the image's list of objects (bbox,
  area, centroid, mean and max score), whose boxes are drawn on the overlay. With ``formats`` the benchmark
  submission files of :mod:`synboost.submission` are written before the map: ``smiyc``
  (``<submission>/anomaly_p/<method>/<dataset>/<fid>.hdf5``) and ``fishyscapes``
  (``<submission>/<id>_anomaly.npy`` + ``<id>_segmentation.npy``); ``<submission>`` defaults to ``out``. Every file
  is atomic, so an image whose requested files all exist is finished and a killed run resumes cleanly
  (``resume=True`` skips finished images; asking for another output later computes just what is missing).
* ``report.json`` (``report.rank<k>.json`` per process when sharded; :func:`merge_reports` joins them): what ran,
  counts, the finished / skipped (with the reader's one-line reason) / done-earlier files, the ``ignored`` folder
  entries (not images: each ``{"path", "reason"}``; hidden ones only counted), seconds, images/s. It is rewritten
  every ``report_every`` images, so even a killed run leaves a useful report.

Every folder entry is done, done earlier, skipped or ignored; a file that cannot be read is skipped, never fatal.
One run at a time writes into a folder (:class:`synboost.runtime.FolderLock`; rank 0 holds it under torchrun).
Images are decoded in background threads while the detector runs, grouped into batches of one size (up to
``detector.batch_size``), and written in background threads (OpenCV releases the GIL). No model code here.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from synboost import viz
from synboost.data.io import read_image, scan_images, write_image, write_json, write_npy, write_npz
from synboost.errors import ConfigError, DataError, ImageReadError, SynboostError
from synboost.jobs.submission import Submission, frame_id, guess_smiyc_dataset, parse_formats, write_output

SAVE_OPTIONS = ("npy", "heatmap", "overlay", "segmentation")
#: the anomaly map last: it marks an image finished
_WRITE_ORDER = ("segmentation", "heatmap", "overlay", "objects", "npy")
_FOLDERS = {"segmentation": "segmentation", "heatmap": "heatmaps", "overlay": "overlays", "objects": "objects",
            "npy": "maps"}
#: what a run writes into its output folder (not inputs when that is the images folder)
_OURS = re.compile(rf"report(\.rank\d+)?\.json|anomaly_p|.+_(anomaly|segmentation)\.npy|{'|'.join(_FOLDERS.values())}")

Detector = Callable[[list[np.ndarray]], list[dict[str, np.ndarray]]]
Item = tuple[str, Path]  # (name, file)


def output_paths(out_dir: str | os.PathLike, name: str, save: Iterable[str], float16: bool = False,
                 submission: Submission | None = None) -> dict[str, Path]:
    """The files one image gets, in write order (the anomaly map last); all present = the image is finished."""
    out, save = Path(out_dir), set(save)
    suffix = {"segmentation": ".png", "heatmap": ".png", "overlay": ".png", "objects": ".json",
              "npy": ".npz" if float16 else ".npy"}
    paths = {o: out / _FOLDERS[o] / f"{name}{suffix[o]}" for o in _WRITE_ORDER[:-1] if o in save}
    if submission is not None:
        paths.update(submission.paths(name))
    if "npy" in save:
        paths["npy"] = out / _FOLDERS["npy"] / f"{name}{suffix['npy']}"
    return paths


def resolve_shard(shard: tuple[int, int] | None) -> tuple[int, int] | None:
    """``(rank, world)`` from the argument or from torchrun's ``RANK`` / ``WORLD_SIZE``; None for one process."""
    if shard is None:
        world = int(os.environ.get("WORLD_SIZE") or 1)
        if world <= 1:
            return None
        shard = (int(os.environ.get("RANK") or 0), world)
    rank, world = int(shard[0]), int(shard[1])
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"shard (rank={rank}, world={world}): need 0 <= rank < world")
    return (rank, world) if world > 1 else None


def _list(images_dir: Path, recursive: bool, out: Path, target: Submission | None
          ) -> tuple[list[Item], list[dict[str, str]], int]:
    """(name, file) of every image, the ignored entries (``{"path", "reason"}``) and the hidden-entry count; the
    run's own outputs (the output and submission folders, and what a run writes into ``out``) are passed over."""
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: expected a folder of images (.png, .jpg, ...); found no such folder")
    if recursive and images_dir.resolve() == out.resolve():
        raise DataError(f"{out}: the output folder is the images folder, so with recursive the outputs would be read "
                        "as inputs; give another output folder")
    listing = scan_images(images_dir, recursive, [out] + ([target.root] if target else []))
    ignored = [i.as_dict() for i in listing.ignored
               if not (i.path.parent.resolve() == out.resolve() and _OURS.fullmatch(i.path.name))]
    if not listing.images:
        hint = " or its subfolders" if recursive else " (pass recursive / --recursive to search subfolders)"
        seen = f"; {len(ignored)} other entries, e.g. {ignored[0]['path']}: {ignored[0]['reason']}" if ignored else ""
        raise DataError(f"{images_dir}: no images (.png, .jpg, ...) found in the folder{hint}{seen}")
    return [(p.relative_to(images_dir).with_suffix("").as_posix(), p) for p in listing.images], ignored, listing.hidden


def _read(items: Sequence[Item]) -> list[tuple[str, Path, np.ndarray | str]]:
    """Decode a chunk; an unreadable file gives its one-line reason instead of an image."""
    out: list[tuple[str, Path, np.ndarray | str]] = []
    for name, path in items:
        try:
            out.append((name, path, read_image(path)))
        except (ImageReadError, OSError, cv2.error) as e:
            msg = " ".join(str(e).split())
            out.append((name, path, msg if isinstance(e, ImageReadError) else f"{path}: {type(e).__name__}: {msg}"))
    return out


def _prefetch(pool: ThreadPoolExecutor, chunks: Iterable[Sequence[Item]], depth: int = 2) -> Iterator[list]:
    """Decoded chunks in order, with up to ``depth`` more being decoded in the background."""
    pending: deque[Future] = deque()
    for chunk in chunks:
        pending.append(pool.submit(_read, chunk))
        if len(pending) > depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _write(paths: dict[str, Path], image: np.ndarray, result: dict[str, np.ndarray], float16: bool,
           objects=None) -> None:
    anomaly = result["anomaly"]
    found = objects.find(anomaly) if objects is not None else None
    for opt, path in paths.items():
        if opt == "segmentation":
            write_image(path, np.asarray(result["segmentation"]).astype(np.uint8, copy=False))
        elif opt == "heatmap":
            write_image(path, viz.heatmap(anomaly))
        elif opt == "overlay":
            over = viz.overlay(image, anomaly)
            write_image(path, over if found is None else viz.draw_objects(over, found))
        elif opt == "objects":
            write_json(path, found)
        elif opt != "npy":
            write_output(opt, path, anomaly, result.get("segmentation"))
        elif float16:
            write_npz(path, anomaly=anomaly.astype(np.float16))
        else:
            write_npy(path, anomaly)


def run_folder(
    detector: Detector,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    recursive: bool = False,
    resume: bool = True,
    save: Sequence[str] | str = ("npy", "heatmap", "overlay"),
    float16: bool = False,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    report_every: int = 100,
    info: dict[str, Any] | None = None,
    formats: Sequence[str] | str = (),
    submission_dir: str | os.PathLike | None = None,
    method_name: str | None = None,
    dataset_name: str | None = None,
    lock: bool = True,
    objects=None,
) -> dict[str, Any]:
    """Run ``detector`` over every image of ``images_dir``, write the outputs under ``out_dir``, return the report.

    ``save``: any of ``npy`` (the anomaly map), ``heatmap``, ``overlay``, ``segmentation`` (a list or "a,b"; may be
    empty when ``formats`` is given). ``formats``: benchmark submission formats, ``smiyc`` and / or ``fishyscapes``
    (:mod:`synboost.submission`), written under ``submission_dir`` (default ``out_dir``); SMIYC files are filed
    under ``method_name`` (default the detector's method) and ``dataset_name`` (default guessed from the images
    folder: AnomalyTrack-all, ObstacleTrack-all, LostAndFound-test, else the folder's name).
    ``shard=(rank, world)``: this process takes images ``rank, rank + world, ...`` of the sorted list and writes
    ``report.rank<rank>.json``. ``info``: extra JSON-able fields for the report (e.g. the pipeline file).
    ``lock``: hold the output folder's :class:`~synboost.runtime.FolderLock` (rank 0 of a sharded run; False: the
    caller holds it); a live run already writing there is a one-line error. ``objects``: an
    :class:`~synboost.jobs.objects.ObjectSettings` (threshold, min_area): ``objects/<name>.json`` per image and
    boxes on the overlays; resuming a folder whose report names other object settings is a one-line error.
    """
    save = tuple(s.strip() for s in save.split(",") if s.strip() and s.strip() != "none") if isinstance(save, str) \
        else tuple(save)
    formats = parse_formats(formats)
    if (not save and not formats) or set(save) - set(SAVE_OPTIONS):
        raise ConfigError(f"save={list(save)}: choose one or more of {', '.join(SAVE_OPTIONS)}")
    images_dir, out = Path(images_dir), Path(out_dir)
    target = None
    if formats:
        target = Submission(Path(submission_dir) if submission_dir else out, formats,
                            method_name or getattr(detector, "method", None) or "method",
                            dataset_name or guess_smiyc_dataset(images_dir))
    items, ignored, hidden = _list(images_dir, recursive, out, target)
    shard = resolve_shard(shard)
    if objects is not None:
        save = tuple(s for s in save if s != "objects") + ("objects",)
        info = {**(info or {}), "objects": objects.as_dict()}
        if resume:
            _same_objects(out, objects)
    with _folder_lock(out, lock and (shard is None or shard[0] == 0)):
        return _run(detector, items, ignored, hidden, images_dir=images_dir, out=out, shard=shard, target=target,
                    resume=resume, save=save, float16=float16, progress=progress, report_every=report_every,
                    info=info, formats=formats, objects=objects)


def _same_objects(out: Path, objects) -> None:
    """Resuming with objects: an earlier report of this folder must name the same threshold and sizes."""
    want = {k: v for k, v in objects.as_dict().items() if k != "source"}
    for f in [out / "report.json", *sorted(out.glob("report.rank*.json"))]:
        with contextlib.suppress(OSError, ValueError):
            had = json.loads(f.read_text()).get("objects")
            if had and {k: had.get(k) for k in want} != want:
                raise ConfigError(f"{out}: its objects were found with {had.get('threshold')} / min area "
                                  f"{had.get('min_area')} ({f.name}), not {want['threshold']} / {want['min_area']}; "
                                  "use the same threshold, or --fresh to redo every image")


def _folder_lock(out: Path, hold: bool):
    """The output folder's FolderLock (a no-op context when this process does not hold it)."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: the output folder is a file; give a folder (created if missing)")
    from synboost.runtime import FolderLock

    return FolderLock(out, "infer") if hold else contextlib.nullcontext()


def _run(detector, items: list[Item], ignored: list[dict[str, str]], hidden: int, *, images_dir: Path, out: Path,
         shard, target, resume, save, float16, progress, report_every, info, formats, objects=None) -> dict[str, Any]:
    first: dict[str, Path] = {}
    first_id: dict[str, Path] = {}  # submission files are named by the benchmark id (the file stem)
    for name, path in items:  # over the whole listing, so that every rank agrees on duplicates
        first.setdefault(name, path)
        first_id.setdefault(frame_id(name), path)
    mine = items[shard[0]::shard[1]] if shard else items

    done: list[str] = []
    skipped: list[dict[str, str]] = []
    earlier: list[str] = []
    todo: list[Item] = []
    for name, path in mine:
        if first[name] != path:
            skipped.append({"name": name, "file": str(path), "reason": f"{path}: same output name '{name}' as "
                            f"{first[name]}; rename one of them"})
        elif target and first_id[frame_id(name)] != path:
            skipped.append({"name": name, "file": str(path), "reason": f"{path}: same benchmark id "
                            f"'{frame_id(name)}' as {first_id[frame_id(name)]}; rename one of them"})
        elif resume and all(p.exists() for p in output_paths(out, name, save, float16, target).values()):
            earlier.append(name)
        else:
            todo.append((name, path))

    report_path = out / (f"report.rank{shard[0]}.json" if shard else "report.json")
    t0 = time.perf_counter()

    def report(finished: bool) -> dict[str, Any]:
        secs = time.perf_counter() - t0
        rep = {
            "method": getattr(detector, "method", None), "detector": type(detector).__name__, **(info or {}),
            "images_dir": str(images_dir), "out_dir": str(out), "shard": list(shard) if shard else None,
            "save": list(save), "float16": float16, "finished": finished,
            **({"formats": list(formats), "submission_dir": str(target.root), "method_name": target.method,
                "dataset_name": target.dataset} if target else {}),
            "counts": {"images": len(mine), "done": len(done), "skipped": len(skipped), "done_earlier": len(earlier),
                       "ignored": len(ignored), "hidden": hidden},
            "seconds": round(secs, 3), "images_per_s": round(len(done) / secs, 3) if secs > 0 else 0.0,
            "done": sorted(done), "skipped": sorted(skipped, key=lambda s: s["file"]), "done_earlier": sorted(earlier),
            "ignored": ignored,
        }
        write_json(report_path, rep)
        return rep

    bs = max(1, int(getattr(detector, "batch_size", 1) or 1))
    readers = ThreadPoolExecutor(2, thread_name_prefix="synboost-read")
    writers = ThreadPoolExecutor(2, thread_name_prefix="synboost-write")
    writes: deque[tuple[list[str], Future]] = deque()
    buckets: dict[tuple[int, ...], list[tuple[str, Path, np.ndarray]]] = {}
    bar = tqdm(total=len(todo), unit="img", desc="infer", disable=not progress, dynamic_ncols=True)
    last_report = [0]

    def settle(limit: int) -> None:  # collect finished writes until at most ``limit`` are in flight
        while len(writes) > limit:
            names, fut = writes.popleft()
            fut.result()
            done.extend(names)
            bar.update(len(names))
            if len(done) + len(skipped) - last_report[0] >= report_every:
                last_report[0] = len(done) + len(skipped)
                report(False)

    def run_batch(key: tuple[int, ...]) -> None:
        batch = buckets.pop(key)
        results = detector([im for _, _, im in batch])
        if len(results) != len(batch):
            raise RuntimeError(f"{type(detector).__name__} returned {len(results)} results for {len(batch)} images")
        jobs = []
        for (name, path, im), res in zip(batch, results):
            res = dict(res, anomaly=np.asarray(res["anomaly"], np.float32))
            if res["anomaly"].shape != im.shape[:2]:
                raise RuntimeError(f"{path}: detector gave a {res['anomaly'].shape} anomaly map for a "
                                   f"{im.shape[:2]} image; maps must have the input size")
            jobs.append((output_paths(out, name, save, float16, target), im, res))
        fut = writers.submit(lambda: [_write(p, im, r, float16, objects) for p, im, r in jobs])
        writes.append(([name for name, _, _ in batch], fut))
        settle(2)

    ok = False
    try:
        for chunk in _prefetch(readers, (todo[k:k + bs] for k in range(0, len(todo), bs))):
            for name, path, im in chunk:
                if isinstance(im, str):
                    skipped.append({"name": name, "file": str(path), "reason": im})
                    bar.update(1)
                    continue
                buckets.setdefault(im.shape, []).append((name, path, im))
                if len(buckets[im.shape]) >= bs:
                    run_batch(im.shape)
            while sum(map(len, buckets.values())) > 2 * bs:  # many sizes: bound memory, run the fullest
                run_batch(max(buckets, key=lambda k: len(buckets[k])))
            bar.set_postfix(skipped=len(skipped), refresh=False)
        while buckets:
            run_batch(next(iter(buckets)))
        settle(0)
        ok = True
    finally:
        readers.shutdown(wait=True, cancel_futures=True)
        writers.shutdown(wait=True)
        for names, fut in writes:  # an error or interrupt: keep what was written in the report
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                done.extend(names)
        bar.close()
        final = report(finished=ok)
    return final


def merge_reports(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Join ``report.rank<k>.json`` of a sharded run into ``report.json`` (lists unioned, counts summed)."""
    out = Path(out_dir)
    files = sorted(out.glob("report.rank*.json"), key=lambda f: f.stat().st_mtime)
    if not files:
        raise DataError(f"{out}: no report.rank<k>.json files to merge (was the run sharded?)")
    reports = []
    for f in files:
        try:
            reports.append(json.loads(f.read_text()))
        except (OSError, ValueError) as e:
            raise DataError(f"{f}: unreadable run report ({' '.join(str(e).split())})") from None
    world = reports[-1]["shard"][1]  # the newest run's world; older reports of another world are left out
    reports = sorted((r for r in reports if r["shard"][1] == world), key=lambda r: r["shard"][0])
    ranks = [r["shard"][0] for r in reports]
    missing = sorted(set(range(world)) - set(ranks))
    done = sorted({n for r in reports for n in r["done"]})
    earlier = sorted({n for r in reports for n in r["done_earlier"]})
    skipped = sorted({s["file"]: s for r in reports for s in r["skipped"]}.values(), key=lambda s: s["file"])
    ignored = sorted({i["path"]: i for r in reports for i in r.get("ignored", [])}.values(), key=lambda i: i["path"])
    counts: dict[str, int] = {}
    for r in reports:
        for k, v in r["counts"].items():
            counts[k] = counts.get(k, 0) + v
    counts.update(ignored=len(ignored), hidden=max(r["counts"].get("hidden", 0) for r in reports))  # the whole folder's
    secs = max(r["seconds"] for r in reports)  # the ranks ran side by side
    merged = {k: v for k, v in reports[0].items() if k not in ("shard", "done", "skipped", "done_earlier", "ignored")}
    merged.update(
        world=world, ranks=ranks, missing_ranks=missing, finished=not missing and all(r["finished"] for r in reports),
        counts=counts, seconds=secs, images_per_s=round(counts.get("done", 0) / secs, 3) if secs > 0 else 0.0,
        done=done, skipped=skipped, done_earlier=earlier, ignored=ignored,
    )
    write_json(out / "report.json", merged)
    return merged


def run_folder_distributed(detector, images_dir, out_dir, **kwargs) -> dict:
    """:func:`run_folder` on this process's shard when started by ``torchrun`` (``WORLD_SIZE`` > 1): rank 0 holds
    the folder lock for the whole run (if it cannot, every rank stops with one line), every rank writes its share,
    waits for the others (a gloo barrier), and rank 0 merges the reports into ``report.json``.
    Without torchrun it is a plain :func:`run_folder`."""
    shard = resolve_shard(None)
    if shard is None:
        return run_folder(detector, images_dir, out_dir, **kwargs)
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    held = err = None
    try:
        held = _folder_lock(Path(out_dir), shard[0] == 0 and kwargs.pop("lock", True))
        held.__enter__()
    except Exception as e:  # told to every rank, then raised
        err = e
    failed = torch.tensor([int(err is not None)])
    dist.broadcast(failed, 0)
    if failed.item():
        dist.destroy_process_group()
        raise err or SynboostError(f"{out_dir}: rank 0 could not take the output folder's lock; see its message")
    try:
        rep = run_folder(detector, images_dir, out_dir, shard=shard, lock=False, **kwargs)
        dist.barrier()
        rep = merge_reports(out_dir) if shard[0] == 0 else rep
        dist.barrier()
    finally:
        held.__exit__(None, None, None)
    dist.destroy_process_group()
    return rep
