"""``synboost train backbone``: pretrain the VGG16 and VGG19 trunks of SynBoost where no ImageNet weights exist.

The official SynBoost takes ImageNet VGG16 for the dissimilarity encoder and ImageNet VGG19 for the perceptual
difference and the generator's VGG loss. Offline, on the embedded world, those were random networks. This stage
trains torchvision's own ``vgg16().features`` / ``vgg19().features`` (full width, no BN, torchvision's init) on the
training split and exports each as ``<out>/vgg{16,19}-<name>.safetensors`` in torchvision's key layout
(``features.N.weight`` / ``features.N.bias``, nothing else), so that every consumer takes it through the path it
takes ImageNet weights by: ``load_imagenet_vgg`` (synthesis ``vgg_path``, dissimilarity ``model.vgg_path`` and
``perceptual_vgg_path``, pipeline ``components.perceptual_vgg``) and ``build_lpips(path=...)``. The 102 M-parameter
ImageNet classifier of torchvision's ``VGG`` is neither trained nor saved: ``vgg16().load_state_dict(sd,
strict=False)`` reports exactly the classifier keys as missing.

Objective: dense supervision, as an ImageNet classifier is supervised, but on what the world labels per pixel:
the 19-class cross-entropy (ignore 255) plus a binary boundary BCE whose targets are the 4-neighbour edges of the
instance-id map (class edges and the edges between instances of one class, which label switching relies on).
Both come from a light multi-scale head (a 1x1 projection of the last ReLU of each of the five blocks, summed at
stride 2, one 3x3 conv, a 1x1 classifier) that reads every block, so every conv of ``features`` learns; the head is
dropped at export. Why not a self-supervised objective: on a CPU budget of minutes the labels are the densest
signal the world has, and it measured so. VGG16 on the demo's world at 64x128, 40 steps of 8 images for each
objective, then a linear probe (per-level 1x1 convs on the frozen, standardised block outputs, 64 training images)
scored by validation mIoU: dense supervision 38.9, masked-patch reconstruction (half of the 8x8 patches zeroed, L1
on them) 34.0, the random initialisation 37.4. Random VGG features are a strong baseline on this colour-coded world,
and the reconstruction objective first trades them for low-level detail; dense supervision is the one that
improves on them. Validation: the head's mIoU on the val split selects each trunk's best epoch, which is the one
exported.

Each depth in ``backbone.depth`` is one run of :class:`BackboneTask` in ``<out>/vgg{depth}`` (its own log,
checkpoints and resume); a run paused by ``train.stop_after`` ends the command before the next depth starts.
``train.amp_cpu: true`` trains under bf16 autocast on a CPU with bf16 units (on the 2-core AVX512-BF16 machine
1.6x faster per epoch at the same validation mIoU); the weights, and so the exported trunks, stay float32.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from synboost.config import BackboneConfig, to_dict
from synboost.data.io import write_json
from synboost.data.kinds import open_dataset
from synboost.data.labels import CLASS_NAMES, IGNORE
from synboost.data.transforms import augment, resize_pair, to_chw_float
from synboost.errors import ConfigError
from synboost.hub.checkpoint import load_into, load_model, save_model
from synboost.metrics.segmentation import ConfusionMatrix
from synboost.models.vgg import TRUNK_KIND, full_features, stage_outputs
from synboost.training.stage import run_stage
from synboost.training.task import SeededDataset, Task, poly_schedule

KIND = "backbone"  #: the engine's checkpoints of this stage (trunk + head, our layout; the export is TRUNK_KIND)
DEPTHS = (16, 19)


class PyramidHead(nn.Module):
    """The light head: per level a 1x1 conv to ``dim`` channels, all resized to stride 2 and summed, ReLU, one 3x3
    conv + ReLU, a 1x1 conv to ``num_out`` outputs, bilinear to the input size."""

    def __init__(self, channels: tuple[int, ...], dim: int, num_out: int):
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in channels)
        self.fuse = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(inplace=True))
        self.cls = nn.Conv2d(dim, num_out, 1)

    def forward(self, feats: list[torch.Tensor], size) -> torch.Tensor:
        h, w = (size[0] + 1) // 2, (size[1] + 1) // 2
        x = sum(F.interpolate(p(f), size=(h, w), mode="bilinear", align_corners=False)
                for p, f in zip(self.proj, feats))
        return F.interpolate(self.cls(self.fuse(x)), size=size, mode="bilinear", align_corners=False)


class TrunkNet(nn.Module):
    """torchvision's ``vgg{depth}().features`` (as ``features``, torchvision's keys) + :class:`PyramidHead` on its
    five block outputs. ``forward``: ImageNet-normalised (B, 3, H, W) -> (B, 19 [+ 1 edge], H, W) logits."""

    def __init__(self, depth: int, head_dim: int = 64, edges: bool = True, num_classes: int = 19):
        super().__init__()
        if depth not in DEPTHS:
            raise ConfigError(f"backbone.depth: {depth} is not a VGG depth this stage trains (16 or 19)")
        self.depth, self.num_classes, self.edges = depth, num_classes, edges
        self.features = full_features(depth)
        self.taps = stage_outputs(depth)
        chans = [self.features[i - 1].out_channels for i in self.taps]
        self.head = PyramidHead(tuple(chans), head_dim, num_classes + int(edges))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, last = [], self.taps[-1]
        for i, m in enumerate(self.features):
            x = m(x)
            if i in self.taps:
                feats.append(x)
            if i == last:
                break
        return self.head(feats, feats[0].shape[-2:])

    def trunk_state_dict(self) -> dict[str, torch.Tensor]:
        """The trunk alone in torchvision's layout (``features.N.weight`` / ``.bias``)."""
        return {f"features.{k}": v for k, v in self.features.state_dict().items()}


