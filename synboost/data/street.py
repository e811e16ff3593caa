"""Painting a street scene: the canvas (image, label ids and instance ids painted together), the one-point
perspective layout, and one painter per part of the scene (sky, ground, facades, trees, street furniture,
traffic). Used by :mod:`synboost.data.synthetic`, which composes them into scenes and writes the world."""
from __future__ import annotations

import cv2
import numpy as np

from synboost.data.labels import NAME_TO_ID

ID = NAME_TO_ID  # label-id of a class name


# -------------------------------------------------------------------------------------------------- textures


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Zero-mean, unit-ish noise varying over ``cell`` pixels (bilinear upsampling of a coarse grid)."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)


def jitter(rng: np.random.Generator, rgb, amount: float) -> np.ndarray:
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


class Layout:
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


def paint_sky(c: Canvas, rng, lay: Layout) -> None:
    h, w = c.h, c.w
    top = jitter(rng, (70, 130, 200), 25)
    bottom = np.clip(top + rng.uniform(40, 90), 0, 255)
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    col = top * (1 - ramp) + bottom * ramp + np.zeros((h, w, 3), np.float32)
    clouds = np.clip(_smooth_noise(rng, h, w, 40) - rng.uniform(0.3, 1.2), 0, None)[:, :, None] * 60
    c.paint(np.ones((h, w), bool), col + clouds + rng.standard_normal((h, w, 1)).astype(np.float32) * 2, ID["sky"])


def paint_ground(c: Canvas, rng, lay: Layout) -> None:
    h, w, yh, xv = c.h, c.w, lay.yh, lay.xv
    grass = c.texture(jitter(rng, (150, 170, 90), 20), std=10, blotch=14)
    c.paint(c.poly_mask([(xv, yh), (-4 * w, h), (5 * w, h)]), grass, ID["terrain"])
    walk = c.texture(jitter(rng, (175, 160, 165), 20), std=6, blotch=6)
    # paving slabs: thin darker lines on a grid
    yy, xx = np.mgrid[0:h, 0:w]
    slab = max(3, int(lay.metre * rng.uniform(0.4, 0.8)))
    walk[(yy % slab == 0) | (xx % slab == 0)] -= 25
    c.paint(c.poly_mask([(xv, yh), (lay.walk_l, h), (lay.walk_r, h)]), walk, ID["sidewalk"])
    road = c.texture(jitter(rng, (105, 100, 105), 18), std=7, blotch=8, cell=20)
    c.paint(c.poly_mask([(xv, yh), (lay.road_l, h), (lay.road_r, h)]), road, ID["road"])
    # dashed centre line and edge lines: part of the road class, as in Cityscapes
    mid = lay.road_l + (lay.road_r - lay.road_l) * rng.uniform(0.4, 0.6)
    paint = jitter(rng, (225, 225, 215), 15)
    n_dash = 12
    for k in range(n_dash):
        t0, t1 = ((k + 0.25) / n_dash) ** 2, ((k + 0.75) / n_dash) ** 2
        half0, half1 = 0.06 * lay.metre * t0, 0.06 * lay.metre * t1
        pts = [(lay.x(t0, mid) - half0, lay.y(t0)), (lay.x(t0, mid) + half0, lay.y(t0)),
               (lay.x(t1, mid) + half1, lay.y(t1)), (lay.x(t1, mid) - half1, lay.y(t1))]
        m = c.poly_mask(pts) & (c.label == ID["road"])
        c.image[m] = paint + rng.standard_normal((m.sum(), 3)).astype(np.float32) * 4


