"""The page of ``report.html``: one self-contained HTML file with its CSS and JavaScript inline.

A Content-Security-Policy forbids every network fetch (images are ``data:`` URIs), so the file reads the same
mailed, archived or opened offline. The script makes the tables sortable by any column, drives the example
galleries (:mod:`.gallery`) and, when the URL ends in ``#selftest``, checks the page in the browser that shows it:
every image decoded, the view buttons change the shown image, each "order by" puts the cards in that method's
ascending per-image AP, the column sort sorts; the result (JSON) goes into ``<pre id="selftest">``, with every
script error the page met.
"""
from __future__ import annotations

import base64
import html
import math
from typing import Any, Sequence

import cv2
import numpy as np

CSS = """
:root { --fg: #1d232b; --muted: #5d6873; --line: #d7dde3; --bg: #fff; --soft: #f3f5f7; --accent: #0b63c5; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); }
header { padding: 14px 24px 8px; border-bottom: 1px solid var(--line); background: var(--soft); }
header h1 { margin: 0 0 2px; font-size: 21px; }
header p { margin: 2px 0; color: var(--muted); }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
main { padding: 4px 24px 24px; }
section { margin-top: 18px; }
h2 { font-size: 17px; border-bottom: 1px solid var(--line); padding-bottom: 3px; margin: 14px 0 8px; }
h3 { font-size: 15px; margin: 12px 0 4px; }
p.note { margin: 4px 0; color: var(--muted); max-width: 110ch; }
table { border-collapse: collapse; margin: 6px 0 4px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 10px; text-align: left; white-space: nowrap; }
th { background: var(--soft); font-weight: 600; }
th.num, td.num { text-align: right; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th::after { content: " \\2195"; color: #a4adb6; font-weight: 400; }
table.sortable th[data-dir=asc]::after { content: " \\25B2"; color: var(--fg); }
table.sortable th[data-dir=desc]::after { content: " \\25BC"; color: var(--fg); }
td.best { font-weight: 700; }
.charts { display: flex; flex-wrap: wrap; gap: 10px 26px; align-items: flex-start; }
figure { margin: 0; }
figcaption { color: var(--muted); font-size: 12px; }
svg.chart { background: #fff; }
svg.chart text { font: 11px system-ui, sans-serif; fill: var(--muted); }
.legend { display: flex; flex-wrap: wrap; gap: 2px 14px; max-width: 900px; font-size: 12px; margin: 4px 0; }
.legend i { display: inline-block; width: 18px; height: 3px; margin-right: 5px; vertical-align: middle; }
.controls { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin: 6px 0 8px; }
.controls button { font: inherit; font-size: 13px; padding: 2px 9px; border: 1px solid var(--line);
                   border-radius: 4px; background: #fff; cursor: pointer; }
.controls button.on { background: var(--accent); border-color: var(--accent); color: #fff; }
.controls select { font: inherit; font-size: 13px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { margin: 0; width: min(100%, var(--w, 320px)); }
.card img { display: block; width: 100%; height: auto; border-radius: 3px; background: var(--soft); }
.card .missing { display: flex; align-items: center; justify-content: center; text-align: center; padding: 8px;
                 aspect-ratio: var(--ar, 2); background: var(--soft); color: var(--muted); border-radius: 3px; }
.card [hidden] { display: none; }
.card figcaption b { color: var(--fg); font-weight: 600; }
.samples img { max-width: 100%; height: auto; border: 1px solid var(--line); }
pre { background: var(--soft); padding: 8px 10px; overflow: auto; max-height: 480px; font-size: 12px; }
footer { padding: 10px 24px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); }
"""

#: first in <head>: collect every error (and console.error) the page meets, for the self-check
HEAD_SCRIPT = """
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message || e)); });
window.addEventListener('unhandledrejection', function (e) { window.__errors.push('rejection: ' + e.reason); });
(function () { var ce = console.error; console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, ' ')); return ce.apply(console, arguments); }; })();
"""

