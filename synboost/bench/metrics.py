"""Benchmark of the pooled pixel metrics: time and peak memory of the exact, two-pass, streaming and scikit-learn
paths on synthetic data (``synboost bench metrics``; ``benchmarks/bench_metrics.py``).

Every case runs in a fresh spawned process so that peak RSS (``ru_maxrss``) belongs to that case alone. The child
generates the data deterministically (seeded, in chunks, float32 scores in (0, 1) = sigmoid of N(-1, 1) for inliers
and N(1.5, 1) for anomalies, ``pos_frac`` anomalies) and then times **only the metric call**; the data generation is
excluded. All methods see the same in-memory arrays (the two-pass and streaming paths read them as 1 M-pixel
"images"), so ``peak_rss_mb - data_rss_mb`` is each method's own memory on top of the data.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import resource
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

METHODS = ("exact", "two_pass", "stream_2^16", "stream_2^20", "stream_key_2^20", "sklearn")
IMAGE = 1 << 20  # pixels per "image" for the per-image paths
SKLEARN_MAX_PIXELS = 50_000_000
SKLEARN_SKIP = "skipped: scikit-learn needs ~40 B/pixel beyond the data (0.8 GB at 20 M; ~8 GB at 200 M pixels)"


def make_data(n: int, pos_frac: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic synthetic scores (float32) and labels (uint8 0/1), generated in 1 M-pixel chunks (small
    temporaries, so the RSS high-water mark after generation is essentially the data)."""
    scores = np.empty(n, dtype=np.float32)
    labels = np.empty(n, dtype=np.uint8)
    step = 1 << 20
    for i in range(0, n, step):
        rng = np.random.default_rng([seed, i // step])
        m = min(step, n - i)
        lab = rng.random(m, dtype=np.float32) < pos_frac
        z = rng.standard_normal(m, dtype=np.float32)
        z += np.where(lab, np.float32(1.5), np.float32(-1.0))
        np.exp(-z, out=z)
        z += 1
        np.reciprocal(z, out=scores[i : i + m])
        labels[i : i + m] = lab
    return scores, labels


def _images(scores: np.ndarray, labels: np.ndarray):
    return ((scores[i : i + IMAGE], labels[i : i + IMAGE]) for i in range(0, scores.size, IMAGE))


def _stream(scores: np.ndarray, labels: np.ndarray, num_bins: int, score_range) -> dict[str, object]:
    from synboost.metrics import StreamingPixelMetrics

    acc = StreamingPixelMetrics(num_bins, score_range)
    for s, lab in _images(scores, labels):
        acc.update(s, lab)
    m = acc.compute()
    return {"ap": m.ap, "auroc": m.auroc, "fpr95": m.fpr95, "ap_bounds": m.ap_bounds, "fpr95_bounds": m.fpr95_bounds}


def _run_method(method: str, scores: np.ndarray, labels: np.ndarray) -> dict[str, object]:
    """The timed call of one method; returns its metrics."""
    from synboost.metrics import pixel_metrics, pixel_metrics_two_pass

    if method == "exact":
        m = pixel_metrics(scores, labels)
    elif method == "two_pass":
        m = pixel_metrics_two_pass(lambda: _images(scores, labels))
    elif method == "stream_2^16":
        return _stream(scores, labels, 1 << 16, (0.0, 1.0))
    elif method == "stream_2^20":
        return _stream(scores, labels, 1 << 20, (0.0, 1.0))
    elif method == "stream_key_2^20":
        return _stream(scores, labels, 1 << 20, None)
    elif method == "sklearn":
        from sklearn.metrics import auc, average_precision_score, roc_curve

        ap = average_precision_score(labels, scores)
        fpr, tpr, _ = roc_curve(labels, scores)
        return {"ap": float(ap), "auroc": float(auc(fpr, tpr)), "fpr95": float(fpr[np.searchsorted(tpr, 0.95)])}
    else:
        raise ValueError(f"unknown benchmark method {method!r}")
    return {"ap": m.ap, "auroc": m.auroc, "fpr95": m.fpr95}


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _child(method: str, n: int, pos_frac: float, conn) -> None:
    """Spawned process: import, generate the data, time one method, send the row back."""
    import synboost.metrics  # noqa: F401  (imports stay out of the timing)

    if method == "sklearn":
        import sklearn.metrics  # noqa: F401
    scores, labels = make_data(n, pos_frac)
    data_rss = _max_rss_mb()
    start = time.perf_counter()
    result = _run_method(method, scores, labels)
    seconds = time.perf_counter() - start
    conn.send({**result, "seconds": seconds, "data_rss_mb": data_rss, "peak_rss_mb": _max_rss_mb()})
    conn.close()


def _run_case(method: str, n: int, pos_frac: float) -> dict[str, object]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(method, n, pos_frac, child))
    proc.start()
    child.close()
    while not parent.poll(1.0):
        if not proc.is_alive():
            break
    row = parent.recv() if parent.poll() else {"status": f"failed: child exited with code {proc.exitcode}"}
    proc.join()
    return row


def run_metrics_benchmark(
    sizes: Sequence[int] = (20_000_000, 200_000_000),
    pos_frac: float = 0.02,
    out_json: str | os.PathLike | None = None,
    methods: Sequence[str] = METHODS,
) -> list[dict[str, object]]:
    """Time every method at every size (each in a fresh process) and return one row per case.

    Row keys: size, method, status ("ok" / "skipped: ..." / "failed: ..."), seconds, mpix_per_s, peak_rss_mb,
    data_rss_mb, ap, auroc, fpr95, d_ap and d_fpr95 (absolute difference to the exact method at that size, when it
    ran), and ap_bounds / fpr95_bounds for the streaming methods. ``out_json`` also receives the rows with metadata.
    """
    rows: list[dict[str, object]] = []
    for n in sizes:
        exact: dict[str, object] | None = None
        for method in methods:
            if method == "sklearn" and n > SKLEARN_MAX_PIXELS:
                rows.append({"size": n, "method": method, "status": SKLEARN_SKIP})
                continue
            row = {"size": n, "method": method, "status": "ok", **_run_case(method, n, pos_frac)}
            if row["status"] == "ok":
                row["mpix_per_s"] = n / 1e6 / row["seconds"]
                if method == "exact":
                    exact = row
                if exact is not None:
                    row["d_ap"] = abs(row["ap"] - exact["ap"])
                    row["d_fpr95"] = abs(row["fpr95"] - exact["fpr95"])
            rows.append(row)
    if out_json is not None:
        path = Path(out_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "pos_frac": pos_frac,
            "timing": "metric call only; data generated in the child beforehand, excluded",
            "numpy": np.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        }
        path.write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    return rows


def format_table(rows: Sequence[dict[str, object]]) -> str:
    """Markdown table of benchmark rows."""
    head = "| pixels | method | seconds | Mpix/s | peak RSS MB | data RSS MB | AP | abs dAP | FPR95 | abs dFPR95 |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['size'] / 1e6:.0f} M | {r['method']} | {r['status']} |" + " |" * 7)
            continue
        d_ap = f"{r['d_ap']:.1e}" if "d_ap" in r else "-"
        d_fpr = f"{r['d_fpr95']:.1e}" if "d_fpr95" in r else "-"
        lines.append(
            f"| {r['size'] / 1e6:.0f} M | {r['method']} | {r['seconds']:.2f} | {r['mpix_per_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} | {r['data_rss_mb']:.0f} | {r['ap']:.6f} | {d_ap} | {r['fpr95']:.6f} | {d_fpr} |"
        )
    return "\n".join(lines)