def paint_side(c: Canvas, rng, lay: Layout, side: int) -> None:
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
            col = c.texture(jitter(rng, rng.choice([(90, 90, 95), (140, 120, 100), (170, 160, 150),
                                                                  (110, 80, 70)]), 25), std=6, blotch=8)
            # windows: a grid of darker/bluish cells, scaled with depth
            yy, xx = np.mgrid[0:c.h, 0:c.w]
            tt = np.clip((xx - lay.xv) / (x_bottom - lay.xv + 1e-6), 0.05, 2)
            period = lay.metre * 3.0 * tt
            win = ((xx / np.maximum(period, 2)) % 1 < 0.5) & (((yy - lay.yh) / np.maximum(period, 2)) % 1 < 0.45)
            col[win & mask] = jitter(rng, (50, 60, 80), 20)
            c.paint(mask, col, ID["building"])
        elif kind == "wall":
            col = c.texture(jitter(rng, (150, 150, 165), 20), std=4, blotch=5)
            c.paint(mask, col, ID["wall"])
        else:
            col = c.texture(jitter(rng, (120, 110, 105), 20), std=5, blotch=4)
            yy, xx = np.mgrid[0:c.h, 0:c.w]
            col[(xx % rng.integers(3, 6)) == 0] -= 45
            c.paint(mask, col, ID["fence"])


def _trees(c: Canvas, rng, lay: Layout, x_bottom: float, t0: float, t1: float, side: int) -> None:
    for t in np.sort(rng.uniform(t0, t1, rng.integers(1, 4))):
        t = max(t, 0.05)
        cx = lay.x(t, x_bottom) + side * lay.metre * t * rng.uniform(0, 3)
        base = lay.y(t)
        r = lay.metre * t * rng.uniform(2.0, 4.0)
        trunk = c.rect(cx - 0.15 * lay.metre * t, base - 3 * lay.metre * t, cx + 0.15 * lay.metre * t, base)
        c.paint(trunk, c.texture(jitter(rng, (80, 60, 40), 10), std=5), ID["vegetation"])
        crown = c.ellipse(cx, base - 3 * lay.metre * t - r * 0.6, r, r * rng.uniform(0.8, 1.3))
        col = c.texture(jitter(rng, (70, 110, 40), 20), std=14, blotch=18, cell=5)
        c.paint(crown, col, ID["vegetation"])


def paint_street_furniture(c: Canvas, rng, lay: Layout) -> None:
    for _ in range(rng.integers(1, 5)):
        side = rng.choice([-1, 1])
        t = rng.uniform(0.15, 1.0)
        xb = (lay.road_l + lay.walk_l) / 2 if side < 0 else (lay.road_r + lay.walk_r) / 2
        x, base = lay.x(t, xb), lay.y(t)
        m = lay.metre * t
        top = base - m * rng.uniform(3.5, 6)
        c.paint(c.rect(x - max(0.6, 0.08 * m), top, x + max(0.6, 0.08 * m), base),
                c.texture(jitter(rng, (120, 120, 125), 15), std=4), ID["pole"])
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
            rim = jitter(rng, rng.choice([(220, 30, 30), (30, 60, 200), (230, 200, 20)]), 20)
            col = np.zeros((c.h, c.w, 3), np.float32) + rim
            inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            col[inner] = jitter(rng, (235, 235, 235), 10)
            c.paint(mask, col, ID["traffic sign"])
        elif what == "light":
            bw, bh = m * 0.25, m * 0.8
            box = c.rect(x - bw, top - bh, x + bw, top)
            col = np.zeros((c.h, c.w, 3), np.float32) + jitter(rng, (35, 35, 30), 10)
            k = rng.integers(0, 3)
            lamp = c.ellipse(x, top - bh * (0.8 - 0.3 * k), bw * 0.6, bw * 0.6)
            col[lamp] = [(240, 40, 30), (250, 190, 30), (40, 230, 90)][k]
            c.paint(box, col, ID["traffic light"])


#: the makes of unlabelled street clutter (Cityscapes' void "static" / "dynamic": bins, boxes, bollards, benches,
#: planters, barriers, cones, sacks, post boxes, boards, carts); never the out-of-distribution objects' shapes and
#: fills (:func:`synboost.data.synthetic.ood_object`), which the anomaly test holds unseen
VOID_MAKES = ("box", "bin", "bollard", "bench", "planter", "barrier", "cone", "sack", "postbox", "board", "cart",
              "stack")


