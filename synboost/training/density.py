"""``synboost fit density``: the Fishyscapes embedding-density baselines of a trained segmenter.

No gradient training, so no engine: two statistics passes (as the SML statistics of the segmentation stage).

1. **Training split** (clean images, void pixels excluded): every hooked layer's features stream into its
   :class:`~synboost.models.density.GaussianDensity` statistics (D^2 float64 each), and ``bank_per_image``
   non-void pixels of the kNN layer per image go into the reservoir-sampled :class:`KNNBank` (at most
   ``bank_size`` rows). Memory is bounded by those two, whatever the number of images. Then the Gaussians are
   fitted (Cholesky in float64).
2. **AnomalyMix** (``mix_images`` training images, each with ``objects_per_image`` pasted outliers, seeded by its
   index): the per-layer NLL maps at the image size. Over all inlier pixels (non-void, not pasted) the mean and
   standard deviation of each layer's NLL are streamed (the standardisation of ``nll_min``); ``mix_pixels``
   inlier and outlier pixels per image are kept for the logistic regression on the standardised NLLs.

Writes ``density.safetensors`` (kind "density") and ``pipeline.yaml`` (the segmenter + the density file), plus
``summary.json`` and the resolved ``config.yaml``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from synboost.config import DensityConfig, save_config, to_dict
from synboost.data.anomalies import OUTLIER, anomaly_mix
from synboost.data.kinds import open_dataset
from synboost.data.transforms import resize_pair
from synboost.errors import CheckpointError, ConfigError
from synboost.models.density import DENSITY_METHODS, DensityScorer, FeatureTap, fit_logistic, pixels, resize_mask
from synboost.models.segmenter import upsample

VOID = 255


class _Images(Dataset):
    """(image, label) of a reader, resized to ``size``; with ``outliers``, AnomalyMix objects pasted in (the
    draw is a function of (seed, index))."""

    def __init__(self, reader, n: int, size, outliers=None, d=None, seed: int = 0):
        self.reader, self.n, self.size, self.outliers, self.d, self.seed = reader, n, size, outliers, d, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        s = self.reader[i]
        image, label = s["image"], s["label"]
        if self.size:
            image, label = resize_pair(image, label, tuple(self.size))
        if self.outliers is not None:
            rng = np.random.default_rng([self.seed, 2718, i])
            for _ in range(self.d.objects_per_image):
                obj, mask = self.outliers.draw(rng, label.shape[0])
                image, label = anomaly_mix(image, label, obj, mask, rng, self.d.object_scale, self.d.blend)
        return image, label


def _batches(ds: Dataset, cfg: DensityConfig, desc: str, progress: bool):
    """Lists of (image, label) of one shape, at most ``batch_size`` long."""
    from tqdm import tqdm

    loader = DataLoader(ds, batch_size=cfg.batch_size, num_workers=cfg.workers, collate_fn=list)
    with tqdm(total=len(ds), desc=desc, disable=not progress, unit="img") as bar:
        for items in loader:
            groups: dict[tuple, list] = {}
            for it in items:
                groups.setdefault(it[0].shape, []).append(it)
            yield from groups.values()
            bar.update(len(items))


def _check_segmenter(path: str):
    from synboost.hub.checkpoint import read_meta

    if not path:
        raise ConfigError("density: 'segmenter' is empty; give the segmenter.safetensors to read features from "
                          "(from `synboost train segmentation`)")
    from synboost.detectors.segmenters import refuse_spec

    refuse_spec(path, "the density fit reads its features")
    try:
        meta = read_meta(path)
    except CheckpointError as e:
        raise ConfigError(f"density: {e}") from None
    if meta.get("kind") != "segmenter":
        raise ConfigError(f"{path}: is a '{meta.get('kind')}' checkpoint; 'segmenter' must be the "
                          "segmenter.safetensors of `synboost train segmentation`")


def build_scorer(model, cfg: DensityConfig, device) -> tuple[DensityScorer, FeatureTap]:
    """An unfitted scorer for ``model`` (feature dimensions probed with one small forward pass) and its tap."""
    m = cfg.model
    if m.single_layer not in m.layers:
        raise ConfigError(f"density: model.single_layer '{m.single_layer}' must be one of model.layers {m.layers}")
    if m.knn_reduce not in ("mean", "kth") or m.knn_backend not in ("auto", "faiss", "torch"):
        raise ConfigError("density: model.knn_reduce must be mean|kth and model.knn_backend auto|faiss|torch")
    if m.k < 1 or m.bank_per_image < 1 or m.bank_size < m.k or m.stats_stride < 1:
        raise ConfigError("density: need k >= 1, bank_per_image >= 1, bank_size >= k and stats_stride >= 1")
    try:
        tap = FeatureTap(model, list(m.layers) + [m.knn_layer])
    except KeyError as e:
        raise ConfigError(f"density: {e.args[0]}") from None
    with torch.no_grad(), tap.capture() as feats:
        model(torch.zeros(1, 3, 64, 64, device=device))
    dims = {n: int(f.shape[1]) for n, f in feats.items()}
    scorer = DensityScorer(m.layers, dims, m.single_layer, m.knn_layer, m.k, m.knn_reduce, m.bank_size,
                           knn_index=m.knn_index, knn_backend=m.knn_backend, seed=cfg.seed)
    return scorer.to(device), tap


def _forward(model, tap, images, device, amp: bool):
    from synboost.tensors import images_to_batch

    batch = images_to_batch(images, device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        with tap.capture() as feats:
            model(batch)
    return {n: f.float() for n, f in feats.items()}


def fit_density(cfg: DensityConfig, progress: bool = True) -> dict:
    """Fit the density baselines of ``cfg.segmenter``; returns the summary (paths, sizes, timings)."""
    from synboost.data.io import write_json
    from synboost.detectors.components import load_segmenter, save_component
    from synboost.detectors.detector import write_pipeline_file
    from synboost.hub.registry import sha256_of
    from synboost.runtime import pick_device
    from synboost.training.pebal import open_outliers

    _check_segmenter(cfg.segmenter)
    if cfg.method not in DENSITY_METHODS:
        raise ConfigError(f"density: method '{cfg.method}' is not one of {', '.join(DENSITY_METHODS)}")
    t0 = time.time()
    device = pick_device(cfg.device)
    model, _ = load_segmenter(cfg.segmenter, device)
    scorer, tap = build_scorer(model, cfg, device)
    m, d = cfg.model, cfg.data
    reader = open_dataset(d.train)
    n = min(len(reader), d.max_images) if d.max_images else len(reader)
    rng = np.random.default_rng([cfg.seed, 31337])

    # pass 1: Gaussian statistics + kNN bank
    for group in _batches(_Images(reader, n, d.size), cfg, "density statistics", progress):
        feats = _forward(model, tap, [g[0] for g in group], device, cfg.amp)
        valid = torch.from_numpy(np.stack([g[1] for g in group]) != VOID).to(device)
        for name in m.layers:
            f = feats[name]
            scorer.gaussian(name).update(pixels(f, resize_mask(valid, f.shape[-2:]), m.stats_stride))
        f = feats[m.knn_layer]
        mask = resize_mask(valid, f.shape[-2:])
        for b in range(f.shape[0]):
            rows = pixels(f[b:b + 1], mask[b:b + 1])
            pick = rng.choice(rows.shape[0], min(m.bank_per_image, rows.shape[0]), replace=False)
            scorer.knn.add(rows[torch.from_numpy(np.sort(pick)).to(rows.device)])
    counts = {name: scorer.gaussian(name).count for name in m.layers}
    for name in m.layers:
        if counts[name] < 2:
            raise ConfigError(f"density: layer '{name}' got {counts[name]} non-void training pixels; check "
                              f"data.train ({d.train})")
        scorer.gaussian(name).fit(m.ridge)
    seen = scorer.knn._seen
    scorer.knn.finish()
    t1 = time.time()

    # pass 2: NLL standardisation + logistic regression on AnomalyMix images
    n_mix = min(n, d.mix_images) if d.mix_images else n
    mixed = _Images(reader, n_mix, d.size, open_outliers(d), d, cfg.seed)
    L = len(m.layers)
    acc = torch.zeros(3, L, dtype=torch.float64, device=device)  # count, sum, sum of squares over inliers
    xs, ys = [], []
    for group in _batches(mixed, cfg, "density regression", progress):
        feats = _forward(model, tap, [g[0] for g in group], device, cfg.amp)
        labels = torch.from_numpy(np.stack([g[1] for g in group]).astype(np.int64)).to(device)
        nll = upsample(scorer.layer_nlls(feats), labels.shape[-2:])  # (B, L, H, W) at the image size
        inlier, outlier = (labels != VOID) & (labels != OUTLIER), labels == OUTLIER
        v = nll.permute(0, 2, 3, 1)[inlier].double()
        acc += torch.stack([torch.full((L,), float(v.shape[0]), dtype=torch.float64, device=device),
                            v.sum(0), v.square().sum(0)])
        for b in range(nll.shape[0]):
            for mask, y in ((inlier[b], 0), (outlier[b], 1)):
                rows = nll[b].permute(1, 2, 0)[mask]
                if rows.shape[0]:
                    pick = rng.choice(rows.shape[0], min(d.mix_pixels, rows.shape[0]), replace=False)
                    xs.append(rows[torch.from_numpy(np.sort(pick)).to(rows.device)].cpu().numpy())
                    ys.append(np.full(len(pick), y, np.uint8))
    if acc[0, 0] < 2:
        raise ConfigError("density: no inlier pixels in the AnomalyMix pass")
    mean = acc[1] / acc[0]
    std = (acc[2] / acc[0] - mean.square()).clamp_min(1e-12).sqrt()
    scorer.nll_mean.copy_(mean.float())
    scorer.nll_std.copy_(std.float())
    x, y = np.concatenate(xs), np.concatenate(ys)
    if not (y == 1).any():
        raise ConfigError("density: no pasted outlier pixel survived in the AnomalyMix pass; check data.outliers")
    z = (x - mean.cpu().numpy()) / std.cpu().numpy()
    coef, bias, lr = fit_logistic(z, y, m.logreg_c, seed=cfg.seed)
    scorer.logreg_coef.copy_(coef)
    scorer.logreg_bias.copy_(bias)
    tap.remove()
    t2 = time.time()

    from sklearn.metrics import average_precision_score

    mix_ap = {name: float(average_precision_score(y, z[:, i])) for i, name in enumerate(m.layers)}
    mix_ap["nll_min"] = float(average_precision_score(y, z.min(1)))
    mix_ap["density_logreg (in-sample)"] = float(average_precision_score(y, lr.decision_function(z)))

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    seg = str(Path(cfg.segmenter).resolve())
    meta = {"segmenter": seg, "segmenter_sha256": sha256_of(Path(seg)),
            "layers": list(m.layers), "dims": scorer.dims, "single_layer": m.single_layer,
            "knn_layer": m.knn_layer, "k": m.k, "knn_reduce": m.knn_reduce, "knn_index": m.knn_index,
            "knn_backend": m.knn_backend, "bank_size": int(scorer.knn.bank.shape[0]), "bank_capacity": m.bank_size,
            "bank_offered": int(seen), "pixels": counts, "input_size": list(d.size), "config": to_dict(cfg)}
    path = save_component(out / "density.safetensors", scorer, "density", **meta)
    pipe = write_pipeline_file(out / "pipeline.yaml", method=cfg.method, segmenter=seg, density=str(path.resolve()),
                               input_size=list(d.size), batch_size=cfg.batch_size)
    summary = {"density": str(path), "pipeline": str(pipe), "images": n, "mix_images": n_mix,
               "pixels": counts, "bank_size": meta["bank_size"], "bank_offered": int(seen),
               "bank_mb": scorer.knn.bank.numel() * 4 / 2**20,
               "gaussian_mb": {k: v * v * 8 / 2**20 for k, v in scorer.dims.items() if k in m.layers},
               "regression_pixels": {"inlier": int((y == 0).sum()), "outlier": int((y == 1).sum())},
               "nll_mean": mean.tolist(), "nll_std": std.tolist(), "logreg_coef": coef.tolist(),
               "logreg_bias": float(bias[0]), "mix_ap": mix_ap,
               "seconds": {"statistics": t1 - t0, "regression": t2 - t1}}
    write_json(out / "summary.json", summary)
    return summary
