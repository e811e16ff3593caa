"""Pictures where people look: anomaly heatmaps, overlays, label colours, PR / ROC curves.

Heatmaps follow the convention of the SynBoost paper's figures (OpenCV JET, hot = anomalous), blended 50/50 with
the image for overlays. Curves are drawn with matplotlib's Agg backend (no display needed).
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import cv2
import numpy as np

from synboost.data.labels import colorize

__all__ = ["colorize", "draw_objects", "heatmap", "mask_outline", "normalize_map", "overlay", "plot_curves",
           "plot_training_log", "tile"]


def normalize_map(score: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Scale a float map to [0, 1] between ``lo`` and ``hi`` (default: its own finite min and max)."""
    s = np.asarray(score, np.float32)
    finite = np.isfinite(s)
    if not finite.any():
        return np.zeros_like(s)
    lo = float(s[finite].min()) if lo is None else lo
    hi = float(s[finite].max()) if hi is None else hi
    out = (np.where(finite, s, lo) - lo) / max(hi - lo, 1e-12)
    return np.clip(out, 0.0, 1.0)


def heatmap(score: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) JET heatmap of a score map (blue = normal, red = anomalous)."""
    u8 = (normalize_map(score, lo, hi) * 255.0 + 0.5).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, score: np.ndarray, alpha: float = 0.5, lo: float | None = None,
            hi: float | None = None) -> np.ndarray:
    """Heatmap blended over the RGB image; the map is resized to the image if needed."""
    image = np.asarray(image, np.uint8)
    h, w = image.shape[:2]
    score = np.asarray(score, np.float32)
    if score.shape != (h, w):
        score = cv2.resize(score, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(image, 1.0 - alpha, heatmap(score, lo, hi), alpha, 0.0)


def mask_outline(image: np.ndarray, mask: np.ndarray, color=(0, 255, 0)) -> np.ndarray:
    """Draw the outline of a boolean mask (e.g. the ground-truth anomalies) on a copy of the image."""
    out = np.ascontiguousarray(np.asarray(image, np.uint8).copy())
    contours, _ = cv2.findContours(np.asarray(mask, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, color, 1)
    return out


def draw_objects(image: np.ndarray, objects: Sequence[Mapping], color=(255, 255, 255), scores: bool = True
                 ) -> np.ndarray:
    """A copy of the RGB image with each object's box (``bbox`` = x, y, w, h, as
    :func:`synboost.jobs.objects.find_objects` gives) drawn 1 px wide, and its ``max_score`` above it when the
    box leaves room (``scores``)."""
    out = np.ascontiguousarray(np.asarray(image, np.uint8).copy())
    h, w = out.shape[:2]
    scale = max(0.3, min(h, w) / 600)
    for obj in objects:
        x, y, bw, bh = (int(v) for v in obj["bbox"])
        cv2.rectangle(out, (x, y), (min(x + bw - 1, w - 1), min(y + bh - 1, h - 1)), color, 1)
        if scores and "max_score" in obj:
            text = f"{float(obj['max_score']):.2f}"
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            if y - th - 2 >= 0 and x + tw < w:
                cv2.putText(out, text, (x, y - 2), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
    return out


def plot_curves(curves: Mapping[str, Mapping[str, np.ndarray]], path: str | os.PathLike, title: str = "") -> None:
    """PR and ROC curves of several methods side by side, saved as PNG (atomically).

    ``curves[name]`` holds ``precision``, ``recall``, ``fpr``, ``tpr`` arrays and optionally ``ap`` / ``auroc`` /
    ``fpr95`` numbers used in the legend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, (ax_pr, ax_roc) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, c in curves.items():
        ap, auroc = c.get("ap"), c.get("auroc")
        ax_pr.plot(c["recall"], c["precision"], label=f"{name} (AP {100 * ap:.1f})" if ap is not None else name)
        ax_roc.plot(c["fpr"], c["tpr"], label=f"{name} (AUROC {100 * auroc:.1f})" if auroc is not None else name)
    ax_pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01), title="precision-recall")
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), title="ROC")
    ax_roc.axhline(0.95, color="grey", lw=0.6, ls="--")
    for ax in (ax_pr, ax_roc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left" if ax is ax_pr else "lower right")
    _save_figure(fig, path, title, dpi=110)


def tile(images: Sequence[np.ndarray], cols: int, titles: Sequence[str] | None = None) -> np.ndarray:
    """Grid of equally sized RGB uint8 images (gray maps are replicated), each optionally captioned."""
    ims = [np.repeat(i[..., None], 3, 2) if i.ndim == 2 else i for i in images]
    if titles:
        ims = [_caption(i, t) for i, t in zip(ims, titles)]
    h, w = ims[0].shape[:2]
    rows = (len(ims) + cols - 1) // cols
    out = np.zeros((rows * h, cols * w, 3), np.uint8)
    for k, im in enumerate(ims):
        r, c = divmod(k, cols)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = im
    return out


def _caption(image: np.ndarray, text: str) -> np.ndarray:
    """A copy with ``text`` in the top-left corner, white on a dark box."""
    out = np.ascontiguousarray(image.copy())
    scale = max(0.3, min(out.shape[:2]) / 300)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (w + 4, h + base + 4), (0, 0, 0), -1)
    cv2.putText(out, text, (2, h + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def plot_training_log(steps: Mapping[str, Sequence[tuple[float, float]]],
                      epochs: Mapping[str, Sequence[tuple[float, float]]], path: str | os.PathLike,
                      title: str = "") -> None:
    """Training curves as one PNG (matplotlib Agg, atomically): left, each per-step series (``steps[name]`` =
    (global step, value) points, e.g. the train loss); right, each per-epoch series (``epochs[name]`` = (epoch,
    value), e.g. the validation metrics), one panel per series so that different scales stay readable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator


    panels = [("step", k, v) for k, v in steps.items()] + [("epoch", k, v) for k, v in epochs.items()]
    if not panels:
        raise ValueError("nothing to plot")
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, (axis, name, points) in zip(axes.ravel(), panels):
        xs, ys = zip(*points) if points else ((), ())
        ax.plot(xs, ys, marker="o" if axis == "epoch" else None, ms=3, lw=1.2 if axis == "epoch" else 0.9)
        ax.set(xlabel=axis, title=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    _save_figure(fig, path, title, dpi=100)


def _save_figure(fig, path, title: str | None, dpi: int) -> None:
    """Title, tight layout, an atomic PNG write, and the figure closed (the curve and training-log figures)."""
    import matplotlib.pyplot as plt

    from synboost.data.io import atomic_path

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