def boundary_targets(ids: np.ndarray, pad: int) -> np.ndarray:
    """(H, W) ids -> uint8 1 where a 4-neighbour has another id, 0 elsewhere, IGNORE on ``pad`` pixels (a pad
    neighbour does not make an edge)."""
    e = np.zeros(ids.shape, bool)
    real = ids != pad
    dw = (ids[:, 1:] != ids[:, :-1]) & real[:, 1:] & real[:, :-1]
    dh = (ids[1:] != ids[:-1]) & real[1:] & real[:-1]
    e[:, 1:] |= dw
    e[:, :-1] |= dw
    e[1:] |= dh
    e[:-1] |= dh
    out = e.astype(np.uint8)
    out[~real] = IGNORE
    return out


def _compact_ids(inst: np.ndarray) -> np.ndarray:
    """Instance ids renumbered 256.. as uint16 (nearest resizing keeps them; 255 stays free for the padding)."""
    _, inv = np.unique(inst, return_inverse=True)
    if inv.max(initial=0) > 65535 - 256:
        raise ValueError(f"{inv.max() + 1} segments in one instance map; at most {65535 - 256} are supported")
    return (inv.reshape(inst.shape) + 256).astype(np.uint16)


class BackboneTrainSet(SeededDataset):
    """Reader samples -> (image, 19-class label, boundary target): the same seeded scale / crop / flip for the
    three (the label and the instance map go through one ``augment`` each with copies of one generator)."""

    def __init__(self, reader, size, crop, scale, flip: bool, edges: bool, seed: int):
        super().__init__(reader, seed)
        self.size, self.crop = tuple(size) if size else None, tuple(crop) if crop else None
        self.scale, self.flip, self.edges = scale, flip, edges

    def __getitem__(self, i: int):
        s = self.items[i]
        img, lab = s["image"], s["label"]
        ids = _compact_ids(s["instances"]) if self.edges else None
        if self.size:
            img, lab = resize_pair(img, lab, self.size)
            ids = None if ids is None else _resize_nearest(ids, self.size)
        x, y = augment(img, lab, self.rng(i), self.crop, self.scale, self.flip)
        out = [torch.from_numpy(to_chw_float(x)), torch.from_numpy(y.astype(np.int64))]
        if ids is not None:
            _, ids = augment(img, ids, self.rng(i), self.crop, self.scale, self.flip)
            out.append(torch.from_numpy(boundary_targets(ids, IGNORE).astype(np.int64)))
        return tuple(out)


