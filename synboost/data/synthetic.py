"""The embedded default: a seeded procedural world of street scenes in the Cityscapes label space.

Each scene is a road in one-point perspective with sidewalks, terrain, building facades, walls, fences,
vegetation, sky, poles with signs and traffic lights, and traffic (cars, trucks, buses, trams, people, riders,
bicycles, motorcycles), drawn far to near. Every class has its own colour and texture statistics with
per-scene variation (lighting, palette, noise), so a segmenter has to learn them and a generator can learn to
redraw them. Test scenes also hold out-of-distribution objects on or near the road: shapes, colours and
textures that belong to no class. Those pixels are "unlabeled" (label id 0 -> ignored) in the semantic ground
truth and 1 in the anomaly mask; the ego vehicle's bonnet (label id 1) is void (255) in both.

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

from synboost.data.labels import NAME_TO_ID

GENERATOR_VERSION = 1
ID = NAME_TO_ID  # label-id of a class name


@dataclass
class Scene:
    """One generated scene: RGB image, Cityscapes label ids, instance ids and the 0/1/255 anomaly mask."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    label_ids: np.ndarray  # (H, W) uint8 Cityscapes label ids
    instance_ids: np.ndarray  # (H, W) int32: label id, or label id * 1000 + k for thing instances
    anomaly: np.ndarray  # (H, W) uint8: 0 inlier, 1 out-of-distribution object, 255 void


# -------------------------------------------------------------------------------------------------- textures


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Zero-mean, unit-ish noise varying over ``cell`` pixels (bilinear upsampling of a coarse grid)."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)