SCRIPT = r"""
(function () {
  'use strict';
  var each = function (list, f) { Array.prototype.forEach.call(list, f); };
  // ------------------------------------------------------------------ sortable tables
  function cellKey(cell, numeric) {
    var v = cell.getAttribute('data-v');
    if (v === null) { v = cell.textContent.trim(); }
    if (!numeric) { return v.toLowerCase(); }
    var x = parseFloat(v);
    return isNaN(x) ? null : x;
  }
  function sortTable(table, col, dir) {
    var th = table.tHead.rows[0].cells[col], numeric = th.classList.contains('num');
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellKey(a.cells[col], numeric), y = cellKey(b.cells[col], numeric);
      if (x === null || x === '') { return (y === null || y === '') ? 0 : 1; }  // empty cells last
      if (y === null || y === '') { return -1; }
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    each(table.tHead.rows[0].cells, function (h) { h.removeAttribute('data-dir'); });
    th.setAttribute('data-dir', dir > 0 ? 'asc' : 'desc');
  }
  each(document.querySelectorAll('table.sortable'), function (t) {
    each(t.tHead.rows[0].cells, function (th, i) {
      th.title = 'sort by this column';
      th.addEventListener('click', function () { sortTable(t, i, th.getAttribute('data-dir') === 'asc' ? -1 : 1); });
    });
  });
  // ------------------------------------------------------------------ example galleries
  function pct(a) { return (a === null || a === undefined) ? '\u2014' : (100 * a).toFixed(1) + '\u00a0%'; }
  function setupGallery(g) {
    var methods = JSON.parse(g.getAttribute('data-methods'));
    var grid = g.querySelector('.cards'), select = g.querySelector('select.order');
    var buttons = g.querySelectorAll('.controls button[data-view]');
    var cards = Array.prototype.slice.call(g.querySelectorAll('.card'));
    cards.forEach(function (c) { c.ap = JSON.parse(c.getAttribute('data-ap')); });
    var state = {view: g.getAttribute('data-view'), order: parseInt(select.value, 10)};
    function caption(c) {
      var k = state.order, m = state.view.charAt(0) === 'm' ? parseInt(state.view.slice(1), 10) : -1;
      var t = methods[k] + ' AP ' + pct(c.ap[k]);
      if (m >= 0 && m !== k) { t += ' \u00b7 ' + methods[m] + ' AP ' + pct(c.ap[m]); }
      c.querySelector('.ap').textContent = t;
    }
    function show(view) {
      state.view = view;
      g.setAttribute('data-view', view);
      each(buttons, function (b) { b.classList.toggle('on', b.getAttribute('data-view') === view); });
      cards.forEach(function (c) {
        each(c.querySelectorAll('.view'), function (v) { v.hidden = v.getAttribute('data-view') !== view; });
        caption(c);
      });
    }
    function order(k) {
      state.order = k;
      cards.sort(function (a, b) {
        var x = a.ap[k], y = b.ap[k];
        if (x === null) { return y === null ? 0 : 1; }
        if (y === null) { return -1; }
        return x - y;
      });
      cards.forEach(function (c, i) { grid.appendChild(c); c.querySelector('.rank').textContent = '#' + (i + 1); });
      show('m' + k);
    }
    each(buttons, function (b) { b.addEventListener('click', function () { show(b.getAttribute('data-view')); }); });
    select.addEventListener('change', function () { order(parseInt(select.value, 10)); });
    order(state.order);
  }
  each(document.querySelectorAll('.gallery'), setupGallery);
  // ------------------------------------------------------------------ #selftest
  function shown(card) {
    var v = card.querySelector('.view:not([hidden])');
    return v ? (v.getAttribute('src') || 'missing:' + v.getAttribute('data-view')) : null;
  }
  function checkGallery(g, out) {
    var card = g.querySelector('.card'), buttons = g.querySelectorAll('.controls button[data-view]');
    var seen = [shown(card)], ok = true;
    each(buttons, function (b) {
      var before = shown(card);
      b.click();
      card = g.querySelector('.card');
      var after = shown(card);
      if (after === before || after === null) { ok = false; }
      seen.push(after);
    });
    var select = g.querySelector('select.order'), sorted = true, methods = JSON.parse(g.getAttribute('data-methods'));
    each(select.options, function (o) {
      select.value = o.value;
      select.dispatchEvent(new Event('change'));
      var k = parseInt(o.value, 10), prev = -Infinity, nulls = false;
      each(g.querySelectorAll('.card'), function (c) {
        var a = c.ap[k];
        if (a === null) { nulls = true; return; }
        if (nulls || a < prev) { sorted = false; }
        prev = a;
      });
      if (g.getAttribute('data-view') !== 'm' + k) { sorted = false; }
    });
    out.galleries += 1;
    out.switch_changed = out.switch_changed && ok && buttons.length > 1;
    out.order_ok = out.order_ok && sorted && methods.length === select.options.length;
  }
  function checkSort(out) {
    var t = document.querySelector('table.sortable');
    if (!t) { return; }
    var ths = t.tHead.rows[0].cells, col = -1;
    each(ths, function (th, i) { if (col < 0 && th.classList.contains('num')) { col = i; } });
    if (col < 0) { return; }
    var values = function () {
      return Array.prototype.map.call(t.tBodies[0].rows, function (r) { return cellKey(r.cells[col], true); })
        .filter(function (x) { return x !== null; });
    };
    ths[col].click();
    var up = values();
    ths[col].click();
    var down = values();
    var mono = function (a, s) { return a.every(function (x, i) { return i === 0 || s * (x - a[i - 1]) >= 0; }); };
    out.sort_ok = mono(up, 1) && mono(down, -1);
  }
  function selftest() {
    var out = {images: 0, broken: 0, galleries: 0, switch_changed: true, order_ok: true, sort_ok: null,
               errors: window.__errors};
    var imgs = Array.prototype.slice.call(document.images);
    out.images = imgs.length;  // after the load event every image has loaded or failed: broken ones have width 0
    out.broken = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0); }).length;
    try {
      each(document.querySelectorAll('.gallery'), function (g) { checkGallery(g, out); });
      checkSort(out);
    } catch (e) { window.__errors.push('selftest: ' + e); }
    if (!out.galleries) { out.switch_changed = out.order_ok = null; }
    var pre = document.getElementById('selftest');
    pre.textContent = JSON.stringify(out);
    pre.hidden = false;
  }
  if (location.hash === '#selftest') {
    if (document.readyState === 'complete') { selftest(); } else { window.addEventListener('load', selftest); }
  }
})();
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def esc(value: Any) -> str:
    """``value`` as HTML text (quotes escaped too, so it also fits in an attribute)."""
    return html.escape(str(value), quote=True)


def page(title: str, sections: Sequence[tuple[str, str, str]], subtitle: str = "", footer: str = "") -> str:
    """The whole HTML document: a header with links to ``sections`` (``(id, heading, inner HTML)``) and them."""
    nav = "".join(f'<a href="#{esc(i)}">{esc(h)}</a>' for i, h, _ in sections)
    body = "\n".join(f'<section id="{esc(i)}"><h2>{esc(h)}</h2>\n{inner}\n</section>' for i, h, inner in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{esc(title)}</title>\n'
            f"<style>{CSS}</style>\n<script>{HEAD_SCRIPT}</script>\n</head><body>\n"
            f"<header><h1>{esc(title)}</h1>" + (f"<p>{esc(subtitle)}</p>" if subtitle else "")
            + f"<nav>{nav}</nav></header>\n<main>\n{body}\n</main>\n"
            f'<pre id="selftest" hidden></pre>\n<footer>{esc(footer)}</footer>\n<script>{SCRIPT}</script>\n'
            "</body></html>\n")


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(v: Any, kind: str) -> str:
    """A cell's text: ``pct`` (a fraction shown in %), ``num`` (4 significant digits), ``sec`` (seconds), text."""
    if _missing(v):
        return "\u2014"
    if kind == "pct":
        return f"{100 * float(v):.2f}"
    if kind == "sec":
        v = float(v)
        return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"
    if kind == "num":
        return f"{float(v):.4g}" if isinstance(v, float) else str(v)
    return str(v)


