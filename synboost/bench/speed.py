"""Speed benchmarks: print a table, write JSON. Timings are medians over repeated runs after warm-up, with the
device synchronised; the device name, torch version and thread count are recorded with the numbers."""
from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from typing import Callable

import torch

from synboost.data.io import write_json


def device_info(device: torch.device) -> dict:
    """The machine a benchmark ran on: device, torch version, threads, CPU (and the GPU's name on CUDA)."""
    info = {"device": device.type, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    from synboost.runtime import malloc_tuned

    info["malloc_tuned"] = malloc_tuned()  # the synboost command keeps freed memory (runtime.tune_malloc)
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
    """A markdown table of ``rows`` with the columns ``cols``."""
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
                        amp = torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32)
                        with torch.inference_mode(), amp:
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


def _official_size_stages(dev, dis_size=(256, 512), seg_backbone="resnet101", width=1.0):
    """Random-initialised stages at the official sizes: a DeepLabV3+ (``wrn38``: the official WideResNet-38 OS8;
    ``resnet101`` OS8 as a lighter stand-in), the SPADE generator (ngf 64, VAE, 6 up-samplings) and the
    full-width dissimilarity network at ``dis_size``, VGG19 for the perceptual difference."""
    from synboost.config import DissimModelConfig, SynthesisModelConfig
    from synboost.detectors.components import build_dissimilarity, build_generator
    from synboost.detectors.synboost import SynBoostDetector
    from synboost.models.vgg import VGG19Pyramid

    seg = create_seg(seg_backbone).to(dev).eval()
    gen = build_generator(SynthesisModelConfig(num_upsampling=6), dis_size).to(dev).eval()
    dis = build_dissimilarity(DissimModelConfig(width=width, vgg_pretrained=False)).to(dev).eval()
    vgg = VGG19Pyramid().to(dev).eval()
    return SynBoostDetector(seg, gen, dis, vgg, dis_size, device=dev)


def create_seg(backbone: str):
    """A DeepLabV3+ with the ``backbone`` trunk and the official head size, for the speed benchmarks."""
    from synboost.models import create_model

    return create_model("deeplabv3plus", backbone=backbone,
                        output_stride=8 if backbone.startswith("resnet") or backbone == "wrn38" else 16)


