"""The embedded default: a seeded procedural world of street scenes in the Cityscapes label space.

Each scene is a road in one-point perspective with sidewalks, terrain, building facades, walls, fences,
vegetation, sky, poles with signs and traffic lights, and traffic (cars, trucks, buses, trams, people, riders,
bicycles, motorcycles), drawn far to near. Every class has its own colour and texture statistics with
per-scene variation (lighting, palette, noise), so a segmenter has to learn them and a generator can learn to
redraw them. Street clutter (bins, boxes, bollards, benches, cones, carts, ... on the sidewalks and the road's
edge) is Cityscapes' void "static" / "dynamic" classes. Test scenes also hold out-of-distribution objects on or
near the road: shapes, colours and textures that belong to no class. Those pixels are "unlabeled" (label id 0 -> ignored) in the semantic ground
truth and 1 in the anomaly mask; the ego vehicle's bonnet (label id 1) and the clutter (label ids 4 and 5) are
void (255) in both.

Scenes are deterministic for (seed, split, index). :func:`write_world` writes the layouts the readers read:

* ``<out>/leftImg8bit/<split>/synth/<name>_leftImg8bit.png`` and ``<out>/gtFine/<split>/synth/<name>_gtFine_
  {labelIds,instanceIds}.png`` for the clean ``train`` and ``val`` splits (Cityscapes layout), and
* ``<out>/anomaly/test/{original,labels,semantic}/<name>.png`` for the anomaly test split (the layout SynBoost
  and PEBAL use for Fishyscapes and Road Anomaly: labels 0 / 1 / 255, semantic = train ids).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from synboost.data.street import (ID, Canvas, Layout, jitter, paint_ground, paint_side, paint_sky,
                                  paint_street_furniture, paint_traffic, paint_void_objects)

GENERATOR_VERSION = 4  # 3: varied street clutter (street.VOID_MAKES) from a child generator; 4: clutter also
#                        anywhere across the road (lost cargo, debris, road works), not only by the kerb


@dataclass
class Scene:
    """One generated scene: RGB image, Cityscapes label ids, instance ids and the 0/1/255 anomaly mask."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    label_ids: np.ndarray  # (H, W) uint8 Cityscapes label ids
    instance_ids: np.ndarray  # (H, W) int32: label id, or label id * 1000 + k for thing instances
    anomaly: np.ndarray  # (H, W) uint8: 0 inlier, 1 out-of-distribution object, 255 void


# ------------------------------------------------------------------------------- out-of-distribution objects


OOD_SHAPES = ("blob", "star", "ring", "poly", "box")
OOD_FILLS = ("solid", "checker", "stripes", "noise", "gradient")