def _jitter(rng: np.random.Generator, rgb, amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


class Canvas:
    """Image, label ids and instance ids painted together; later paints cover earlier ones."""

    def __init__(self, rng: np.random.Generator, h: int, w: int):
        self.rng, self.h, self.w = rng, h, w
        # one fine-grain noise field per scene, reused (sign-flipped) by every texture: far cheaper than
        # drawing H*W*3 normals for each object, and the grain of different objects never lines up visibly
        self._grain = rng.standard_normal((h, w, 1)).astype(np.float32)
        self._tint = rng.standard_normal((h, w, 3)).astype(np.float32)
        self.image = np.zeros((h, w, 3), np.float32)
        self.label = np.zeros((h, w), np.uint8)
        self.inst = np.zeros((h, w), np.int32)
        self.anomaly = np.zeros((h, w), np.uint8)
        self.counters: dict[int, int] = {}

    def texture(self, rgb, std: float = 8.0, blotch: float = 10.0, cell: int = 12) -> np.ndarray:
        """A float32 (H, W, 3) field: base colour + low-frequency blotches + fine grain."""
        sign = self.rng.choice([-1.0, 1.0])
        base = np.asarray(rgb, np.float32)[None, None, :]
        low = _smooth_noise(self.rng, self.h, self.w, cell)[:, :, None] * blotch
        tint = self._tint[:, :, self.rng.permutation(3)]
        return base + low + (sign * std) * self._grain + (std * 0.3) * tint

    def new_instance(self, label_id: int) -> int:
        k = self.counters.get(label_id, 0)
        self.counters[label_id] = k + 1
        return label_id * 1000 + k

    def paint(self, mask: np.ndarray, colors: np.ndarray, label_id: int, inst_id: int | None = None,
              anomaly: int = 0) -> None:
        """``mask`` (H, W) bool; ``colors`` (H, W, 3) or an (N, 3) array for the masked pixels."""
        if not mask.any():
            return
        self.image[mask] = colors[mask] if colors.ndim == 3 else colors
        self.label[mask] = label_id
        self.inst[mask] = label_id if inst_id is None else inst_id
        self.anomaly[mask] = anomaly

    def poly_mask(self, pts) -> np.ndarray:
        m = np.zeros((self.h, self.w), np.uint8)
        cv2.fillPoly(m, [np.round(np.asarray(pts)).astype(np.int32)], 1)
        return m.astype(bool)

    def rect(self, x0, y0, x1, y1) -> np.ndarray:
        return self.poly_mask([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])

    def ellipse(self, cx, cy, rx, ry, angle=0.0) -> np.ndarray:
        m = np.zeros((self.h, self.w), np.uint8)
        cv2.ellipse(m, (int(round(cx)), int(round(cy))), (max(1, int(round(rx))), max(1, int(round(ry)))),
                    angle, 0, 360, 1, -1)
        return m.astype(bool)


# ------------------------------------------------------------------------------------------------ the world


class _Layout:
    """One-point perspective: depth scale t in (0, 1] is 0 at the horizon and 1 at the bottom row."""

    def __init__(self, rng: np.random.Generator, h: int, w: int):
        self.h, self.w = h, w
        self.yh = h * rng.uniform(0.36, 0.5)
        self.xv = w * rng.uniform(0.4, 0.6)
        self.road_l = w * rng.uniform(-0.35, 0.12)  # road edges at the bottom row
        self.road_r = w * rng.uniform(0.88, 1.35)
        walk = w * rng.uniform(0.12, 0.3)
        self.walk_l, self.walk_r = self.road_l - walk, self.road_r + walk
        self.metre = (self.road_r - self.road_l) / rng.uniform(7.0, 10.0)  # pixels per metre at t = 1

    def y(self, t):
        return self.yh + t * (self.h - self.yh)

    def x(self, t, x_bottom):
        return self.xv + t * (x_bottom - self.xv)


def _sky(c: Canvas, rng, lay: _Layout) -> None:
    h, w = c.h, c.w
    top = _jitter(rng, (70, 130, 200), 25)
    bottom = np.clip(top + rng.uniform(40, 90), 0, 255)
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    col = top * (1 - ramp) + bottom * ramp + np.zeros((h, w, 3), np.float32)
    clouds = np.clip(_smooth_noise(rng, h, w, 40) - rng.uniform(0.3, 1.2), 0, None)[:, :, None] * 60
    c.paint(np.ones((h, w), bool), col + clouds + rng.standard_normal((h, w, 1)).astype(np.float32) * 2, ID["sky"])


def _ground(c: Canvas, rng, lay: _Layout) -> None:
    h, w, yh, xv = c.h, c.w, lay.yh, lay.xv
    grass = c.texture(_jitter(rng, (150, 170, 90), 20), std=10, blotch=14)
    c.paint(c.poly_mask([(xv, yh), (-4 * w, h), (5 * w, h)]), grass, ID["terrain"])
    walk = c.texture(_jitter(rng, (175, 160, 165), 20), std=6, blotch=6)
    # paving slabs: thin darker lines on a grid
    yy, xx = np.mgrid[0:h, 0:w]
    slab = max(3, int(lay.metre * rng.uniform(0.4, 0.8)))
    walk[(yy % slab == 0) | (xx % slab == 0)] -= 25
    c.paint(c.poly_mask([(xv, yh), (lay.walk_l, h), (lay.walk_r, h)]), walk, ID["sidewalk"])
    road = c.texture(_jitter(rng, (105, 100, 105), 18), std=7, blotch=8, cell=20)
    c.paint(c.poly_mask([(xv, yh), (lay.road_l, h), (lay.road_r, h)]), road, ID["road"])
    # dashed centre line and edge lines: part of the road class, as in Cityscapes
    mid = lay.road_l + (lay.road_r - lay.road_l) * rng.uniform(0.4, 0.6)
    paint = _jitter(rng, (225, 225, 215), 15)
    n_dash = 12
    for k in range(n_dash):
        t0, t1 = ((k + 0.25) / n_dash) ** 2, ((k + 0.75) / n_dash) ** 2
        half0, half1 = 0.06 * lay.metre * t0, 0.06 * lay.metre * t1
        pts = [(lay.x(t0, mid) - half0, lay.y(t0)), (lay.x(t0, mid) + half0, lay.y(t0)),
               (lay.x(t1, mid) + half1, lay.y(t1)), (lay.x(t1, mid) - half1, lay.y(t1))]
        m = c.poly_mask(pts) & (c.label == ID["road"])
        c.image[m] = paint + rng.standard_normal((m.sum(), 3)).astype(np.float32) * 4


def _side(c: Canvas, rng, lay: _Layout, side: int) -> None:
    """Facades (building / wall / fence) and trees along one side (-1 left, +1 right), far to near."""
    x_bottom = lay.walk_l if side < 0 else lay.walk_r
    cuts = np.sort(rng.uniform(0.02, 1.6, rng.integers(3, 7)))
    t_edges = np.concatenate([[0.0], cuts])
    for t0, t1 in zip(t_edges[:-1], t_edges[1:]):
        kind = rng.choice(["building", "building", "building", "vegetation", "wall", "fence"])
        hgt = lay.metre * rng.uniform(6, 22)  # facade height at t = 1 in pixels
        xa, xb = lay.x(t0, x_bottom), lay.x(t1, x_bottom)
        ya, yb = lay.y(t0), lay.y(t1)
        outer = -2 * c.w if side < 0 else 3 * c.w
        if kind == "vegetation":
            if t0 < 1.3:
                _trees(c, rng, lay, x_bottom, t0, min(t1, 1.3), side)
            continue
        if kind in ("wall", "fence"):
            hgt = lay.metre * rng.uniform(1.0, 2.5)
        top_a, top_b = ya - t0 * hgt, yb - t1 * hgt
        pts = [(xa, ya), (xb, yb), (xb, top_b), (xa, top_a)]
        if t1 >= 1.0:  # the facade reaches the image edge
            pts = [(xa, ya), (outer, ya + (outer - xa) * (yb - ya) / (xb - xa + 1e-6)), (outer, top_b), (xa, top_a)]
        mask = c.poly_mask(pts)
        if kind == "building":
            col = c.texture(_jitter(rng, rng.choice([(90, 90, 95), (140, 120, 100), (170, 160, 150),
                                                                  (110, 80, 70)]), 25), std=6, blotch=8)
            # windows: a grid of darker/bluish cells, scaled with depth
            yy, xx = np.mgrid[0:c.h, 0:c.w]
            tt = np.clip((xx - lay.xv) / (x_bottom - lay.xv + 1e-6), 0.05, 2)
            period = lay.metre * 3.0 * tt
            win = ((xx / np.maximum(period, 2)) % 1 < 0.5) & (((yy - lay.yh) / np.maximum(period, 2)) % 1 < 0.45)
            col[win & mask] = _jitter(rng, (50, 60, 80), 20)
            c.paint(mask, col, ID["building"])
        elif kind == "wall":
            col = c.texture(_jitter(rng, (150, 150, 165), 20), std=4, blotch=5)
            c.paint(mask, col, ID["wall"])
        else:
            col = c.texture(_jitter(rng, (120, 110, 105), 20), std=5, blotch=4)
            yy, xx = np.mgrid[0:c.h, 0:c.w]
            col[(xx % rng.integers(3, 6)) == 0] -= 45
            c.paint(mask, col, ID["fence"])


def _trees(c: Canvas, rng, lay: _Layout, x_bottom: float, t0: float, t1: float, side: int) -> None:
    for t in np.sort(rng.uniform(t0, t1, rng.integers(1, 4))):
        t = max(t, 0.05)
        cx = lay.x(t, x_bottom) + side * lay.metre * t * rng.uniform(0, 3)
        base = lay.y(t)
        r = lay.metre * t * rng.uniform(2.0, 4.0)
        trunk = c.rect(cx - 0.15 * lay.metre * t, base - 3 * lay.metre * t, cx + 0.15 * lay.metre * t, base)
        c.paint(trunk, c.texture(_jitter(rng, (80, 60, 40), 10), std=5), ID["vegetation"])
        crown = c.ellipse(cx, base - 3 * lay.metre * t - r * 0.6, r, r * rng.uniform(0.8, 1.3))
        col = c.texture(_jitter(rng, (70, 110, 40), 20), std=14, blotch=18, cell=5)
        c.paint(crown, col, ID["vegetation"])


def _street_furniture(c: Canvas, rng, lay: _Layout) -> None:
    for _ in range(rng.integers(1, 5)):
        side = rng.choice([-1, 1])
        t = rng.uniform(0.15, 1.0)
        xb = (lay.road_l + lay.walk_l) / 2 if side < 0 else (lay.road_r + lay.walk_r) / 2
        x, base = lay.x(t, xb), lay.y(t)
        m = lay.metre * t
        top = base - m * rng.uniform(3.5, 6)
        c.paint(c.rect(x - max(0.6, 0.08 * m), top, x + max(0.6, 0.08 * m), base),
                c.texture(_jitter(rng, (120, 120, 125), 15), std=4), ID["pole"])
        what = rng.choice(["sign", "light", "none"], p=[0.45, 0.35, 0.2])
        if what == "sign":
            s = m * rng.uniform(0.35, 0.6)
            shape = rng.choice(["circle", "triangle", "square"])
            if shape == "circle":
                mask = c.ellipse(x, top, s, s)
            elif shape == "triangle":
                mask = c.poly_mask([(x - s, top - s * 0.6), (x + s, top - s * 0.6), (x, top + s)])
            else:
                mask = c.rect(x - s, top - s, x + s, top + s)
            rim = _jitter(rng, rng.choice([(220, 30, 30), (30, 60, 200), (230, 200, 20)]), 20)
            col = np.zeros((c.h, c.w, 3), np.float32) + rim
            inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            col[inner] = _jitter(rng, (235, 235, 235), 10)
            c.paint(mask, col, ID["traffic sign"])
        elif what == "light":
            bw, bh = m * 0.25, m * 0.8
            box = c.rect(x - bw, top - bh, x + bw, top)
            col = np.zeros((c.h, c.w, 3), np.float32) + _jitter(rng, (35, 35, 30), 10)
            k = rng.integers(0, 3)
            lamp = c.ellipse(x, top - bh * (0.8 - 0.3 * k), bw * 0.6, bw * 0.6)
            col[lamp] = [(240, 40, 30), (250, 190, 30), (40, 230, 90)][k]
            c.paint(box, col, ID["traffic light"])


_VEHICLE = {  # class: (width m, height m, colour choices)
    "car": (1.8, 1.5, [(200, 30, 30), (30, 40, 150), (230, 230, 230), (25, 25, 25), (160, 165, 170), (40, 110, 60)]),
    "truck": (2.5, 3.4, [(240, 240, 240), (200, 120, 30), (60, 80, 140)]),
    "bus": (2.6, 3.2, [(235, 200, 30), (200, 40, 40), (40, 90, 170)]),
    "train": (2.6, 3.6, [(210, 210, 200), (160, 30, 40)]),
}


def _vehicle(c: Canvas, rng, lay: _Layout, kind: str, t: float, x: float) -> None:
    wm, hm, colours = _VEHICLE[kind]
    m = lay.metre * t
    w, h, base = wm * m * rng.uniform(0.9, 1.1), hm * m * rng.uniform(0.9, 1.1), lay.y(t)
    inst = c.new_instance(ID[kind])
    body = c.rect(x - w / 2, base - h * 0.85, x + w / 2, base - h * 0.12)
    if kind == "car":
        body |= c.poly_mask([(x - w * 0.4, base - h * 0.85), (x + w * 0.4, base - h * 0.85),
                             (x + w * 0.32, base - h), (x - w * 0.32, base - h)])
    col = c.texture(_jitter(rng, colours[rng.integers(len(colours))], 15), std=4, blotch=5)
    yy = np.arange(c.h)[:, None]
    glass = (yy > base - h * (0.98 if kind == "car" else 0.8)) & (yy < base - h * (0.62 if kind == "car" else 0.45))
    col[glass & body] = _jitter(rng, (40, 50, 60), 10)
    lights = c.rect(x - w / 2, base - h * 0.4, x - w / 2 + w * 0.12, base - h * 0.3) | \
        c.rect(x + w / 2 - w * 0.12, base - h * 0.4, x + w / 2, base - h * 0.3)
    col[lights & body] = (200, 30, 20)
    wheels = c.rect(x - w / 2 + w * 0.05, base - h * 0.18, x - w / 2 + w * 0.25, base) | \
        c.rect(x + w / 2 - w * 0.25, base - h * 0.18, x + w / 2 - w * 0.05, base)
    col[wheels] = _jitter(rng, (20, 20, 20), 5)
    c.paint(body | wheels, col, ID[kind], inst)


def _two_wheeler(c: Canvas, rng, lay: _Layout, kind: str, t: float, x: float, rider: bool) -> None:
    m = lay.metre * t
    base = lay.y(t)
    inst = c.new_instance(ID[kind])
    r = m * 0.33
    frame = np.zeros((c.h, c.w), np.uint8)
    th = max(1, int(round(m * (0.05 if kind == "bicycle" else 0.12))))
    for dx in (-0.55, 0.55):
        cv2.circle(frame, (int(x + dx * m), int(base - r)), max(1, int(r)), 1, th)
    cv2.line(frame, (int(x - 0.55 * m), int(base - r)), (int(x), int(base - 2 * r)), 1, th)
    cv2.line(frame, (int(x + 0.55 * m), int(base - r)), (int(x), int(base - 2 * r)), 1, th)
    mask = frame.astype(bool)
    if kind == "motorcycle":
        mask |= c.ellipse(x, base - 1.6 * r, 0.5 * m, 0.3 * m)
    colour = (30, 30, 35) if kind == "motorcycle" else (150, 20, 40)
    c.paint(mask, c.texture(_jitter(rng, colour, 20), std=4), ID[kind], inst)
    if rider:
        _person(c, rng, lay, t, x, lift=1.6 * r, label="rider")


def _person(c: Canvas, rng, lay: _Layout, t: float, x: float, lift: float = 0.0, label: str = "person") -> None:
    m = lay.metre * t
    base = lay.y(t) - lift
    height = m * rng.uniform(1.55, 1.9) * (0.75 if label == "rider" else 1.0)
    inst = c.new_instance(ID[label])
    w = m * 0.5
    legs = c.rect(x - w * 0.4, base - height * 0.48, x + w * 0.4, base)
    torso = c.rect(x - w / 2, base - height * 0.85, x + w / 2, base - height * 0.45)
    head = c.ellipse(x, base - height * 0.92, w * 0.28, height * 0.08)
    col = np.zeros((c.h, c.w, 3), np.float32)
    col[:] = _jitter(rng, rng.choice([(40, 40, 60), (60, 50, 40), (90, 90, 100)]), 15)
    col[torso] = _jitter(rng, rng.choice([(200, 40, 40), (40, 70, 160), (230, 230, 230), (50, 50, 50),
                                          (200, 170, 60)]), 25)
    col[head] = _jitter(rng, rng.choice([(230, 190, 160), (180, 130, 100), (110, 75, 55)]), 10)
    c.paint(legs | torso | head, col + rng.standard_normal((c.h, c.w, 1)).astype(np.float32) * 4, ID[label], inst)


def _traffic(c: Canvas, rng, lay: _Layout) -> None:
    items = []
    for _ in range(rng.integers(2, 9)):
        kind = rng.choice(["car", "car", "car", "truck", "bus", "train", "person", "bicycle", "motorcycle"],
                          p=[0.22, 0.22, 0.16, 0.08, 0.06, 0.03, 0.13, 0.05, 0.05])
        t = rng.uniform(0.12, 1.05)
        on_walk = kind == "person" and rng.random() < 0.7
        if on_walk:
            side = rng.choice([-1, 1])
            xb = rng.uniform(lay.walk_l, lay.road_l) if side < 0 else rng.uniform(lay.road_r, lay.walk_r)
        else:
            xb = rng.uniform(lay.road_l + 0.1 * (lay.road_r - lay.road_l), lay.road_r - 0.1 * (lay.road_r - lay.road_l))
        items.append((t, kind, lay.x(t, xb)))
    for t, kind, x in sorted(items):  # far to near
        if kind in _VEHICLE:
            _vehicle(c, rng, lay, kind, t, x)
        elif kind == "person":
            _person(c, rng, lay, t, x)
        else:
            _two_wheeler(c, rng, lay, kind, t, x, rider=rng.random() < 0.7)


# ------------------------------------------------------------------------------- out-of-distribution objects


def ood_object(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """An object that belongs to no class: (size, size, 3) float32 RGB patch and its (size, size) bool mask.

    Shapes: blobs, stars, rings, irregular polygons; fills: saturated or unusual colours, checkerboards,
    stripes, colour noise, gradients. Used for the anomaly test split and as AnomalyMix outliers.
    """
    s = max(4, int(size))
    m = np.zeros((s, s), np.uint8)
    shape = rng.choice(["blob", "star", "ring", "poly", "box"])
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
    fill = rng.choice(["solid", "checker", "stripes", "noise", "gradient"])
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


def _paste_ood(c: Canvas, rng, lay: _Layout, n: int) -> None:
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
    c.paint(bonnet, c.texture(_jitter(rng, (30, 30, 40), 15), std=3, blotch=4), ID["ego vehicle"],
            anomaly=255)


def generate_scene(seed: int, height: int = 256, width: int = 512, n_ood: int = 0, ego: bool = False) -> Scene:
    """One scene from an integer seed (the same seed gives the same scene)."""
    rng = np.random.default_rng(seed)
    c = Canvas(rng, height, width)
    lay = _Layout(rng, height, width)
    _sky(c, rng, lay)
    _ground(c, rng, lay)
    for side in rng.permutation([-1, 1]):
        _side(c, rng, lay, int(side))
    _street_furniture(c, rng, lay)
    _traffic(c, rng, lay)
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
