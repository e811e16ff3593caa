"""Speed benchmarks: print a table, write JSON. Timings are medians over repeated runs after warm-up, with the
device synchronised; the device name, torch version and thread count are recorded with the numbers."""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch

from synboost.data.io import write_json


def device_info(device: torch.device) -> dict:
    info = {"device": device.type, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def time_fn(fn: Callable[[], object], device: torch.device, warmup: int = 2, iters: int = 5) -> float:
    """Median seconds of ``fn()`` (CUDA work synchronised)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def format_rows(rows: list[dict], cols: list[str]) -> str:
    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    body = "".join("| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |\n" for r in rows)
    return head + body


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def run_segmenter_benchmark(out_json: str | None = None, quick: bool = False, device: str = "auto",
                            size: tuple[int, int] = (512, 1024), backbones: tuple[str, ...] | None = None,
                            batches: tuple[int, ...] | None = None, compile: bool = True) -> list[dict]:
    """Segmenter images/s: eager vs channels_last vs torch.compile (and bf16 autocast on CUDA)."""
    from synboost.models import create_model
    from synboost.runtime import pick_device

    dev = pick_device(device)
    cuda = dev.type == "cuda"
    if quick:
        size, backbones, batches = (128, 256), backbones or ("tiny",), batches or (1,)
    backbones = backbones or (("resnet50", "resnet101") if cuda else ("resnet50",))
    batches = batches or ((1, 8) if cuda else (1,))
    iters = 10 if cuda else (3 if not quick else 5)
    rows = []
    for name in backbones:
        for bs in batches:
            for variant in ("eager", "channels_last", "compile"):
                if variant == "compile" and not compile:
                    continue
                for dtype in ((torch.float32, torch.bfloat16) if cuda else (torch.float32,)):
                    if cuda and variant == "compile" and dtype == torch.float32:
                        continue  # on the GPU compile is measured where it matters: bf16
                    model = create_model("deeplabv3plus", backbone=name, output_stride=16).eval().to(dev)
                    x = torch.randn(bs, 3, *size, device=dev)
                    if variant != "eager":
                        model = model.to(memory_format=torch.channels_last)
                        x = x.contiguous(memory_format=torch.channels_last)
                    fn_model = torch.compile(model) if variant == "compile" else model
                    t_compile = time.perf_counter()

                    def run():
                        with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
                            return fn_model(x)
                    try:
                        run()
                        first = time.perf_counter() - t_compile
                        sec = time_fn(run, dev, warmup=1, iters=iters)
                    except Exception as e:  # e.g. no compiler for torch.compile on this machine
                        rows.append({"backbone": name, "batch": bs, "variant": variant, "dtype": str(dtype)[6:],
                                     "note": f"failed: {type(e).__name__}"})
                        continue
                    row = {"backbone": name, "size": f"{size[0]}x{size[1]}", "batch": bs, "variant": variant,
                           "dtype": str(dtype)[6:], "ms_per_batch": 1000 * sec, "images_per_s": bs / sec,
                           "first_call_s": first}
                    rows.append(row)
                    print(f"  {name} bs{bs} {variant} {row['dtype']}: {row['images_per_s']:.2f} img/s", flush=True)
                    model = fn_model = x = None  # free before the next variant
                    if cuda:
                        torch.cuda.empty_cache()
    info = device_info(dev)
    print(f"\nsegmenter (DeepLabV3+, 19 classes, OS16) on {info.get('gpu', info['cpu'])}, torch {info['torch']}, "
          f"{info['threads']} threads")
    print(format_rows(rows, ["backbone", "size", "batch", "variant", "dtype", "ms_per_batch", "images_per_s",
                             "first_call_s", "note"]))
    if out_json:
        write_json(out_json, {"benchmark": "segmenter", "info": info, "rows": rows})
    return rows
