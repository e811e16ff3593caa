"""What the dissimilarity stage adds to the training loop.

Training data is made the SynBoost way from a labelled training set with instance ids, through the same
segmenter, generator and perceptual difference that inference uses (``pipeline.dissimilarity_inputs``):

* variant 0 ("known"): the label map is the segmenter's prediction; anomalies are the void regions only;
* variants 1..: the ground-truth label map with a random share of object instances switched to another class
  (label switching) and the void regions filled with the prediction; anomalies = switched instances + void.
  With ``data.switch_on: prediction`` (not the official recipe) the switched instances go into the segmenter's
  predicted map instead, so every variant's label map carries the segmenter's mistakes as test-time maps do;
  switched pixels whose new class the segmenter predicts there anyway (an unchanged label map) are ignored.

Void pixels that are not anomalies (the ego vehicle) are ignored (255). The entropy and distance maps come from
the segmenter on the real image, the perceptual difference from the real image and the resynthesis. Samples are
made once, before training (as the official pre-processing does), and kept in memory at the stage's size.
Loss: cross-entropy with the official ENet-style class weights, ignore 255; Adam (0.5, 0.999); plateau schedule on
the held-out loss; the best epoch is chosen by AP on the held-out training images, never on an evaluation set.
Two options beyond the official recipe: ``lr_decay`` (a constant rate, then a linear decay, in place of the plateau
schedule) and ``inlier_class_weights`` (inlier pixels also weighted by their label-map class; the held-out loss,
which only the plateau schedule reads, stays the official one).
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from synboost import scores
from synboost.config import DissimilarityConfig, to_dict
from synboost.data.anomalies import paste, switch_instances, void_mask
from synboost.data.kinds import open_dataset
from synboost.data.labels import ID_TO_TRAIN_ID, IGNORE
from synboost.detectors.components import build_dissimilarity, load_generator, load_segmenter, perceptual_vgg
from synboost.detectors.synboost import dissimilarity_inputs
from synboost.errors import ConfigError
from synboost.hub.registry import sha256_of
from synboost.metrics.pixel import pixel_metrics
from synboost.models.generator import labels_to_onehot
from synboost.tensors import images_to_batch, resize_maps
from synboost.training.stage import publish_run, run_stage
from synboost.training.task import SeededDataset, Task, linear_decay_schedule

EGO_ID = 1


def _label_ids(sample) -> np.ndarray:
    """Cityscapes label ids from the instance map (stuff pixels carry their label id, things id * 1000 + k)."""
    inst = sample["instances"]
    return np.where(inst >= 1000, inst // 1000, inst).astype(np.uint8)


class DissimSamples(SeededDataset):
    """Precomputed samples as tensors; joint horizontal flips and (``crop``: (H, W)) joint random crops, seeded by
    (seed, epoch, index)."""

    def __init__(self, items: list[dict], flip: bool, seed: int = 0, crop: tuple[int, int] | None = None):
        super().__init__(items, seed)
        self.flip, self.crop = flip, tuple(crop) if crop else None

    def __getitem__(self, i: int):
        it = self.items[i]
        out = [it["image"], it["synthesis"], it["labels"], it["priors"], it["target"]]
        rng = self.rng(i)
        if self.flip and rng.random() < 0.5:
            out = [t.flip(-1) for t in out]
        if self.crop:
            (h, w), (ch, cw) = out[-1].shape[-2:], self.crop
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            out = [t[..., y:y + ch, x:x + cw] for t in out]
        return tuple(out)


@torch.no_grad()
def make_samples(cfg: DissimilarityConfig, device, indices, reader, segmenter, generator, vgg19,
                 progress: bool = True, desc: str = "anomaly data") -> list[dict]:
    """Build the training samples of ``reader[i] for i in indices`` (see the module docstring); an image's
    variants go through the generator and the VGG19 as one batch, in float32 (bf16 samples were tried and not
    kept by their rule; README, "The unchanged switched pixels, mended")."""
    d = cfg.data
    size = tuple(d.size)
    rng = np.random.default_rng([cfg.train.seed, 77])
    items = []
    for i in tqdm(indices, desc=desc, unit="img", disable=not progress, leave=False):
        s = reader[i]
        ids = _label_ids(s)
        logits = segmenter(images_to_batch([s["image"]], device, cfg.seg_size or None))
        pred = logits.argmax(1)
        ent, dist = scores.synboost_entropy(logits), scores.synboost_distance(logits)
        img01 = torch.from_numpy(s["image"]).to(device).permute(2, 0, 1)[None].float() / 255
        pred, ent, dist, img01 = resize_maps(size, pred, (ent, dist), img01)
        ids_t = resize_maps(size, torch.from_numpy(ids.astype(np.int64))[None].to(device))[0][0].cpu().numpy()
        inst_t = resize_maps(size, torch.from_numpy(s["instances"].astype(np.int64))[None])[0][0].numpy()
        pred_np = pred[0].cpu().numpy().astype(np.uint8)
        void = void_mask(ids_t) if d.void_anomalies else np.zeros(size, bool)
        ego = ids_t == EGO_ID
        gt_classes = ID_TO_TRAIN_ID[ids_t]  # uint8 train ids, 255 where void or unknown
        semantics, targets = [], []
        for v in range(d.variants):
            unseen = np.zeros(size, bool)  # switched pixels whose label map did not change (prediction mode)
            if v == 0:
                semantic, anomalous = pred_np.copy(), void.copy()
            else:
                switched_ids, switched = (switch_instances(ids_t, inst_t, rng) if d.switch_instances
                                          else (ids_t, np.zeros(size, bool)))
                new_classes = ID_TO_TRAIN_ID[switched_ids]
                if d.switch_on == "prediction":  # the switched instances pasted into the segmenter's prediction
                    semantic = paste(pred_np, new_classes, switched)
                    # where the new class is what the segmenter predicts anyway, the label map is unchanged: those
                    # pixels are inliers in variant 0, so they are no anomaly here either (ignored)
                    unseen = switched & (new_classes == pred_np)
                else:
                    semantic = paste(new_classes, pred_np, void | (gt_classes == IGNORE))
                anomalous = switched | void
            target = np.where(ego | unseen, IGNORE, anomalous.astype(np.uint8))
            target[(gt_classes == IGNORE) & ~void & ~ego] = IGNORE  # other void: unknown
            semantics.append(semantic)
            targets.append(target)
        nv = len(semantics)
        lab = torch.from_numpy(np.stack(semantics).astype(np.int64)).to(device)
        inp = dissimilarity_inputs(img01.expand(nv, -1, -1, -1), lab, generator, vgg19, ent.expand(nv, -1, -1),
                                   dist.expand(nv, -1, -1), cfg.model.priors)
        image, synthesis, labels = inp["image"].cpu(), inp["synthesis"].cpu(), lab.cpu()
        priors = inp["priors"].cpu() if inp["priors"] is not None else None
        classes = torch.from_numpy(gt_classes)  # the true class per pixel (255: void), for diagnostics
        for v, target in enumerate(targets):
            items.append({
                "image": image[v], "synthesis": synthesis[v], "labels": labels[v],
                "priors": priors[v] if priors is not None else torch.zeros(0, *size),
                "target": torch.from_numpy(target.astype(np.int64)), "classes": classes,
            })
    return items


def _sample_sources(cfg: DissimilarityConfig, device):
    """What anomaly samples are made from: (segmenter, generator, perceptual VGG19, training reader, images used,
    of which the last ``n_held`` are held out)."""
    segmenter, _ = load_segmenter(cfg.segmenter, device)
    generator = load_generator(cfg.generator, device)
    vgg19 = perceptual_vgg(cfg.perceptual_vgg_pretrained, cfg.perceptual_vgg_path, device)
    reader = open_dataset(cfg.data.train, with_instances=True)
    n = len(reader) if not cfg.data.max_images else min(len(reader), cfg.data.max_images)
    return segmenter, generator, vgg19, reader, n, max(1, int(round(n * cfg.data.heldout_fraction)))


def prepare_samples(cfg: DissimilarityConfig, device, progress: bool = True,
                    priors: tuple[str, ...] | None = None) -> dict:
    """Training and held-out samples for ``cfg`` (with the prior maps ``priors``, default the model's), made once
    and shareable between runs that differ only in the network (the ablations)."""
    import dataclasses

    if priors is not None:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, priors=list(priors)))
    segmenter, generator, vgg19, reader, n, n_held = _sample_sources(cfg, device)
    idx = list(range(n))
    train = make_samples(cfg, device, idx[:n - n_held], reader, segmenter, generator, vgg19, progress)
    held = make_samples(cfg, device, idx[n - n_held:], reader, segmenter, generator, vgg19, progress,
                        desc="held-out anomaly data")
    return {"train": train, "held": held, "priors": list(cfg.model.priors)}


#: the maps SynBoost's final score may sum, in the order of ``ensemble_weights``
ENSEMBLE_MAPS: tuple[str, ...] = ("dissimilarity", "entropy", "distance", "perceptual")
#: the fusion-weight grid of the official ``test_ensemble.py``: each of the four maps' weights in {0, 1, 2, 3},
#: L1-normalised (one entry per distinct normalised vector; 0.75 / 0.25 / 0 / 0 was the official choice)
ENSEMBLE_GRID: tuple[tuple[float, ...], ...] = tuple(sorted(
    {tuple(round(x / sum(w), 6) for x in w): tuple(x / sum(w) for x in w)
     for w in itertools.product(range(4), repeat=len(ENSEMBLE_MAPS)) if sum(w)}.values(),
    key=lambda w: [-x for x in w]))
#: the official weights (the "ours" config), chosen there on the evaluation sets themselves
OFFICIAL_ENSEMBLE: tuple[float, ...] = (0.75, 0.25, 0.0, 0.0)


def search_ensemble_weights(maps: dict[str, list[np.ndarray]], labels: list[np.ndarray],
                            grid: tuple[tuple[float, ...], ...] = ENSEMBLE_GRID) -> dict:
    """The official grid search of the fusion ``sum_k w_k * map_k`` over :data:`ENSEMBLE_MAPS` (``maps``: per-image
    maps by name; lowest FPR95 wins, as in ``test_ensemble.py``; ties go to the higher AP, then to the earlier
    grid entry), on 0/1/255 labels. Returns the chosen ``weights``, its ``ap`` / ``fpr95`` and every vector's
    figures under ``grid``."""
    stacks = [maps[k] for k in ENSEMBLE_MAPS]
    rows = []
    for w in grid:
        fused = [sum(wk * m[i] for wk, m in zip(w, stacks) if wk) for i in range(len(labels))]
        m = pixel_metrics(fused, labels)
        rows.append({"weights": [float(x) for x in w], "ap": float(m.ap), "fpr95": float(m.fpr95),
                     "auroc": float(m.auroc)})
    best = min(rows, key=lambda r: (r["fpr95"], -r["ap"]))
    return {"weights": best["weights"], "maps": list(ENSEMBLE_MAPS), "ap": best["ap"], "fpr95": best["fpr95"],
            "grid": rows}


ENSEMBLE_FILE = "ensemble.json"
ENSEMBLE_RULE = ("the official grid (dissimilarity, entropy, distance, perceptual difference; weights in {0..3}, "
                 "L1-normalised), lowest FPR95 (ties: highest AP), on the "
                 "held-out training images as at test time: the segmenter's predicted label map, the void clutter "
                 "as the anomalies (variant 0)")


@torch.no_grad()
def select_ensemble_weights(cfg: DissimilarityConfig, checkpoint: str | Path | None = None, progress: bool = True,
                            device=None) -> dict:
    """SynBoost's fusion weights for one trained dissimilarity network, chosen on held-out *training* images,
    never on an evaluation set (the official 0.75 / 0.25 came from a grid search on the evaluation sets
    themselves). The held-out images are those the stage held out for model selection; their anomalies are made
    as at test time: the segmenter's predicted label map and the void clutter as anomalies, whatever the
    network trained on. Written to ``ensemble.json`` beside the checkpoint and reused while the checkpoint is
    the same file (sha256)."""
    import dataclasses

    from synboost.data.io import write_json
    from synboost.detectors.components import load_dissimilarity
    from synboost.runtime import pick_device

    ckpt = Path(checkpoint or Path(cfg.out) / "dissimilarity.safetensors")
    if not ckpt.is_file():
        raise ConfigError(f"{ckpt}: no dissimilarity checkpoint to choose fusion weights for; train it first "
                          "(synboost train dissimilarity)")
    digest, cache = sha256_of(ckpt), ckpt.parent / ENSEMBLE_FILE
    if cache.is_file():
        import json

        saved = json.loads(cache.read_text())
        if saved.get("checkpoint_sha256") == digest and "false_positive_classes" in saved:
            return saved  # (a file written before the held-out false alarms were counted is chosen again)
    device = device or pick_device(cfg.train.device)
    all3 = ("entropy", "perceptual", "distance")
    sel = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, variants=1, void_anomalies=True),
                              model=dataclasses.replace(cfg.model, priors=list(all3)))
    segmenter, generator, vgg19, reader, n, n_held = _sample_sources(cfg, device)
    items = make_samples(sel, device, list(range(n - n_held, n)), reader, segmenter, generator, vgg19, progress,
                         desc="held-out images for the fusion weights")
    net, _ = load_dissimilarity(ckpt, device)
    idx = [all3.index(p) for p in net.priors]
    maps, lab = {k: [] for k in ENSEMBLE_MAPS}, []
    for it in items:
        onehot = labels_to_onehot(it["labels"][None], 19)[0]
        pri = it["priors"][idx][None].to(device) if idx else None
        logits = net(it["image"][None].to(device), it["synthesis"][None].to(device), onehot[None].to(device), pri)
        maps["dissimilarity"].append(F.softmax(logits.float(), 1)[0, 1].cpu().numpy())
        for k in all3:
            maps[k].append(it["priors"][all3.index(k)].numpy())
        lab.append(it["target"].numpy())
    n_pos = int(sum((t == 1).sum() for t in lab))
    if n_pos == 0:
        raise ConfigError(f"{cfg.data.train}: the {n_held} held-out training images hold no void clutter to choose "
                          "the fusion weights on; keep the official ones (ensemble_weights: official)")
    res = search_ensemble_weights(maps, lab)
    off = next(r for r in res["grid"] if r["weights"] == [float(w) for w in OFFICIAL_ENSEMBLE])
    res.update({"rule": ENSEMBLE_RULE, "images": n_held, "anomaly_pixels": n_pos, "official": off,
                "checkpoint": str(ckpt), "checkpoint_sha256": digest,
                "false_positive_classes": heldout_false_positives(items, maps, lab, res["weights"])})
    write_json(cache, res)
    return res


def heldout_false_positives(items: list[dict], maps: dict[str, list[np.ndarray]], labels: list[np.ndarray],
                            weights) -> dict:
    """Where the fusion ``weights`` raises false alarms on the held-out images ``items`` (their maps and 0/1/255
    ``labels``): at its pixel best-F1 threshold there, the inlier pixels above it per true class (as ``evaluate``
    reports them on a test set), and the share of those false positives on pixels whose label map (the
    segmenter's prediction) is not their true class. A selection set's view of the failure, without the test."""
    from synboost.data.labels import CLASS_NAMES
    from synboost.metrics.attribution import class_false_positives
    from synboost.metrics.pixel import pixel_curve

    fused = [sum(w * maps[k][i] for w, k in zip(weights, ENSEMBLE_MAPS) if w) for i in range(len(labels))]
    threshold = pixel_curve(fused, labels).best_f1_threshold()[0]
    if np.isnan(threshold):
        return {}
    classes = [it["classes"].numpy() for it in items]
    cfp = class_false_positives(zip(fused, labels, classes), threshold)
    # the same count over the pixels whose label map disagrees with their true class (the others as unknown, 255)
    wrong = [np.where(it["labels"].numpy() != c, c, 255) for it, c in zip(items, classes)]
    fp_wrong, fp_all = int(class_false_positives(zip(fused, labels, wrong), threshold).fp.sum()), int(cfp.fp.sum())
    return {"threshold": float(threshold), "fp": cfp.fp.tolist(), "inliers": cfp.inliers.tolist(),
            "top": cfp.top(CLASS_NAMES), "on_misclassified": fp_wrong / fp_all if fp_all else 0.0}


def enet_class_weights(items: list[dict]) -> torch.Tensor:
    """w_c = 1 / ln(1.02 + f_c), f_c the pixel frequency of class c among the labelled pixels (official)."""
    counts = torch.zeros(2, dtype=torch.float64)
    for it in items:
        t = it["target"]
        counts += torch.bincount(t[t != IGNORE], minlength=2)[:2].double()
    f = counts / counts.sum().clamp_min(1)
    return (1.0 / torch.log(1.02 + f)).float()


def inlier_class_weights(items: list[dict], n_classes: int = 19) -> torch.Tensor:
    """Per label-map class c: 1 / ln(1.02 + f_c), f_c its share of the inlier pixels (target 0) of ``items``,
    scaled so that the inlier pixels' mean weight is 1; a class with no inlier pixel gets weight 1."""
    counts = torch.zeros(n_classes, dtype=torch.float64)
    for it in items:
        lab = it["labels"][it["target"] == 0]
        counts += torch.bincount(lab[lab < n_classes], minlength=n_classes).double()
    if counts.sum() == 0:
        return torch.ones(n_classes)
    f = counts / counts.sum()
    w = 1.0 / torch.log(1.02 + f)
    w = w / (w * f).sum()  # mean 1 over the inlier pixels
    return torch.where(counts > 0, w, torch.ones_like(w)).float()


class DissimilarityTask(Task):
    """The dissimilarity network on anomaly data made once before training (see the module docstring); ends with
    ``dissimilarity.safetensors`` and a SynBoost pipeline file."""

    kind = "dissimilarity"

    def __init__(self, cfg: DissimilarityConfig, progress: bool = True, samples: dict | None = None):
        if not cfg.segmenter or not cfg.generator:
            raise ConfigError("dissimilarity training needs 'segmenter' and 'generator' checkpoints (set them in the "
                              "config or with --set segmenter=... --set generator=...)")
        if not 0.0 <= float(cfg.lr_decay) <= 1.0:
            raise ConfigError(f"dissimilarity: lr_decay must lie in [0, 1] (the decaying fraction of the steps), "
                              f"got {cfg.lr_decay}")
        if int(cfg.data.variants) < 1:
            raise ConfigError(f"dissimilarity: data.variants must be at least 1 (variant 0 is the segmenter's "
                              f"prediction, the others its label switches), got {cfg.data.variants}")
        if cfg.data.switch_on not in ("ground_truth", "prediction"):
            raise ConfigError(f"dissimilarity: data.switch_on must be ground_truth or prediction, got "
                              f"'{cfg.data.switch_on}'")
        crop, size = list(cfg.data.crop), list(cfg.data.size)
        if crop and (len(crop) != 2 or crop[0] > size[0] or crop[1] > size[1] or min(crop) < 1):
            raise ConfigError(f"data.crop {crop} must be two sides no larger than data.size {size} (or [] for "
                              "whole samples)")
        self.cfg, self.progress, self.samples = cfg, progress, samples
        self._train = self._held = None
        self.weights = self.inlier_weights = None

    def _prepare(self, device) -> None:
        if self._train is None:
            self.samples = self.samples or prepare_samples(self.cfg, device, self.progress)
            self._train, self._held = self.samples["train"], self.samples["held"]
            have = self.samples["priors"]
            missing = [p for p in self.cfg.model.priors if p not in have]
            if missing:
                raise ConfigError(f"precomputed samples lack the prior maps {missing}")
            self._prior_idx = torch.tensor([have.index(p) for p in self.cfg.model.priors], dtype=torch.long)
            self.weights = enet_class_weights(self._train).to(device) if self.cfg.class_weights else None
            self.inlier_weights = (inlier_class_weights(self._train).to(device) if self.cfg.inlier_class_weights
                                   else None)

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        net = build_dissimilarity(m)
        if m.vgg_pretrained:
            from synboost.models.vgg import VGG16Encoder, load_imagenet_vgg

            if not isinstance(net.vgg_encoder, VGG16Encoder) or net.encoder_width != 1.0:
                raise ConfigError("pretrained VGG16 weights fit a full-width encoder with spade decoder/none: set "
                                  "model.encoder_width=1.0 (the rest may stay narrow), or model.vgg_pretrained=false")
            load_imagenet_vgg(net.vgg_encoder, 16, m.vgg_path or None, disable_hint="model.vgg_pretrained=false")
        return net

    def build_optimizer(self, model):
        c = self.cfg
        return torch.optim.Adam(model.parameters(), lr=c.train.lr, betas=(c.beta1, c.beta2),
                                weight_decay=c.train.weight_decay)

    def build_scheduler(self, opt, total_steps: int):
        """The official plateau schedule (halve the rate when the held-out loss stalls), or with ``lr_decay`` > 0
        a constant rate falling linearly to 0 over that last fraction of the steps."""
        frac = float(self.cfg.lr_decay)  # in [0, 1]: checked when the task is made
        if frac > 0.0:
            return linear_decay_schedule(opt, total_steps, frac)
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, "min", patience=self.cfg.plateau_patience,
                                                          factor=self.cfg.plateau_factor)

    def train_dataset(self) -> Dataset:
        from synboost.runtime import pick_device

        self._prepare(pick_device(self.cfg.train.device))
        return DissimSamples(self._train, self.cfg.data.flip, self.cfg.train.seed, self.cfg.data.crop or None)

    def _forward(self, model, batch, device):
        image, syn, labels, priors, target = (t.to(device) for t in batch)
        priors = priors[:, self._prior_idx.to(device)] if priors.shape[1] else priors
        onehot = labels_to_onehot(labels, 19)
        logits = model(image, syn, onehot, priors if priors.shape[1] else None)
        return logits, target

    def train_step(self, model, batch, device):
        logits, target = self._forward(model, batch, device)
        if self.inlier_weights is None:
            return F.cross_entropy(logits.float(), target, weight=self.weights, ignore_index=IGNORE), {}
        # per pixel: the anomaly / inlier weight, times the label-map class's weight on inlier pixels; the same
        # weighted mean as cross_entropy(weight=...) computes
        labels = batch[2].to(device)
        valid = target != IGNORE
        safe = torch.where(valid, target, torch.zeros_like(target))
        w = self.weights[safe] if self.weights is not None else torch.ones_like(target, dtype=torch.float32)
        rare = self.inlier_weights[labels.clamp(0, len(self.inlier_weights) - 1)]
        w = torch.where(valid & (target == 0) & (labels < len(self.inlier_weights)), w * rare, w) * valid
        loss = F.cross_entropy(logits.float(), target, ignore_index=IGNORE, reduction="none")  # 0 where ignored
        return (loss * w).sum() / w.sum().clamp_min(1e-12), {}

    @torch.no_grad()
    def validate(self, model, device) -> dict:
        model.eval()
        loss, n, sc, lab = 0.0, 0, [], []
        for i in range(0, len(self._held), 8):
            batch = [torch.stack(t) for t in zip(*(DissimSamples(self._held, False)[j]
                                                   for j in range(i, min(i + 8, len(self._held)))))]
            logits, target = self._forward(model, batch, device)
            loss += float(F.cross_entropy(logits.float(), target, weight=self.weights, ignore_index=IGNORE,
                                          reduction="sum"))
            n += int((target != IGNORE).sum())
            sc.append(F.softmax(logits.float(), 1)[:, 1].cpu().numpy())
            lab.append(target.cpu().numpy())
        model.train()
        res = pixel_metrics(sc, lab)
        return {"score": res.ap, "loss": loss / max(n, 1), "heldout_ap": res.ap, "heldout_fpr95": res.fpr95}

    def checkpoint_meta(self) -> dict:
        m = self.cfg.model
        return {"kind": self.kind, "config": to_dict(self.cfg), "model": to_dict(m), "size": list(self.cfg.data.size),
                "priors": list(m.priors)}

    def on_fit_end(self, model, summary, engine) -> None:
        """Publish the best epoch as ``dissimilarity.safetensors`` and a ``pipeline.yaml`` composing the three
        stages."""
        cfg = self.cfg
        publish_run(summary, cfg.out, "dissimilarity.safetensors", "dissimilarity", method="synboost",
                    segmenter=str(Path(cfg.segmenter).resolve()), generator=str(Path(cfg.generator).resolve()),
                    input_size=list(cfg.seg_size), perceptual_vgg_pretrained=cfg.perceptual_vgg_pretrained,
                    perceptual_vgg_path=cfg.perceptual_vgg_path)


def train_dissimilarity(cfg: DissimilarityConfig, resume: bool = False, progress: bool = True,
                        samples: dict | None = None) -> dict:
    """``synboost train dissimilarity``; ends by writing ``dissimilarity.safetensors`` (the best epoch) and a
    SynBoost ``pipeline.yaml`` that composes the three stages. ``samples``: made by :func:`prepare_samples` (shared
    between runs that differ only in the network)."""
    return run_stage(DissimilarityTask(cfg, progress, samples), cfg, resume=resume, progress=progress)