def ood_object(rng: np.random.Generator, size: int, shapes=OOD_SHAPES, fills=OOD_FILLS) -> tuple[np.ndarray, np.ndarray]:
    """An object that belongs to no class: (size, size, 3) float32 RGB patch and its (size, size) bool mask.

    Shapes: blobs, stars, rings, irregular polygons, boxes; fills: saturated or unusual colours, checkerboards,
    stripes, colour noise, gradients. The anomaly test split uses all of them; outlier exposure (AnomalyMix) can
    be restricted to some ``shapes`` and ``fills`` so that the test holds object families it never saw.
    """
    s = max(4, int(size))
    m = np.zeros((s, s), np.uint8)
    shape = rng.choice(list(shapes))
    cx = cy = s / 2
    if shape == "blob":
        ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        rad = s * 0.45 * (0.6 + 0.4 * np.abs(np.sin(ang * rng.integers(1, 4) + rng.uniform(0, 6)))) * \
            rng.uniform(0.8, 1.0, 24)
        cv2.fillPoly(m, [np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)], 1)
    elif shape == "star":
        k = rng.integers(4, 8)
        ang = np.linspace(0, 2 * np.pi, 2 * k, endpoint=False) + rng.uniform(0, 1)
        rad = np.where(np.arange(2 * k) % 2 == 0, 0.48, 0.2) * s
        cv2.fillPoly(m, [np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)], 1)
    elif shape == "ring":
        cv2.circle(m, (int(cx), int(cy)), int(s * 0.45), 1, -1)
        cv2.circle(m, (int(cx), int(cy)), int(s * rng.uniform(0.15, 0.3)), 0, -1)
    elif shape == "poly":
        pts = rng.uniform(0.03, 0.97, (rng.integers(3, 7), 2)) * s
        cv2.fillPoly(m, [cv2.convexHull(pts.astype(np.int32))], 1)
    else:
        w, h = rng.uniform(0.5, 0.95, 2) * s
        m[int(cy - h / 2):int(cy + h / 2), int(cx - w / 2):int(cx + w / 2)] = 1
    fill = rng.choice(list(fills))
    neon = np.array([(255, 0, 255), (0, 255, 255), (255, 120, 0), (140, 255, 0), (255, 0, 120), (120, 0, 255),
                     (255, 255, 255), (255, 230, 0)], np.float32)
    a, b = neon[rng.choice(len(neon), 2, replace=False)]
    yy, xx = np.mgrid[0:s, 0:s]
    if fill == "solid":
        col = np.zeros((s, s, 3), np.float32) + a
    elif fill == "checker":
        p = max(2, int(s / rng.uniform(3, 8)))
        col = np.where((((yy // p) + (xx // p)) % 2 == 0)[..., None], a, b)
    elif fill == "stripes":
        p = max(2, int(s / rng.uniform(3, 10)))
        col = np.where((((xx + yy * rng.uniform(-1, 1)) // p) % 2 == 0)[..., None], a, b)
    elif fill == "noise":
        col = rng.uniform(0, 255, (s, s, 3)).astype(np.float32)
    else:
        r = (xx / s)[..., None]
        col = a * (1 - r) + b * r
    return col.astype(np.float32), m.astype(bool)


def _paste_ood(c: Canvas, rng, lay: Layout, n: int) -> None:
    placed = 0
    for _ in range(20 * n):  # objects that fall outside the frame are redrawn elsewhere
        if placed == n:
            break
        t = rng.uniform(0.2, 1.0)
        near_road = rng.random() < 0.8
        lo, hi = (lay.road_l, lay.road_r) if near_road else (lay.walk_l, lay.walk_r)
        x = lay.x(t, rng.uniform(lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo)))
        size = int(np.clip(lay.metre * t * rng.uniform(0.5, 1.8), 6, min(c.h, c.w) * 0.6))
        col, mask = ood_object(rng, size)
        y0, x0 = int(lay.y(t) - size * rng.uniform(0.75, 1.0)), int(x - size / 2)
        ys, xs = slice(max(y0, 0), min(y0 + size, c.h)), slice(max(x0, 0), min(x0 + size, c.w))
        if ys.stop <= ys.start or xs.stop <= xs.start:
            continue
        sub = mask[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        full = np.zeros((c.h, c.w), bool)
        full[ys, xs] = sub
        colors = np.zeros((c.h, c.w, 3), np.float32)
        colors[ys, xs] = col[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        colors += rng.standard_normal((c.h, c.w, 1)).astype(np.float32) * 5
        if full.sum() < 4:
            continue
        c.paint(full, colors, ID["unlabeled"], anomaly=1)
        placed += 1


def _ego(c: Canvas, rng) -> None:
    h, w = c.h, c.w
    bonnet = c.ellipse(w * rng.uniform(0.45, 0.55), h * 1.18, w * rng.uniform(0.6, 0.8), h * rng.uniform(0.2, 0.3))
    c.paint(bonnet, c.texture(jitter(rng, (30, 30, 40), 15), std=3, blotch=4), ID["ego vehicle"],
            anomaly=255)


def generate_scene(seed: int, height: int = 256, width: int = 512, n_ood: int = 0, ego: bool = False) -> Scene:
    """One scene from an integer seed (the same seed gives the same scene)."""
    rng = np.random.default_rng(seed)
    c = Canvas(rng, height, width)
    lay = Layout(rng, height, width)
    paint_sky(c, rng, lay)
    paint_ground(c, rng, lay)
    for side in rng.permutation([-1, 1]):
        paint_side(c, rng, lay, int(side))
    paint_street_furniture(c, rng, lay)
    paint_void_objects(c, rng, lay)
    paint_traffic(c, rng, lay)
    if n_ood:
        _paste_ood(c, rng, lay, n_ood)
    if ego:
        _ego(c, rng)
    # global lighting: exposure, contrast, colour temperature, sensor noise, slight blur
    img = c.image * rng.uniform(0.75, 1.2) + rng.uniform(-15, 15)
    img = (img - 128) * rng.uniform(0.85, 1.15) + 128 + rng.uniform(-10, 10, 3).astype(np.float32)
    img = cv2.GaussianBlur(img, (3, 3), rng.uniform(0.1, 0.8))
    img += rng.standard_normal(img.shape).astype(np.float32) * 2.0
    anomaly = c.anomaly.copy()
    return Scene(np.clip(img, 0, 255).astype(np.uint8), c.label, c.inst, anomaly)


# ---------------------------------------------------------------------------------------------------- writing

SPLITS = ("train", "val", "test")


def scene_seed(seed: int, split: str, index: int) -> int:
    """The integer seed of one scene, independent of how many scenes the other splits have."""
    ss = np.random.SeedSequence([seed, SPLITS.index(split), index])
    return int(ss.generate_state(1, dtype=np.uint64)[0] % (2**63))


def split_sizes(n: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
    return {"train": n - n_val - n_test, "val": n_val, "test": n_test}


def scene_name(split: str, index: int) -> str:
    return f"synth{SPLITS.index(split)}_{index:06d}_000019"


def _write_one(args) -> str:
    from synboost.data.io import write_image
    from synboost.data.labels import ids_to_train_ids

    out, split, index, seed, h, w, max_ood, ego_p = args
    rng = np.random.default_rng(seed ^ 0x5EED)
    n_ood = int(rng.integers(1, max_ood + 1)) if split == "test" else 0
    scene = generate_scene(seed, h, w, n_ood=n_ood, ego=bool(rng.random() < ego_p))
    name = scene_name(split, index)
    out = Path(out)
    if split == "test":
        base = out / "anomaly" / "test"
        write_image(base / "original" / f"{name}.png", scene.image)
        write_image(base / "labels" / f"{name}.png", scene.anomaly)
        write_image(base / "semantic" / f"{name}.png", ids_to_train_ids(scene.label_ids))
    else:
        write_image(out / "leftImg8bit" / split / "synth" / f"{name}_leftImg8bit.png", scene.image)
        gt = out / "gtFine" / split / "synth"
        write_image(gt / f"{name}_gtFine_labelIds.png", scene.label_ids)
        write_image(gt / f"{name}_gtFine_instanceIds.png", scene.instance_ids.astype(np.uint16))
    return name


def write_world(cfg, progress: bool = True) -> dict:
    """Write the synthetic world described by a :class:`synboost.config.SyntheticWorldConfig`; return its meta.

    Existing scene files are overwritten with identical content (generation is deterministic), so an
    interrupted run can simply be repeated.
    """
    from tqdm import tqdm

    from synboost.data.io import write_json

    out = Path(cfg.out)
    sizes = split_sizes(cfg.n, cfg.val_fraction, cfg.test_fraction)
    jobs = [(str(out), split, i, scene_seed(cfg.seed, split, i), cfg.height, cfg.width, cfg.max_ood_objects,
             cfg.ego_vehicle_prob) for split in SPLITS for i in range(sizes[split])]
    workers = cfg.workers or min(len(jobs), os.cpu_count() or 1)
    bar = tqdm(total=len(jobs), desc="synthetic world", unit="scene", disable=not progress)
    if workers > 1 and len(jobs) > 8:
        with get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_one, jobs, chunksize=4):
                bar.update()
    else:
        for job in jobs:
            _write_one(job)
            bar.update()
    bar.close()
    meta = {"generator": "synboost.data.synthetic", "version": GENERATOR_VERSION, "seed": cfg.seed,
            "height": cfg.height, "width": cfg.width, "splits": sizes,
            "layout": {"train/val": "leftImg8bit/<split>/synth, gtFine/<split>/synth (Cityscapes)",
                       "test": "anomaly/test/{original,labels,semantic} (labels 0/1/255)"}}
    write_json(out / "synthetic_world.json", meta)
    return meta


def load_meta(root: str | os.PathLike) -> dict:
    return json.loads((Path(root) / "synthetic_world.json").read_text())
