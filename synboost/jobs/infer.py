"""Folder runs: a detector over a folder of images -> anomaly maps, pictures and a run report.

The job behind ``synboost infer --pipeline P --images DIR --out DIR``. Per image ``<name>`` (the path relative to
the images folder without suffix; subfolders are kept when ``recursive``), ``out`` receives, each file atomically:

* ``segmentation/<name>.png`` train ids (uint8), ``heatmaps/<name>.png`` (:func:`viz.heatmap`),
  ``overlays/<name>.png`` (:func:`viz.overlay`), then LAST ``maps/<name>.npy`` (float32 anomaly map at the input
  size; ``maps/<name>.npz`` holding float16 ``anomaly`` with ``float16=True``). With ``formats`` the benchmark
  submission files of :mod:`synboost.submission` are written before the map: ``smiyc``
  (``<submission>/anomaly_p/<method>/<dataset>/<fid>.hdf5``) and ``fishyscapes``
  (``<submission>/<id>_anomaly.npy`` + ``<id>_segmentation.npy``); ``<submission>`` defaults to ``out``. Every file
  is atomic, so an image whose requested files all exist is finished and a killed run resumes cleanly
  (``resume=True`` skips finished images; asking for another output later computes just what is missing).
* ``report.json`` (``report.rank<k>.json`` per process when sharded; :func:`merge_reports` joins them): what ran,
  counts, the finished / skipped (with the reader's one-line reason) / done-earlier files, seconds, images/s.
  It is rewritten every ``report_every`` images, so even a killed run leaves a useful report.

A file that cannot be read is skipped and reported, never fatal. Images are decoded in background threads while
the detector runs, grouped into batches of one size (up to ``detector.batch_size``), and written in background
threads (OpenCV releases the GIL). No model code here: the detector owns devices and tensors.
"""
from __future__ import annotations

import json
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from synboost import viz
from synboost.data.io import IMAGE_EXTENSIONS, list_images, read_image, write_image, write_json, write_npy, write_npz
from synboost.errors import ConfigError, DataError, ImageReadError
from synboost.jobs.submission import Submission, frame_id, guess_smiyc_dataset, parse_formats, write_output

SAVE_OPTIONS = ("npy", "heatmap", "overlay", "segmentation")
_WRITE_ORDER = ("segmentation", "heatmap", "overlay", "npy")  # the anomaly map last: it marks an image finished
_FOLDERS = {"segmentation": "segmentation", "heatmap": "heatmaps", "overlay": "overlays", "npy": "maps"}

Detector = Callable[[list[np.ndarray]], list[dict[str, np.ndarray]]]
Item = tuple[str, Path]  # (name, file)


def output_paths(out_dir: str | os.PathLike, name: str, save: Iterable[str], float16: bool = False,
                 submission: Submission | None = None) -> dict[str, Path]:
    """The files one image gets, in write order (the anomaly map last); all present = the image is finished."""
    out, save = Path(out_dir), set(save)
    suffix = {"segmentation": ".png", "heatmap": ".png", "overlay": ".png", "npy": ".npz" if float16 else ".npy"}
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


def _list(images_dir: Path, recursive: bool, exclude: Path) -> list[Item]:
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: expected a folder of images (.png, .jpg, ...); found no such folder")
    files = list_images(images_dir, recursive)
    ex = exclude.resolve()
    if recursive and ex.is_relative_to(images_dir.resolve()):  # outputs inside the input tree: never read them
        files = [p for p in files if ex not in p.resolve().parents]
    if not files:
        hint = " or its subfolders" if recursive else " (pass recursive / --recursive to search subfolders)"
        raise DataError(f"{images_dir}: no images (.png, .jpg, ...) found in the folder{hint}")
    return [(p.relative_to(images_dir).with_suffix("").as_posix(), p) for p in files]


def _one_line(path: Path, err: BaseException) -> str:
    msg = " ".join(str(err).split())
    return msg if isinstance(err, ImageReadError) else f"{path}: {type(err).__name__}: {msg}"


def _read(items: Sequence[Item]) -> list[tuple[str, Path, np.ndarray | str]]:
    """Decode a chunk; an unreadable file gives its one-line reason instead of an image."""
    out: list[tuple[str, Path, np.ndarray | str]] = []
    for name, path in items:
        try:
            out.append((name, path, read_image(path)))
        except (ImageReadError, OSError, cv2.error) as e:
            out.append((name, path, _one_line(path, e)))
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