@torch.no_grad()
def official_style_loop(det, image):
    """One image the way the official ``estimator_image`` does it: batch 1, float32, every intermediate map
    copied to the CPU, quantised to uint8 and resized there (nearest), then sent back."""
    import cv2
    import numpy as np
    import torch.nn.functional as F

    from synboost.detectors.perceptual import perceptual_difference
    from synboost.models.generator import resynthesize
    from synboost.tensors import imagenet_normalize01, images_to_batch

    dev = det.device
    h, w = det.size
    logits = det.model(images_to_batch([image], dev))
    p = F.softmax(logits, 1)[0].cpu().numpy()
    ent = -(p * np.log(np.maximum(p, 1e-30))).sum(0)
    ent = ((ent - ent.min()) / ent.max() * 255).astype(np.uint8)
    top = np.sort(p, 0)
    d = top[-1] - top[-2]
    dist = ((1 - (d - d.min()) / d.max()) * 255).astype(np.uint8)
    pred = cv2.resize(p.argmax(0).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    small = cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC)
    lab = torch.from_numpy(pred.astype(np.int64))[None].to(dev)
    img01 = torch.from_numpy(small).permute(2, 0, 1)[None].float().div(255).to(dev)
    syn = (resynthesize(det.generator, lab, img01)[0].permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    real_n = imagenet_normalize01(torch.from_numpy(cv2.resize(image, (w, h), interpolation=cv2.INTER_NEAREST))
                                  .permute(2, 0, 1)[None].float().div(255).to(dev))
    syn_n = imagenet_normalize01(torch.from_numpy(syn).permute(2, 0, 1)[None].float().div(255).to(dev))
    mae = (perceptual_difference(det.vgg19, real_n, syn_n)[0].cpu().numpy() * 255).astype(np.uint8)
    pri = [cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in (ent, mae, dist)]
    pri_t = torch.from_numpy(np.stack(pri)).float().div(255)[None].to(dev)
    onehot = F.one_hot(lab, 19).permute(0, 3, 1, 2).float()
    prob = F.softmax(det.dissim(real_n, syn_n, onehot, pri_t), 1)[0, 1].cpu().numpy()
    score = 0.75 * prob + 0.25 * pri[0] / 255.0
    return cv2.resize(score, (image.shape[1], image.shape[0]))


def _stage_times(det, images, dev) -> dict:
    """Per-stage milliseconds of the detector, each network in its precision region (the code path of
    ``SynBoostDetector._maps``; the networks may be compiled or runtime sessions)."""
    from synboost import scores
    from synboost.detectors.perceptual import perceptual_difference
    from synboost.models.generator import labels_to_onehot, resynthesize
    from synboost.tensors import imagenet_denormalize01, imagenet_normalize01, images_to_batch, resize_maps

    out = {}
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def t(name, fn, region=None):
        sync()
        t0 = time.perf_counter()
        with det._region(region) if region else torch.autocast(dev.type, enabled=False):
            r = fn()
        sync()
        out[name] = out.get(name, 0.0) + 1000 * (time.perf_counter() - t0)
        return r
    with torch.no_grad():
        batch = t("decode+upload", lambda: images_to_batch(images, dev).contiguous(
            memory_format=torch.channels_last if det.channels_last else torch.contiguous_format))
        logits = t("segmentation", lambda: det.model(batch).float(), "segmenter")
        ent, dist, lab = t("uncertainty maps", lambda: (scores.synboost_entropy(logits),
                                                        scores.synboost_distance(logits), logits.argmax(1)))
        lab, ent, dist, img01 = t("resize", lambda: resize_maps(det.size, lab, (ent, dist),
                                                                imagenet_denormalize01(batch)))
        syn = t("synthesis", lambda: resynthesize(det.generator, lab, img01).float(), "generator")
        img_n, syn_n = imagenet_normalize01(img01), imagenet_normalize01(syn)
        mae = t("perceptual difference", lambda: perceptual_difference(det.vgg19, img_n, syn_n), "vgg")
        onehot = labels_to_onehot(lab.long(), 19).to(img_n.dtype)  # the detector's layout (compiled: same strides)
        t("dissimilarity", lambda: det.dissim(img_n, syn_n, onehot, torch.stack([ent, mae, dist], 1)).float(),
          "dissimilarity")
    return {k: v / len(images) for k, v in out.items()}


#: the batched variants of the pipeline benchmark: label -> (precision, channels_last, compile, backend, freeze)
PIPELINE_VARIANTS = {
    "batched detector (fp32)": ("fp32", False, False, "torch", False),
    "batched detector (fp32, channels_last)": ("fp32", True, False, "torch", False),
    "batched detector (fp32, channels_last, frozen)": ("fp32", True, False, "torch", True),
    "batched detector (bf16 autocast, channels_last, not frozen)": ("bf16", True, False, "torch", False),
    "batched detector (bf16, channels_last, frozen: the default)": ("bf16", True, False, "torch", True),
    "batched detector (mixed: segmenter fp32, rest bf16, channels_last, frozen)": ("mixed", True, False, "torch",
                                                                                   True),
    "batched detector (bf16, channels_last, frozen, torch.compile)": ("bf16", True, True, "torch", True),
    "onnxruntime (fp32)": ("fp32", False, False, "onnxruntime", False),
    "onnxruntime TensorRT EP (fp32)": ("fp32", False, False, "tensorrt", False),
    "OpenVINO (f32)": ("fp32", False, False, "openvino", False),
    "OpenVINO (bf16)": ("bf16", False, False, "openvino", False),
}
#: short names of the variants (``synboost bench pipeline --variants bf16 ov-bf16``)
PIPELINE_SHORT = dict(zip(("fp32", "fp32-cl", "fp32-frozen", "bf16-eager", "bf16", "mixed", "bf16-compile", "ort",
                           "trt", "ov-f32", "ov-bf16"), PIPELINE_VARIANTS))


def pick_variants(names, table: dict, short: dict, what: str) -> tuple[str, ...]:
    """Variant labels from labels or short names; an unknown one is one line with the choices."""
    from synboost.errors import ConfigError

    out = []
    for n in names:
        if n not in table and n not in short:
            raise ConfigError(f"bench {what}: unknown variant {n!r}; choose from: {', '.join(short)} (or a full "
                              f"label: {'; '.join(table)})")
        out.append(short.get(n, n))
    return tuple(out)


#: what ``quick`` runs unless ``variants`` says otherwise (the compile and export rows cost minutes even there)
QUICK_VARIANTS = tuple(k for k, v in PIPELINE_VARIANTS.items() if not v[2] and v[3] == "torch")


def variant_detector(det, spec: tuple, folder, imgs, batch: int, source: str, copy_torch: bool = False):
    """The detector of one benchmark variant, ``spec`` = (precision, channels_last, compile, backend, freeze):
    ``det`` itself set to it (a deep copy when compiled, frozen or with ``copy_torch``: those change networks in
    place), or a copy whose networks run in an exported ``backend`` from the files written into ``folder`` once for
    every runtime row (``source`` labels them in their sidecars). ``det`` must not be frozen itself."""
    precision, cl, compiled, backend, freeze = spec
    if backend == "torch":
        run = copy.deepcopy(det) if compiled or freeze or copy_torch else det
        run.set_channels_last(cl)
        run.set_precision(precision)
        if freeze:
            run.freeze()
        if compiled:
            run.set_compile()
        return run
    return _runtime_detector(det, backend, precision, folder, imgs, batch, source)


def _runtime_detector(det, backend: str, precision: str, folder, imgs, batch: int, source: str):
    """A copy of ``det`` whose networks run in ``backend`` from files exported into ``folder`` (once per format)."""
    import importlib.util
    from pathlib import Path

    from synboost.detectors.runtimes import use_exported
    from synboost.jobs.export import _capture, export_networks, networks_of

    nets = networks_of(det)
    sources = {n: f"{source} ({n})" for n in nets}
    marker = Path(folder) / ("segmenter.xml" if backend == "openvino" else "segmenter.onnx.json")
    if not marker.is_file():
        det.set_channels_last(False)
        det.set_precision("fp32")
        formats = ["onnx"] + (["openvino"] if importlib.util.find_spec("openvino") and det.device.type == "cpu"
                                        else [])
        export_networks(nets, _capture(det, imgs[:batch]), sources, Path(folder), formats, False, batch,
                        "benchmark images")
    run = copy.copy(det)
    run.set_channels_last(False)
    use_exported(run, backend, folder, precision, sources)
    return run


def run_pipeline_benchmark(out_json: str | None = None, quick: bool = False, device: str = "auto",
                           size: tuple[int, int] | None = None, batch: int = 8, images: int = 16,
                           backbone: str | None = None, variants: tuple[str, ...] | None = None,
                           images_cpu: int = 2) -> list[dict]:
    """End-to-end SynBoost images/s at input ``size``, in one process on the same random-initialised networks:
    the official-style per-image loop, then each batched variant of :data:`PIPELINE_VARIANTS` (fp32, channels_last,
    bf16, mixed precision, torch.compile, onnxruntime / TensorRT, OpenVINO f32 / bf16; those this machine lacks
    are listed as skipped), with per-stage ms, the first call's seconds (compilation, session start) and the
    ratio to the loop. Defaults: on CUDA the official setting (1024x2048 input, WideResNet-38 OS8); on the CPU
    512x1024 with a ResNet-101 OS8 (the official setting costs ~2.5 min per image there). ``quick``: tiny
    networks and :data:`QUICK_VARIANTS` unless ``variants`` names others."""
    import tempfile

    import numpy as np

    from synboost.detectors.runtimes import unavailable
    from synboost.runtime import pick_device

    dev = pick_device(device)
    cuda = dev.type == "cuda"
    if quick:
        size, batch, images = (128, 256), 2, 4
        backbone = "tiny"
        det = _official_size_stages(dev, (64, 128), backbone, 0.25)
        variants = variants or QUICK_VARIANTS
    else:
        size = tuple(size or ((1024, 2048) if cuda else (512, 1024)))
        backbone = backbone or ("wrn38" if cuda else "resnet101")
        det = _official_size_stages(dev, seg_backbone=backbone)
        if not cuda:
            images, batch = images_cpu, 1
    variants = pick_variants(variants or tuple(PIPELINE_VARIANTS), PIPELINE_VARIANTS, PIPELINE_SHORT, "pipeline")
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (*size, 3), dtype=np.uint8) for _ in range(images)]
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rows, skipped = [], []
    official_style_loop(det, imgs[0])  # warm-up, as every batched row gets one (oneDNN primitives, allocator)
    sync()
    t0 = time.perf_counter()
    n_loop = max(2, images // 4)
    for im in imgs[:n_loop]:
        official_style_loop(det, im)
    sync()
    loop_s = (time.perf_counter() - t0) / n_loop
    rows.append({"variant": "official-style per-image loop (fp32, CPU round trips)", "batch": 1,
                 "images_per_s": 1 / loop_s, "ms_per_image": 1000 * loop_s, "speedup_vs_loop": 1.0})
    det.batch_size = batch
    with tempfile.TemporaryDirectory(prefix="synboost-bench-") as tmp:
        for label in variants:
            precision, _, _, backend, _ = PIPELINE_VARIANTS[label]
            why = unavailable(backend, precision, dev)
            if why:
                skipped.append({"variant": label, "why": why})
                print(f"  skipped: {label}: {why}", flush=True)
                continue
            t_setup = time.perf_counter()
            run = variant_detector(det, PIPELINE_VARIANTS[label], tmp, imgs, batch, "random weights, benchmark")
            setup = time.perf_counter() - t_setup
            t_first = time.perf_counter()
            run(imgs[:batch])  # warm-up (compiles, starts the sessions' kernels)
            sync()
            first = time.perf_counter() - t_first
            t1 = time.perf_counter()
            run(imgs)
            sync()
            sec = (time.perf_counter() - t1) / len(imgs)
            row = {"variant": label, "batch": batch, "images_per_s": 1 / sec, "ms_per_image": 1000 * sec,
                   "speedup_vs_loop": loop_s / sec, "first_call_s": first, "setup_s": setup}
            row.update({f"ms {k}": v for k, v in _stage_times(run, imgs[:batch], dev).items()})
            rows.append(row)
            print(f"  {label}: {row['ms_per_image']:.0f} ms / image ({row['speedup_vs_loop']:.2f}x the loop)",
                  flush=True)
    info = device_info(dev)
    info["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print(f"\nSynBoost end to end at {size[0]}x{size[1]} (segmenter {backbone}, stages at "
          f"{det.size[0]}x{det.size[1]}) on {info.get('gpu', info['cpu'])}, torch {info['torch']}, load average "
          f"{info['load_average']}")
    cols = ["variant", "batch", "images_per_s", "ms_per_image", "speedup_vs_loop", "first_call_s", "setup_s"] + \
        sorted({k for r in rows for k in r if k.startswith("ms ")})
    print(format_rows(rows, cols))
    for s in skipped:
        print(f"skipped: {s['variant']}: {s['why']}")
    if out_json:
        write_json(out_json, {"benchmark": "pipeline", "size": list(size), "info": info, "rows": rows,
                              "skipped": skipped, "segmenter": backbone})
    return rows


def run_synthesis_benchmark(out_json: str | None = None, quick: bool = False, device: str = "auto") -> list[dict]:
    """Resynthesis images/s of the official-size SPADE generator (ngf 64, VAE, 6 up-samplings) at 256x512 and
    512x1024, and of the official CC-FPSE generator at its 256x512: fp32, and bf16 / channels_last on CUDA."""
    from synboost.config import SynthesisModelConfig
    from synboost.detectors.components import build_ccfpse, build_generator
    from synboost.models.generator import resynthesize
    from synboost.runtime import pick_device

    dev = pick_device(device)
    cuda = dev.type == "cuda"
    sizes = ((64, 128),) if quick else ((256, 512), (512, 1024))
    # (architecture, size): our SPADE generator at both sizes, and the official CC-FPSE at its native 256x512
    plans = [("spade", s) for s in sizes] + ([] if quick else [("ccfpse", (256, 512))])
    rows = []
    for arch, size in plans:
        if arch == "spade":
            gen = build_generator(SynthesisModelConfig(ngf=16 if quick else 64, num_upsampling=4 if quick else 6),
                                  size).to(dev).eval()
        else:
            gen = build_ccfpse(out_size=size).to(dev).eval()
        for bs in ((1, 8) if cuda else (1,)):
            labels = torch.randint(0, 19, (bs, *size), device=dev)
            image = torch.rand(bs, 3, *size, device=dev)
            for variant, dtype in ([("eager", torch.float32), ("eager", torch.bfloat16),
                                    ("channels_last", torch.bfloat16)] if cuda else [("eager", torch.float32)]):
                g = gen.to(memory_format=torch.channels_last) if variant == "channels_last" else gen

                def run():
                    with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
                        return resynthesize(g, labels, image)
                sec = time_fn(run, dev, warmup=1, iters=5 if cuda else 2)
                rows.append({"generator": arch, "size": f"{size[0]}x{size[1]}", "batch": bs, "variant": variant,
                             "dtype": str(dtype)[6:], "ms_per_batch": 1000 * sec, "images_per_s": bs / sec})
                print(f"  {arch} {rows[-1]['size']} bs{bs} {variant} {rows[-1]['dtype']}: "
                      f"{rows[-1]['images_per_s']:.2f} img/s")
    info = device_info(dev)
    print(f"\nSPADE generator (ngf 64, VAE encoder, 6 up-samplings) and the official CC-FPSE (ngf 64, VAE), "
          f"deterministic, on {info.get('gpu', info['cpu'])}, torch {info['torch']}")
    print(format_rows(rows, ["generator", "size", "batch", "variant", "dtype", "ms_per_batch", "images_per_s"]))
    if out_json:
        write_json(out_json, {"benchmark": "synthesis", "info": info, "rows": rows})
    return rows
