"""Inline SVG line charts for ``report.html``: PR / ROC curves from the curve arrays, training curves from
``train_log.jsonl``. Lines are thinned to a few hundred points each; colours follow matplotlib's tab10 (then
dashed) so one method keeps its colour in every chart of a report."""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np

from synboost.jobs.report_assets.page import esc

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
DASHES = ("", "6 3", "2 2", "8 3 2 3")
_CLIP_IDS = itertools.count()


def style(k: int) -> tuple[str, str]:
    """(colour, dash pattern) of the k-th series."""
    return PALETTE[k % len(PALETTE)], DASHES[(k // len(PALETTE)) % len(DASHES)]


def thin(x: np.ndarray, y: np.ndarray, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``n`` points of a polyline: a uniform sample of the indices, the ends, and each point
    where the curve turns most (so steps stay steps)."""
    if x.size <= n:
        return x, y
    keep = set(np.linspace(0, x.size - 1, n // 2).astype(int).tolist())
    dx, dy = np.diff(x), np.diff(y)
    turn = np.abs(np.diff(np.arctan2(dy, dx)))
    keep.update((np.argsort(turn)[-(n // 2):] + 1).tolist())
    idx = np.array(sorted(keep))
    return x[idx], y[idx]


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else [0.0]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _label(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def line_chart(series: Sequence[tuple[str, Sequence[float], Sequence[float]]], title: str = "", xlabel: str = "",
               ylabel: str = "", xlim: tuple[float, float] | None = None, ylim: tuple[float, float] | None = None,
               width: int = 420, height: int = 300, hline: float | None = None, styles: Sequence[int] | None = None,
               points: int = 300) -> str:
    """An SVG chart of ``(name, xs, ys)`` series (non-finite points dropped), axes with round ticks, a ``<title>``
    per line (the browser shows the name on hover). ``styles``: each series' palette index (default its position)."""
    ml, mr, mt, mb = 52, 12, 22 if title else 8, 38
    pw, ph = width - ml - mr, height - mt - mb
    clean = []
    for name, xs, ys in series:
        x, y = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        clean.append((name, *thin(x[ok], y[ok], points)))
    allx = np.concatenate([c[1] for c in clean] + [np.empty(0)])
    ally = np.concatenate([c[2] for c in clean] + [np.empty(0)])
    x0, x1 = xlim or ((float(allx.min()), float(allx.max())) if allx.size else (0.0, 1.0))
    y0, y1 = ylim or ((float(ally.min()), float(ally.max())) if ally.size else (0.0, 1.0))
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 <= y0:
        y0, y1 = y0 - abs(y0) * 0.05 - 0.5, y1 + abs(y1) * 0.05 + 0.5
    if ylim is None:
        pad = 0.04 * (y1 - y0)
        y0, y1 = y0 - pad, y1 + pad

    def px(v):
        return ml + (np.asarray(v) - x0) / (x1 - x0) * pw

    def py(v):
        return mt + ph - (np.asarray(v) - y0) / (y1 - y0) * ph

    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">']
    if title:
        out.append(f'<text x="{ml}" y="14" style="font-weight:600;fill:#1d232b">{esc(title)}</text>')
    for t in nice_ticks(x0, x1):
        X = float(px(t))
        out.append(f'<line x1="{X:.1f}" y1="{mt}" x2="{X:.1f}" y2="{mt + ph}" stroke="#eceff2"/>'
                   f'<text x="{X:.1f}" y="{mt + ph + 14}" text-anchor="middle">{_label(t)}</text>')
    for t in nice_ticks(y0, y1):
        Y = float(py(t))
        out.append(f'<line x1="{ml}" y1="{Y:.1f}" x2="{ml + pw}" y2="{Y:.1f}" stroke="#eceff2"/>'
                   f'<text x="{ml - 5}" y="{Y + 4:.1f}" text-anchor="end">{_label(t)}</text>')
    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#9aa5b0"/>')
    if hline is not None and y0 <= hline <= y1:
        Y = float(py(hline))
        out.append(f'<line x1="{ml}" y1="{Y:.1f}" x2="{ml + pw}" y2="{Y:.1f}" stroke="#888" stroke-dasharray="4 3"/>')
    out.append(f'<text x="{ml + pw / 2:.0f}" y="{height - 6}" text-anchor="middle">{esc(xlabel)}</text>'
               f'<text transform="translate(12 {mt + ph / 2:.0f}) rotate(-90)" text-anchor="middle">{esc(ylabel)}'
               "</text>")
    clip = f"clip{next(_CLIP_IDS)}"
    out.append(f'<clipPath id="{clip}"><rect x="{ml}" y="{mt}" width="{pw}" height="{ph}"/></clipPath>'
               f'<g clip-path="url(#{clip})">')
    for k, (name, x, y) in enumerate(clean):
        if not x.size:
            continue
        colour, dash = style(styles[k] if styles is not None else k)
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px(x), py(y)))
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        if x.size == 1:
            out.append(f'<circle cx="{float(px(x[0])):.1f}" cy="{float(py(y[0])):.1f}" r="2.5" fill="{colour}">'
                       f"<title>{esc(name)}</title></circle>")
        else:
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6"{extra} points="{pts}">'
                       f"<title>{esc(name)}</title></polyline>")
    out.append("</g></svg>")
    return "".join(out)


def legend(names: Sequence[str], styles: Sequence[int] | None = None) -> str:
    """An HTML legend in the charts' colours."""
    items = []
    for k, name in enumerate(names):
        colour, dash = style(styles[k] if styles is not None else k)
        bg = (f"repeating-linear-gradient(90deg,{colour} 0 5px,transparent 5px 8px)" if dash else colour)
        items.append(f'<span><i style="background:{bg}"></i>{esc(name)}</span>')
    return '<div class="legend">' + "".join(items) + "</div>"