def table_html(columns: Sequence[tuple[str, str, str]], rows: Sequence[Sequence[Any]], sortable: bool = True) -> str:
    """A table; ``columns``: ``(title, kind, best)`` with kind ``text`` / ``pct`` / ``num`` / ``sec`` (see
    :func:`fmt`) and best ``max`` / ``min`` / ``""`` (the best value of that column is bold). Numeric cells carry
    their raw value for sorting; missing values sort last."""
    best: dict[int, float] = {}
    for j, (_, kind, b) in enumerate(columns):
        vals = [float(r[j]) for r in rows if kind != "text" and not _missing(r[j])]
        if b and len(vals) > 1:
            best[j] = max(vals) if b == "max" else min(vals)
    head = "".join(f'<th class="{"text" if k == "text" else "num"}">{esc(t)}</th>' for t, k, _ in columns)
    out = [f'<table class="{"sortable" if sortable else "plain"}"><thead><tr>{head}</tr></thead><tbody>']
    for r in rows:
        cells = []
        for j, ((_, kind, _), v) in enumerate(zip(columns, r)):
            if kind == "text":
                cells.append(f"<td>{esc(fmt(v, kind))}</td>")
                continue
            cls = "num best" if j in best and not _missing(v) and float(v) == best[j] else "num"
            raw = "" if _missing(v) else repr(float(v))
            cells.append(f'<td class="{cls}" data-v="{raw}">{esc(fmt(v, kind))}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</tbody></table>"


def data_uri(data: bytes, mime: str) -> str:
    """``data:`` URI of encoded bytes."""
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def encode_rgb(image: np.ndarray, max_width: int | None = None, quality: int = 75, png: bool = False) -> bytes:
    """An RGB (or gray) uint8 image, shrunk to at most ``max_width`` pixels wide (area), as JPEG (or PNG) bytes."""
    im = np.asarray(image, np.uint8)
    if max_width and im.shape[1] > max_width:
        h = max(1, round(im.shape[0] * max_width / im.shape[1]))
        im = cv2.resize(im, (max_width, h), interpolation=cv2.INTER_AREA)
    bgr = im[..., ::-1] if im.ndim == 3 else im
    ok, buf = (cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9]) if png else
               cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)]))
    if not ok:
        raise ValueError("image could not be encoded")
    return buf.tobytes()


def img_tag(data: bytes, alt: str, mime: str = "image/jpeg", attrs: str = "") -> str:
    """An ``<img>`` with the bytes embedded."""
    return f'<img src="{data_uri(data, mime)}" alt="{esc(alt)}"{" " + attrs if attrs else ""}>'