def _resize_nearest(a: np.ndarray, size) -> np.ndarray:
    return cv2.resize(a, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


class BackboneTask(Task):
    """One trunk (``depth``) with its head: cross-entropy + boundary BCE, AdamW (or SGD) with a poly learning
    rate, the head's validation mIoU as the score; ends by exporting the best epoch's trunk."""

    kind = KIND

    def __init__(self, cfg: BackboneConfig, depth: int, export_dir: str | Path):
        self.cfg, self.depth, self.export_dir = cfg, int(depth), Path(export_dir)
        self.name = f"backbone vgg{self.depth}"
        self._val = None

    def build_model(self) -> nn.Module:
        b = self.cfg.backbone
        return TrunkNet(self.depth, b.head_dim, b.edges)

    def build_optimizer(self, model: nn.Module):
        c = self.cfg
        if c.optimizer == "adamw":
            return torch.optim.AdamW(model.parameters(), lr=c.train.lr, weight_decay=c.train.weight_decay)
        if c.optimizer == "sgd":
            return torch.optim.SGD(model.parameters(), lr=c.train.lr, momentum=c.momentum,
                                   weight_decay=c.train.weight_decay)
        raise ConfigError(f"optimizer '{c.optimizer}' is not one of adamw, sgd")

    def build_scheduler(self, opt, total_steps: int):
        return poly_schedule(opt, total_steps, self.cfg.poly_power)

    def train_dataset(self) -> Dataset:
        d, b = self.cfg.data, self.cfg.backbone
        reader = open_dataset(d.train, with_instances=True) if b.edges else open_dataset(d.train)
        return BackboneTrainSet(reader, d.size, d.crop, (d.scale_min, d.scale_max), d.flip, b.edges,
                                self.cfg.train.seed)

    def _losses(self, logits: torch.Tensor, y: torch.Tensor, edge: torch.Tensor | None) -> dict:
        logits = logits.float()
        out = {"ce": F.cross_entropy(logits[:, :19], y, ignore_index=IGNORE)}
        if edge is not None:
            keep = edge != IGNORE
            out["edge"] = F.binary_cross_entropy_with_logits(logits[:, 19][keep], edge[keep].float())
        return out

    def train_step(self, model, batch, device):
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        edge = batch[2].to(device, non_blocking=True) if len(batch) > 2 else None
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        parts = self._losses(model(x), y, edge)
        loss = parts["ce"] + self.cfg.backbone.edge_weight * parts.get("edge", 0.0)
        return loss, {k: float(v.detach()) for k, v in parts.items()}

    @torch.no_grad()
    def validate(self, model, device) -> dict:
        d = self.cfg.data
        if self._val is None:
            self._val = open_dataset(d.val)
        n = len(self._val) if not d.val_images else min(d.val_images, len(self._val))
        was = model.training
        model.eval()
        cm = ConfusionMatrix(19, class_names=list(CLASS_NAMES))
        loss = 0.0
        for i in range(n):
            s = self._val[i]
            img = resize_pair(s["image"], None, tuple(d.size))[0] if d.size else s["image"]
            x = torch.from_numpy(to_chw_float(img))[None].to(device)
            logits = model(x)[:, :19].float()
            if logits.shape[2:] != s["label"].shape:
                logits = F.interpolate(logits, size=s["label"].shape, mode="bilinear", align_corners=False)
            lab = torch.from_numpy(s["label"].astype(np.int64))[None].to(device)
            loss += float(F.cross_entropy(logits, lab, ignore_index=IGNORE))
            cm.update(logits.argmax(1)[0].cpu().numpy(), s["label"])
        model.train(was)
        return {"score": float(cm.compute().miou), "loss": loss / max(n, 1)}

    def checkpoint_meta(self) -> dict:
        return {"kind": self.kind, "architecture": f"vgg{self.depth}", "depth": self.depth,
                "config": to_dict(self.cfg), "model": to_dict(self.cfg.backbone)}

    def export_path(self) -> Path:
        """Where the trunk goes: ``<out>/vgg{depth}-<name>.safetensors``."""
        return trunk_path(self.export_dir, self.depth, self.cfg.name)

    def on_fit_end(self, model, summary, engine) -> None:
        """Export the best epoch's trunk in torchvision's layout (head and classifier left out)."""
        sd, meta = load_model(summary["best"], KIND)
        best = self.build_model()
        load_into(best, sd, summary["best"])
        path = export_trunk(best, self.export_path(), self.cfg, summary["best_val"], engine.start + engine.epochs_run)
        summary["trunk"] = str(path)
        write_json(Path(self.cfg.out) / "summary.json", summary)


def _world(spec: str) -> dict:
    """What the training split is: the spec, and the synthetic world's generator settings when it is one."""
    from synboost.data.synthetic import load_meta

    kind, _, rest = spec.partition(":")
    info: dict = {"train": spec}
    root = Path(rest.split("@")[0])
    if kind == "synthetic" and (root / "synthetic_world.json").is_file():
        m = load_meta(root)
        info.update({k: m[k] for k in ("seed", "height", "width", "splits", "version") if k in m})
    return info


def export_trunk(net: TrunkNet, path: str | Path, cfg: BackboneConfig, best_val: dict, epochs: int) -> Path:
    """Write ``net``'s trunk as safetensors in torchvision's ``vgg{depth}().features`` keys, with metadata (what it
    is, the data it learnt from, the epochs, the validation score of the exported epoch)."""
    meta = {
        "kind": TRUNK_KIND, "architecture": f"vgg{net.depth}", "depth": net.depth,
        "what": (f"torchvision vgg{net.depth}().features (no BN, full width) pretrained by `synboost train backbone`: "
                 "19-class cross-entropy + instance-boundary BCE through a multi-scale head (not saved); the "
                 "ImageNet classifier is not part of the file"),
        "layout": "torchvision features.N.weight / features.N.bias", "inputs": "RGB, ImageNet mean/std normalised",
        "world": _world(cfg.data.train), "val_data": cfg.data.val, "epochs": int(epochs),
        "best_epoch": int(best_val.get("epoch", 0)), "val_miou": float(best_val.get("score", float("nan"))),
        "val": best_val, "config": to_dict(cfg),
    }
    return save_model(path, net.trunk_state_dict(), meta)


def trunk_path(out: str | Path, depth: int, name: str) -> Path:
    """Where the backbone stage writes a trunk: ``<out>/vgg{depth}-<name>.safetensors``."""
    return Path(out) / f"vgg{depth}-{name}.safetensors"


def depth_runs(cfg: BackboneConfig) -> list[tuple[int, BackboneConfig]]:
    """One run per depth of ``backbone.depth``: (depth, its config, in ``<out>/vgg{depth}``)."""
    return [(d, dataclasses.replace(cfg, out=str(Path(cfg.out) / f"vgg{d}"),
                                    backbone=dataclasses.replace(cfg.backbone, depth=[d])))
            for d in (int(x) for x in cfg.backbone.depth)]


def train_backbone(cfg: BackboneConfig, resume: bool = False, progress: bool = True, **engine) -> dict:
    """``synboost train backbone``: one run per depth of ``backbone.depth`` in ``<out>/vgg{depth}``, each ending
    with ``<out>/vgg{depth}-<name>.safetensors``; returns {depth: summary} under ``runs`` and the exported files
    under ``trunks`` (also written to ``<out>/summary.json``). ``engine``: keywords of the Engine (``cpu_amp``)."""
    depths = [int(d) for d in cfg.backbone.depth]
    bad = [d for d in depths if d not in DEPTHS]
    if bad or not depths or len(set(depths)) != len(depths):
        raise ConfigError(f"backbone.depth: {cfg.backbone.depth} must list 16 and/or 19, each once")
    root = Path(cfg.out)
    runs, trunks = {}, {}
    for d, sub in depth_runs(cfg):
        s = run_stage(BackboneTask(sub, d, root), sub, resume=resume, progress=progress, **engine)
        runs[d] = s
        if "trunk" in s:
            trunks[d] = s["trunk"]
        if not s["finished"]:
            break
    summary = {"out": str(root), "runs": runs, "trunks": trunks,
               "finished": all(r["finished"] for r in runs.values()) and len(runs) == len(depths)}
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "summary.json", summary)
    return summary
