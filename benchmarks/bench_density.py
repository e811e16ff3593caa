"""Embedding-density baselines: memory and time of a Cityscapes-sized fit (2975 training images of 1024x2048).

    python benchmarks/bench_density.py [--quick] [--backbone resnet101] [--device cpu|cuda]
                                       [--out benchmarks/results/density.json]

Every row says what it is:
* computed  - from the layer shapes of the real segmenter (probed, random weights) and the default config of
              configs/density/cityscapes.yaml: pixels per layer, statistics / bank / index sizes, FLOPs. Pixel counts
              are upper bounds (void pixels, ~10 % of Cityscapes, are not counted out).
* measured  - on this machine, at the real dimensions, on a sample: the float64 statistics update and the float32
              NLL (GFLOP/s), the Cholesky fit, the kNN search per query against a bank of the real size (``--quick``:
              a smaller bank, scaled linearly in its rows), the reservoir sampling of all 2975 x quota rows, the
              logistic regression on the real number of regression pixels.
* extrapolated - computed work / measured rate. The segmenter's own forward pass is not included (see
              bench_segmenter.py); neither is image decoding.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from synboost.config import DensityConfig, load_config
from synboost.models.density import FeatureTap, GaussianDensity, KNNBank, fit_logistic
from synboost.models.segmenter import DeepLabV3Plus

N_IMAGES, SIZE = 2975, (1024, 2048)


def _timed(fn, repeat: int = 1) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe(backbone: str, layers) -> dict[str, dict]:
    """Channels and stride of each layer of the real segmenter (random weights, one 128x128 forward)."""
    model = DeepLabV3Plus(backbone, output_stride=8 if backbone in ("resnet101", "resnet50", "wrn38") else 16).eval()
    tap = FeatureTap(model, layers)
    with torch.no_grad(), tap.capture() as f:
        model(torch.zeros(1, 3, 128, 128))
    return {n: {"dim": int(x.shape[1]), "stride": 128 // int(x.shape[-1])} for n, x in f.items()}


def run(a) -> dict:
    cfg = load_config(DensityConfig, a.config)
    m = cfg.model
    dev = torch.device(a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    shapes = probe(a.backbone, list(m.layers) + [m.knn_layer])
    rows: list[dict] = []

    def row(item, value, unit, kind, **extra):
        rows.append({"item": item, "value": value, "unit": unit, "kind": kind, **extra})

    # ---------------------------------------------------------------- computed: pixels and sizes
    px = {}
    for n, s in shapes.items():
        h, w = SIZE[0] // s["stride"], SIZE[1] // s["stride"]
        px[n] = h * w
        row(f"{n}: dim x stride", f"{s['dim']} x {s['stride']}", "", "computed (probed)")
        row(f"{n}: pixels per image / all images", f"{h * w:,} / {h * w * N_IMAGES:,}", "px", "computed")
    stats_b = {n: 8 * (shapes[n]["dim"] ** 2 + 2 * shapes[n]["dim"]) for n in m.layers}
    saved_b = {n: 4 * (shapes[n]["dim"] ** 2 + shapes[n]["dim"] + 1) for n in m.layers}
    for n in m.layers:
        row(f"{n}: Gaussian statistics (float64, fitting) / saved (float32)",
            f"{stats_b[n] / 2**20:.2f} / {saved_b[n] / 2**20:.2f}", "MB", "computed")
    dk = shapes[m.knn_layer]["dim"]
    offered = N_IMAGES * m.bank_per_image
    bank_rows = min(m.bank_size, offered)
    bank_mb = bank_rows * dk * 4 / 2**20
    row(f"kNN bank ({m.knn_layer}, {m.bank_per_image}/image, capacity {m.bank_size:,})",
        f"{bank_rows:,} rows x {dk} = {bank_mb:.1f}", "MB", "computed", offered=offered)
    every = px[m.knn_layer] * N_IMAGES * dk * 4 / 2**30
    row(f"for comparison: every {m.knn_layer} pixel of the training set", f"{every:,.0f}", "GB", "computed")
    fit_flops = {n: 2 * px[n] * N_IMAGES * shapes[n]["dim"] ** 2 // m.stats_stride ** 2 for n in m.layers}
    nll_flops_img = {n: 2 * px[n] * shapes[n]["dim"] ** 2 for n in m.layers}
    knn_flops_img = 2 * px[m.knn_layer] * bank_rows * dk
    row("statistics pass (outer products, float64)", f"{sum(fit_flops.values()) / 1e12:.1f}", "TFLOP", "computed")
    row("NLL of all layers per test image (float32)", f"{sum(nll_flops_img.values()) / 1e9:.1f}", "GFLOP",
        "computed")
    row("exact kNN per test image (float32)", f"{knn_flops_img / 1e12:.2f}", "TFLOP", "computed")

    # ---------------------------------------------------------------- measured rates at the real dimensions
    fit_s = nll_s = 0.0
    for n in m.layers:
        d = shapes[n]["dim"]
        rows_n = max(1024, int((2e8 if a.quick else 2e9) / (2 * d * d)))
        x = torch.randn(rows_n, d, device=dev)
        g = GaussianDensity(d).to(dev)
        t_up = _timed(lambda: g.update(x), 1 if a.quick else 3)
        r64 = 2 * rows_n * d * d / t_up
        t_fit = _timed(lambda: g.fit(m.ridge))
        t_nll = _timed(lambda: g.nll(x), 1 if a.quick else 3)
        r32 = 2 * rows_n * d * d / t_nll
        fit_s += fit_flops[n] / r64 + t_fit
        nll_s += nll_flops_img[n] / r32
        row(f"{n}: statistics update float64 ({rows_n:,} rows)", f"{r64 / 1e9:.1f}", "GFLOP/s", "measured")
        row(f"{n}: Cholesky + inverse ({d}x{d}, float64)", f"{t_fit * 1e3:.1f}", "ms", "measured")
        row(f"{n}: NLL float32 ({rows_n:,} rows)", f"{r32 / 1e9:.1f}", "GFLOP/s", "measured")
    row("statistics pass, all layers, 2975 images", f"{fit_s / 60:.1f}", "min", "extrapolated")
    row("NLL of all layers per test image", f"{nll_s * 1e3:.0f}", "ms", "extrapolated")

    # reservoir sampling of the real number of offered rows (measured in full)
    kb = KNNBank(dk, m.bank_size, m.k, m.knn_reduce, m.knn_index, "faiss", seed=0)
    gen = torch.Generator().manual_seed(0)
    chunks = [torch.randn(m.bank_per_image, dk, generator=gen) for _ in range(200)]
    peak = 0
    t = time.perf_counter()
    for i in range(N_IMAGES):
        kb.add(chunks[i % len(chunks)])
        peak = max(peak, kb.nbytes)
    kb.finish()
    t_res = time.perf_counter() - t
    row(f"reservoir sampling of {offered:,} rows into {m.bank_size:,}", f"{t_res:.2f}", "s", "measured",
        peak_mb=peak / 2**20)
    row("kNN bank bytes at the peak of the build / after", f"{peak / 2**20:.1f} / {kb.nbytes / 2**20:.1f}", "MB",
        "measured")

    # kNN search: a bank of the real size (--quick: 20k rows, scaled linearly)
    m_rows = min(bank_rows, 20_000) if a.quick else bank_rows
    kb.bank = kb.bank[:m_rows].contiguous()
    kb._index = None
    nq = 2048  # faiss batches queries through BLAS: small batches would understate it 10x
    q = torch.randn(nq, dk)
    rss0 = _rss_mb()
    t_index = _timed(lambda: (setattr(kb, "_index", None), kb._faiss_index()), 1)
    row(f"faiss {m.knn_index} index over {m_rows:,} rows", f"{t_index:.2f}", "s", "measured",
        rss_growth_mb=_rss_mb() - rss0)
    for backend in ("faiss", "torch"):
        kb.backend = backend
        qq = q.to(dev) if backend == "torch" else q
        t_q = _timed(lambda: kb.score(qq)) / nq * (bank_rows / m_rows)
        row(f"kNN {backend} exact search, k={m.k}, per query at {bank_rows:,} rows"
            + (f" (measured at {m_rows:,})" if m_rows != bank_rows else ""), f"{t_q * 1e6:.1f}", "us",
            "measured" if m_rows == bank_rows else "measured, scaled")
        row(f"kNN {backend} per test image ({px[m.knn_layer]:,} queries)", f"{t_q * px[m.knn_layer]:.1f}", "s",
            "extrapolated")

    # logistic regression on the real number of regression pixels
    nr = cfg.data.mix_images * 2 * cfg.data.mix_pixels
    rng = np.random.default_rng(0)
    z = rng.standard_normal((nr, len(m.layers))).astype(np.float32)
    y = (z.sum(1) + rng.standard_normal(nr) > 1.5).astype(np.uint8)
    row(f"logistic regression on {nr:,} pixels x {len(m.layers)} NLLs",
        f"{_timed(lambda: fit_logistic(z, y, m.logreg_c)):.2f}", "s", "measured")

    info = {"device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "backbone": a.backbone, "quick": a.quick,
            "images": N_IMAGES, "size": list(SIZE), "config": a.config}
    res = {"benchmark": "density", "info": info, "layers": shapes, "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    w = max(len(r["item"]) for r in rows)
    print(f"embedding density, {a.backbone}, {N_IMAGES} x {SIZE[0]}x{SIZE[1]}, device {dev}, "
          f"{torch.get_num_threads()} threads")
    print(f"| {'item':<{w}} | {'value':>24} | unit    | kind |")
    print(f"|{'-' * (w + 2)}|{'-' * 26}|---------|------|")
    for r in rows:
        print(f"| {r['item']:<{w}} | {r['value']:>24} | {r['unit']:<7} | {r['kind']} |")
    print(f"written to {a.out}")
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="smaller samples (seconds)")
    p.add_argument("--backbone", default="resnet101",
                   help="resnet101 (configs/segmentation/cityscapes.yaml), wrn38, ...")
    p.add_argument("--config", default="configs/density/cityscapes.yaml")
    p.add_argument("--device", default="cpu", help="device of the Gaussian and torch-kNN timings (faiss: CPU)")
    p.add_argument("--out", default="benchmarks/results/density.json")
    run(p.parse_args())