def _clutter_colour(rng) -> np.ndarray:
    """A muted street colour of any hue (painted metal, plastic, wood, concrete, cloth): never the saturated
    neon of the out-of-distribution objects."""
    hue = rng.uniform(0, 180)
    sat = rng.uniform(0, 150) if rng.random() < 0.7 else rng.uniform(150, 220)
    val = rng.uniform(35, 215)
    hsv = np.array([[[hue, sat, val]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _void_mask(c: Canvas, rng, make: str, x: float, base: float, m: float) -> tuple[np.ndarray, list]:
    """The silhouette of one piece of clutter standing at (x, base) at ``m`` pixels per metre, and its parts
    (masks that get their own colour: lids, legs, bands)."""
    u = rng.uniform(0.8, 1.25)
    if make == "box":
        w, h = m * rng.uniform(0.3, 1.1) * u, m * rng.uniform(0.25, 0.9) * u
        return c.rect(x - w / 2, base - h, x + w / 2, base), []
    if make == "bin":
        w, h = m * rng.uniform(0.45, 0.7), m * rng.uniform(0.8, 1.1)
        body = c.rect(x - w / 2, base - h * 0.85, x + w / 2, base)
        lid = c.rect(x - w * 0.55, base - h, x + w * 0.55, base - h * 0.85)
        return body | lid, [lid]
    if make == "bollard":
        w, h = m * rng.uniform(0.12, 0.25), m * rng.uniform(0.6, 1.1)
        top = c.ellipse(x, base - h, w / 2, w / 3)
        band = c.rect(x - w / 2, base - h * 0.8, x + w / 2, base - h * 0.7)
        return c.rect(x - w / 2, base - h, x + w / 2, base) | top, [band]
    if make == "bench":
        w, h = m * rng.uniform(1.2, 2.0), m * rng.uniform(0.4, 0.55)
        seat = c.rect(x - w / 2, base - h, x + w / 2, base - h * 0.8)
        back = c.rect(x - w / 2, base - h * 1.9, x + w / 2, base - h * 1.6) if rng.random() < 0.6 else np.zeros_like(seat)
        legs = c.rect(x - w * 0.45, base - h * 0.8, x - w * 0.38, base) | c.rect(x + w * 0.38, base - h * 0.8,
                                                                                  x + w * 0.45, base)
        return seat | back | legs, [legs]
    if make == "planter":
        w, h = m * rng.uniform(0.6, 1.2), m * rng.uniform(0.4, 0.7)
        pot = c.poly_mask([(x - w / 2, base - h), (x + w / 2, base - h), (x + w * 0.4, base), (x - w * 0.4, base)])
        bush = c.ellipse(x, base - h, w * 0.55, h * rng.uniform(0.5, 0.9))
        return pot | bush, [bush & ~pot]
    if make == "barrier":
        w, h = m * rng.uniform(1.0, 2.2), m * rng.uniform(0.7, 1.0)
        bar = c.rect(x - w / 2, base - h, x + w / 2, base - h * 0.75)
        feet = c.rect(x - w * 0.45, base - h * 0.75, x - w * 0.38, base) | c.rect(x + w * 0.38, base - h * 0.75,
                                                                                   x + w * 0.45, base)
        return bar | feet, [feet]
    if make == "cone":
        w, h = m * rng.uniform(0.25, 0.4), m * rng.uniform(0.4, 0.75)
        cone = c.poly_mask([(x - w / 2, base), (x + w / 2, base), (x + w * 0.1, base - h), (x - w * 0.1, base - h)])
        foot = c.rect(x - w * 0.6, base - h * 0.08, x + w * 0.6, base)
        return cone | foot, [foot]
    if make == "sack":
        w, h = m * rng.uniform(0.4, 0.9), m * rng.uniform(0.3, 0.7)
        return c.ellipse(x, base - h / 2, w / 2, h / 2, angle=rng.uniform(-20, 20)), []
    if make == "postbox":
        w, h = m * rng.uniform(0.4, 0.6), m * rng.uniform(1.0, 1.4)
        body = c.rect(x - w / 2, base - h * 0.85, x + w / 2, base) | c.ellipse(x, base - h * 0.85, w / 2, h * 0.15)
        slot = c.rect(x - w * 0.3, base - h * 0.72, x + w * 0.3, base - h * 0.67)
        return body, [slot]
    if make == "board":
        w, h = m * rng.uniform(0.5, 1.0), m * rng.uniform(0.5, 0.9)
        post = c.rect(x - m * 0.04, base - h * 1.6, x + m * 0.04, base)
        board = c.rect(x - w / 2, base - h * 1.9, x + w / 2, base - h * 1.9 + h)
        return post | board, [post]
    if make == "cart":
        w, h = m * rng.uniform(0.6, 1.0), m * rng.uniform(0.6, 1.0)
        basket = c.poly_mask([(x - w / 2, base - h), (x + w / 2, base - h), (x + w * 0.4, base - h * 0.3),
                              (x - w * 0.4, base - h * 0.3)])
        wheels = c.ellipse(x - w * 0.3, base - h * 0.1, w * 0.1, h * 0.1) | c.ellipse(x + w * 0.3, base - h * 0.1,
                                                                                   w * 0.1, h * 0.1)
        return basket | wheels, [wheels]
    # "stack": two or three boxes on top of each other
    out, parts, y = np.zeros((c.h, c.w), bool), [], base
    for _ in range(rng.integers(2, 4)):
        w, h = m * rng.uniform(0.3, 0.8), m * rng.uniform(0.2, 0.45)
        dx = m * rng.uniform(-0.15, 0.15)
        box = c.rect(x + dx - w / 2, y - h, x + dx + w / 2, y)
        parts.append(box)
        out |= box
        y -= h
    return out, parts[1::2]


def paint_void_objects(c: Canvas, rng, lay: Layout) -> None:
    """Unlabelled street clutter: Cityscapes' void "static" and "dynamic" classes, as varied as real clutter in
    make (:data:`VOID_MAKES`, muted colours of any hue, textured, shaded, with parts in their own colours) and in
    placement (anywhere on the sidewalks, at the facades, on the kerb, by the road's edge and, as lost cargo,
    debris or road works, anywhere across the road: 45 % of the pieces stand on the road). Ignored
    by the segmenter; void in the anomaly masks (as Fishyscapes voids unknown background objects). Drawn from a
    child generator of the scene's, so the clutter can change without moving the rest of the scene."""
    crng = np.random.default_rng(int(rng.integers(2**62)))
    main, c.rng = c.rng, crng
    try:
        for _ in range(crng.integers(0, 9)):
            t = crng.uniform(0.15, 1.0)
            where = crng.random()
            side = crng.choice([-1, 1])
            if where < 0.15:  # on the road, by the kerb
                lo, hi = (lay.road_l, lay.road_l + 0.12 * (lay.road_r - lay.road_l)) if side < 0 else \
                    (lay.road_r - 0.12 * (lay.road_r - lay.road_l), lay.road_r)
            elif where < 0.45:  # anywhere across the road: lost cargo, debris, road works (void in Cityscapes)
                lo, hi = lay.road_l, lay.road_r
            else:
                lo, hi = (lay.walk_l, lay.road_l) if side < 0 else (lay.road_r, lay.walk_r)
            x, base, m = lay.x(t, crng.uniform(lo, hi)), lay.y(t), lay.metre * t
            make = VOID_MAKES[crng.integers(len(VOID_MAKES))]
            mask, parts = _void_mask(c, crng, make, x, base, m)
            if not mask.any():
                continue
            col = c.texture(_clutter_colour(crng), std=crng.uniform(2, 9), blotch=crng.uniform(2, 12),
                            cell=int(crng.integers(4, 16)))
            if crng.random() < 0.5:  # shading across the object, as on a rounded or lit body
                ys, xs = np.nonzero(mask)
                ramp = (np.arange(c.w, dtype=np.float32) - xs.min()) / max(1, xs.max() - xs.min())
                col = col * (1.0 + crng.uniform(-0.35, 0.35) * (ramp[None, :, None] - 0.5))
            for part in parts:
                col[part] = c.texture(_clutter_colour(crng), std=3, blotch=3)[part]
            label = ID["dynamic"] if make in ("cart", "sack") else ID["static"]
            c.paint(mask, col, label, anomaly=255)
    finally:
        c.rng = main


_VEHICLE = {  # class: (width m, height m, colour choices)
    "car": (1.8, 1.5, [(200, 30, 30), (30, 40, 150), (230, 230, 230), (25, 25, 25), (160, 165, 170), (40, 110, 60)]),
    "truck": (2.5, 3.4, [(240, 240, 240), (200, 120, 30), (60, 80, 140)]),
    "bus": (2.6, 3.2, [(235, 200, 30), (200, 40, 40), (40, 90, 170)]),
    "train": (2.6, 3.6, [(210, 210, 200), (160, 30, 40)]),
}


def _vehicle(c: Canvas, rng, lay: Layout, kind: str, t: float, x: float) -> None:
    wm, hm, colours = _VEHICLE[kind]
    m = lay.metre * t
    w, h, base = wm * m * rng.uniform(0.9, 1.1), hm * m * rng.uniform(0.9, 1.1), lay.y(t)
    inst = c.new_instance(ID[kind])
    body = c.rect(x - w / 2, base - h * 0.85, x + w / 2, base - h * 0.12)
    if kind == "car":
        body |= c.poly_mask([(x - w * 0.4, base - h * 0.85), (x + w * 0.4, base - h * 0.85),
                             (x + w * 0.32, base - h), (x - w * 0.32, base - h)])
    col = c.texture(jitter(rng, colours[rng.integers(len(colours))], 15), std=4, blotch=5)
    yy = np.arange(c.h)[:, None]
    glass = (yy > base - h * (0.98 if kind == "car" else 0.8)) & (yy < base - h * (0.62 if kind == "car" else 0.45))
    col[glass & body] = jitter(rng, (40, 50, 60), 10)
    lights = c.rect(x - w / 2, base - h * 0.4, x - w / 2 + w * 0.12, base - h * 0.3) | \
        c.rect(x + w / 2 - w * 0.12, base - h * 0.4, x + w / 2, base - h * 0.3)
    col[lights & body] = (200, 30, 20)
    wheels = c.rect(x - w / 2 + w * 0.05, base - h * 0.18, x - w / 2 + w * 0.25, base) | \
        c.rect(x + w / 2 - w * 0.25, base - h * 0.18, x + w / 2 - w * 0.05, base)
    col[wheels] = jitter(rng, (20, 20, 20), 5)
    c.paint(body | wheels, col, ID[kind], inst)


def _two_wheeler(c: Canvas, rng, lay: Layout, kind: str, t: float, x: float, rider: bool) -> None:
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
    c.paint(mask, c.texture(jitter(rng, colour, 20), std=4), ID[kind], inst)
    if rider:
        _person(c, rng, lay, t, x, lift=1.6 * r, label="rider")


def _person(c: Canvas, rng, lay: Layout, t: float, x: float, lift: float = 0.0, label: str = "person") -> None:
    m = lay.metre * t
    base = lay.y(t) - lift
    height = m * rng.uniform(1.55, 1.9) * (0.75 if label == "rider" else 1.0)
    inst = c.new_instance(ID[label])
    w = m * 0.5
    legs = c.rect(x - w * 0.4, base - height * 0.48, x + w * 0.4, base)
    torso = c.rect(x - w / 2, base - height * 0.85, x + w / 2, base - height * 0.45)
    head = c.ellipse(x, base - height * 0.92, w * 0.28, height * 0.08)
    col = np.zeros((c.h, c.w, 3), np.float32)
    col[:] = jitter(rng, rng.choice([(40, 40, 60), (60, 50, 40), (90, 90, 100)]), 15)
    col[torso] = jitter(rng, rng.choice([(200, 40, 40), (40, 70, 160), (230, 230, 230), (50, 50, 50),
                                          (200, 170, 60)]), 25)
    col[head] = jitter(rng, rng.choice([(230, 190, 160), (180, 130, 100), (110, 75, 55)]), 10)
    c.paint(legs | torso | head, col + rng.standard_normal((c.h, c.w, 1)).astype(np.float32) * 4, ID[label], inst)


def paint_traffic(c: Canvas, rng, lay: Layout) -> None:
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