def _write(paths: dict[str, Path], image: np.ndarray, result: dict[str, np.ndarray], float16: bool) -> None:
    anomaly = result["anomaly"]
    for opt, path in paths.items():
        if opt == "segmentation":
            write_image(path, np.asarray(result["segmentation"]).astype(np.uint8, copy=False))
        elif opt == "heatmap":
            write_image(path, viz.heatmap(anomaly))
        elif opt == "overlay":
            write_image(path, viz.overlay(image, anomaly))
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
) -> dict[str, Any]:
    """Run ``detector`` over every image of ``images_dir``, write the outputs under ``out_dir``, return the report.

    ``save``: any of ``npy`` (the anomaly map), ``heatmap``, ``overlay``, ``segmentation`` (a list or "a,b"; may be
    empty when ``formats`` is given). ``formats``: benchmark submission formats, ``smiyc`` and / or ``fishyscapes``
    (:mod:`synboost.submission`), written under ``submission_dir`` (default ``out_dir``); SMIYC files are filed
    under ``method_name`` (default the detector's method) and ``dataset_name`` (default guessed from the images
    folder: AnomalyTrack-all, ObstacleTrack-all, LostAndFound-test, else the folder's name).
    ``shard=(rank, world)``: this process takes images ``rank, rank + world, ...`` of the sorted list and writes
    ``report.rank<rank>.json``. ``info``: extra JSON-able fields for the report (e.g. the pipeline file).
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
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: the output folder is a file; give a folder (created if missing)")
    items = _list(images_dir, recursive, out)
    shard = resolve_shard(shard)
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
            "counts": {"images": len(mine), "done": len(done), "skipped": len(skipped), "done_earlier": len(earlier)},
            "seconds": round(secs, 3), "images_per_s": round(len(done) / secs, 3) if secs > 0 else 0.0,
            "done": sorted(done), "skipped": sorted(skipped, key=lambda s: s["file"]), "done_earlier": sorted(earlier),
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
        fut = writers.submit(lambda: [_write(p, im, r, float16) for p, im, r in jobs])
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
    counts: dict[str, int] = {}
    for r in reports:
        for k, v in r["counts"].items():
            counts[k] = counts.get(k, 0) + v
    secs = max(r["seconds"] for r in reports)  # the ranks ran side by side
    merged = {k: v for k, v in reports[0].items() if k not in ("shard", "done", "skipped", "done_earlier")}
    merged.update(
        world=world, ranks=ranks, missing_ranks=missing, finished=not missing and all(r["finished"] for r in reports),
        counts=counts, seconds=secs, images_per_s=round(counts.get("done", 0) / secs, 3) if secs > 0 else 0.0,
        done=done, skipped=skipped, done_earlier=earlier,
    )
    write_json(out / "report.json", merged)
    return merged


def run_folder_distributed(detector, images_dir, out_dir, **kwargs) -> dict:
    """:func:`run_folder` on this process's shard when started by ``torchrun`` (``WORLD_SIZE`` > 1): every rank
    writes its share, waits for the others (a gloo barrier), and rank 0 merges the reports into ``report.json``.
    Without torchrun it is a plain :func:`run_folder`."""
    shard = resolve_shard(None)
    rep = run_folder(detector, images_dir, out_dir, shard=shard, **kwargs)
    if shard is None:
        return rep
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()
    if shard[0] == 0:
        rep = merge_reports(out_dir)
    dist.barrier()
    dist.destroy_process_group()
    return rep


def synthesize_folder(generator, labels_dir, out_dir, images_dir=None, batch_size: int = 8,
                      progress: bool = True) -> dict:
    """``synboost synthesize``: redraw every train-id label map (``*.png``, 255 = ignore) of a folder with a
    trained generator, deterministically (z = mu of the paired real image from ``images_dir`` when the generator
    has a style encoder and the image exists, else z = 0). Writes ``<out>/<name>.png`` at the label's size."""
    import torch

    from synboost.data.io import read_label
    from synboost.models.generator import resynthesize

    labels = list_images(labels_dir) if Path(labels_dir).is_dir() else []
    if not labels:
        raise DataError(f"{labels_dir}: expected a folder of train-id label maps (*.png); found none")
    out = Path(out_dir)
    report = {"done": [], "skipped": []}
    bar = tqdm(total=len(labels), desc="synthesize", unit="img", disable=not progress)
    for start in range(0, len(labels), batch_size):
        items = []
        for p in labels[start:start + batch_size]:
            try:
                lab = read_label(p)
                img = None
                if images_dir is not None and getattr(generator, "use_vae", False):
                    cand = [q for q in Path(images_dir).glob(p.stem + ".*") if q.suffix.lower() in IMAGE_EXTENSIONS]
                    img = read_image(cand[0]) if cand else None
                items.append((p, lab, img))
            except ImageReadError as e:
                report["skipped"].append({"file": str(p), "reason": str(e)})
        for p, lab, img in items:
            img_t = None if img is None else torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255)
            res = resynthesize(generator, torch.from_numpy(lab.astype(np.int64))[None], img_t)
            arr = (res[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
            arr = cv2.resize(arr, (lab.shape[1], lab.shape[0]), interpolation=cv2.INTER_LINEAR)
            write_image(out / f"{p.stem}.png", arr)
            report["done"].append(p.stem)
        bar.update(len(labels[start:start + batch_size]))
    bar.close()
    write_json(out / "report.json", report)
    return report
