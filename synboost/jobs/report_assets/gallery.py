"""The per-image examples of ``report.html``: every image's AP under each method, and small views (the image, its
ground truth, each method's heatmap) of the images some method scores worst.

:class:`Gallery` is filled by :func:`synboost.jobs.evaluate.evaluate` as the images are scored. Memory is bounded:
per method a heap of its ``keep`` lowest per-image APs; an image's views (JPEG thumbnails, ``width`` pixels wide
at most) are made when it enters a heap and dropped when it has left every heap. Several evaluations of one
dataset (the rows of ``compare``, the variants of ``ablate``) are joined with :meth:`Gallery.merge`; an image one
run did not keep has no view of that run's methods (the page says so).
"""
from __future__ import annotations

import heapq
import json
import math
from collections import Counter
from typing import Mapping, Sequence

import cv2
import numpy as np

from synboost.jobs.report_assets.page import data_uri, encode_rgb, esc
from synboost.metrics.pixel import pixel_curve
from synboost.viz import heatmap, normalize_map


def per_image_ap(scores: np.ndarray, labels: np.ndarray, max_pixels: int | None = 1 << 17) -> float:
    """AP of one image from its labelled pixels (labels 0 / 1, the metrics' definition); ``nan`` without an
    anomaly pixel. Beyond ``max_pixels`` (a 256 x 512 image) it is the AP of every k-th pixel (of the row-major
    order: a lower resolution, as SynBoost's 256 x 512 protocol), which only orders the examples and costs what a
    small image does; exact when the sample would miss every anomaly pixel."""
    scores, labels = np.asarray(scores).ravel(), np.asarray(labels).ravel()
    if not (labels == 1).any():
        return float("nan")
    step = max(1, math.ceil(labels.size / max_pixels)) if max_pixels else 1
    if step > 1 and (labels[::step] == 1).any():
        scores, labels = scores[::step], labels[::step]
    return float(pixel_curve(scores, labels).ap())


def truth_view(image: np.ndarray, anomaly: np.ndarray) -> np.ndarray:
    """The image with its anomaly pixels (label 1) in red and its void pixels (other labels > 1) darkened."""
    out = np.asarray(image, np.float32).copy()
    a, v = anomaly == 1, anomaly > 1
    out[a] = 0.35 * out[a] + 0.65 * np.array([255, 30, 30], np.float32)
    out[v] = 0.35 * out[v] + 0.65 * np.array([20, 20, 36], np.float32)
    return (out + 0.5).astype(np.uint8)


class Gallery:
    """Per-image AP of every method on one dataset, and the views of each method's ``keep`` worst images."""

    def __init__(self, keep: int = 24, width: int = 320, quality: int = 65, max_pixels: int = 1 << 17) -> None:
        self.keep, self.width, self.quality, self.max_pixels = keep, width, quality, max_pixels
        self.methods: list[str] = []
        self.names: list[str] = []  #: every scored image, in order
        self.ap: dict[str, dict[str, float]] = {}  #: method -> image -> per-image AP
        self.views: dict[str, dict] = {}  #: image -> {"image": jpeg, "truth": jpeg, "maps": {method: jpeg}, "hw"}
        self._index: dict[str, int] = {}
        self._heaps: dict[str, list] = {}
        self._refs: Counter = Counter()

    def add(self, name: str, image: np.ndarray, anomaly: np.ndarray, maps: Mapping[str, np.ndarray],
            labels: np.ndarray, scores: Mapping[str, np.ndarray]) -> None:
        """One scored image: ``labels`` and ``scores[m]`` at its labelled pixels, as the metrics see them;
        ``image``, ``anomaly`` (0 / 1 / void) and the maps ``maps[m]`` at their own sizes, for the views."""
        key = name if name not in self._index else f"{name}#{len(self.names)}"
        idx = self._index[key] = len(self.names)
        self.names.append(key)
        entered = False
        for m, s in scores.items():
            if m not in self.methods:
                self.methods.append(m)
            a = per_image_ap(s, labels, self.max_pixels)
            self.ap.setdefault(m, {})[key] = a
            if math.isnan(a):
                continue
            heap, item = self._heaps.setdefault(m, []), (-a, -idx, key)
            if len(heap) < self.keep:
                heapq.heappush(heap, item)
            elif item > heap[0]:  # lower AP than the highest one kept (ties: the earlier image stays)
                self._release(heapq.heapreplace(heap, item)[2])
            else:
                continue
            self._refs[key] += 1
            entered = True
        if entered:
            self.views[key] = self._render(image, anomaly, maps)

    def _release(self, key: str) -> None:
        self._refs[key] -= 1
        if self._refs[key] <= 0:
            del self._refs[key]
            self.views.pop(key, None)

    def _render(self, image, anomaly, maps) -> dict:
        h, w = image.shape[:2]
        tw = min(w, self.width)
        th = max(1, round(h * tw / w))
        small = cv2.resize(np.asarray(image, np.uint8), (tw, th), interpolation=cv2.INTER_AREA)
        lab = cv2.resize(np.asarray(anomaly, np.uint8), (tw, th), interpolation=cv2.INTER_NEAREST)
        enc = lambda im: encode_rgb(im, quality=self.quality)  # noqa: E731
        views = {"image": enc(small), "truth": enc(truth_view(small, lab)), "maps": {}, "hw": (th, tw)}
        for m, s in maps.items():
            u = cv2.resize(normalize_map(s), (tw, th), interpolation=cv2.INTER_AREA)
            views["maps"][m] = enc(cv2.addWeighted(small, 0.5, heatmap(u, 0.0, 1.0), 0.5, 0.0))
        return views

    def merge(self, other: Gallery, rename: Mapping[str, Sequence[str]] | None = None) -> Gallery:
        """Join another run's gallery of the same dataset (images matched by name); ``rename``: method -> the
        names it gets here (one method can be several rows). Returns self."""
        names = lambda m: list(rename.get(m, [m])) if rename else [m]  # noqa: E731
        for m in other.methods:
            for new in names(m):
                if new not in self.methods:
                    self.methods.append(new)
                self.ap.setdefault(new, {}).update(other.ap.get(m, {}))
        for key in other.names:
            if key not in self._index:
                self._index[key] = len(self.names)
                self.names.append(key)
        for key, v in other.views.items():
            mine = self.views.setdefault(key, {"image": v["image"], "truth": v["truth"], "maps": {}, "hw": v["hw"]})
            for m, b in v["maps"].items():
                for new in names(m):
                    mine["maps"][new] = b
        return self

    def selected(self) -> list[str]:
        """The images to show: each method's lowest per-image AP in turn (among the images with its view), until
        ``keep`` images or none is left."""
        ranked = {m: sorted((k for k, a in self.ap.get(m, {}).items()
                             if not math.isnan(a) and m in self.views.get(k, {}).get("maps", {})),
                            key=lambda k: (self.ap[m][k], self._index.get(k, 0))) for m in self.methods}
        chosen: list[str] = []
        pos = dict.fromkeys(self.methods, 0)
        while len(chosen) < self.keep and any(pos[m] < len(ranked[m]) for m in self.methods):
            for m in self.methods:
                while pos[m] < len(ranked[m]) and ranked[m][pos[m]] in chosen:
                    pos[m] += 1
                if pos[m] < len(ranked[m]) and len(chosen) < self.keep:
                    chosen.append(ranked[m][pos[m]])
                    pos[m] += 1
        return chosen

    def mean_ap(self, method: str) -> float:
        """The mean per-image AP of ``method`` over the images with an anomaly."""
        vals = [a for a in self.ap.get(method, {}).values() if not math.isnan(a)]
        return float(np.mean(vals)) if vals else float("nan")

    def html(self, gid: str) -> str:
        """The gallery: an "order by" select (worst per-image AP first), buttons that switch every card between
        the image, its ground truth and each method's heatmap, and the cards."""
        chosen = self.selected()
        if not chosen:
            return '<p class="note">No example: no scored image has an anomaly pixel.</p>'
        ms = self.methods
        ap = lambda k, m: self.ap.get(m, {}).get(k, float("nan"))  # noqa: E731
        chosen.sort(key=lambda k: (math.isnan(ap(k, ms[0])), ap(k, ms[0])))
        width = max(max(self.views[k]["hw"][1] for k in chosen), 240)
        opts = "".join(f'<option value="{i}">{esc(m)}</option>' for i, m in enumerate(ms))
        views = [("image", "image"), ("truth", "ground truth")] + [(f"m{i}", m) for i, m in enumerate(ms)]
        buttons = "".join(f'<button type="button" data-view="{v}"{" class=on" if v == "m0" else ""}>{esc(t)}'
                          "</button>" for v, t in views)
        cards = []
        for rank, k in enumerate(chosen, 1):
            v = self.views[k]
            h, w = v["hw"]
            aps = [None if math.isnan(ap(k, m)) else round(ap(k, m), 6) for m in ms]
            parts = []
            for view, _ in views:
                hidden = "" if view == "m0" else " hidden"
                data = v["image"] if view == "image" else v["truth"] if view == "truth" else v["maps"].get(
                    ms[int(view[1:])])
                if data is None:
                    parts.append(f'<div class="view missing" data-view="{view}"{hidden}>{esc(ms[int(view[1:])])}: '
                                 "not kept (this image was not among the worst of that method's run)</div>")
                else:
                    parts.append(f'<img class="view" data-view="{view}" src="{data_uri(data, "image/jpeg")}" '
                                 f'width="{w}" height="{h}" alt="{esc(k)}"{hidden}>')
            cards.append(f'<figure class="card" style="--ar:{w / h:.3f}" data-ap="{esc(json.dumps(aps))}">'
                         + "".join(parts) + f'<figcaption><span class="rank">#{rank}</span> <b>{esc(k)}</b> '
                         f'<span class="ap"></span></figcaption></figure>')
        n_ap = sum(not math.isnan(a) for a in self.ap.get(ms[0], {}).values())
        note = (f"{len(chosen)} of the {len(self.names)} scored images ({n_ap} with anomaly pixels, which alone "
                f"have an AP): each method's lowest per-image AP in turn. Order by a method to see its worst first. "
                "Heatmaps are scaled per image (its own minimum to maximum; JET, red = anomalous); ground truth: "
                "red = anomaly, dark = void (not scored).")
        return (f'<div class="gallery" id="{esc(gid)}" data-methods="{esc(json.dumps(ms))}" data-view="m0">'
                f'<div class="controls"><span>order by</span><select class="order" aria-label="order by">{opts}'
                f'</select><span>worst per-image AP first; show</span>{buttons}</div>'
                f'<div class="cards" style="--w:{width}px">' + "\n".join(cards) + "</div>"
                f'<p class="note">{esc(note)}</p></div>')
