"""The training part of ``report.html`` (the demo's stages): loss and validation curves from each stage's
``train_log.jsonl``, the best validation of each stage, and the synthesis stage's sample grids."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Mapping

from synboost.jobs.report_assets.page import encode_rgb, esc, img_tag
from synboost.jobs.report_assets.svg import legend, line_chart

_NOT_SERIES = {"epoch", "step", "lr", "seconds"}


def read_log(path: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """(step records, epoch records) of a ``train_log.jsonl``; a resumed run's repeated records count once (the
    last), unreadable lines are skipped."""
    steps: dict[tuple[int, int], dict] = {}
    epochs: dict[int, dict] = {}
    p = Path(path)
    if not p.is_file():
        return [], []
    for line in p.read_text(errors="replace").splitlines():
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if not isinstance(r, dict) or not isinstance(r.get("epoch"), int):
            continue
        if isinstance(r.get("step"), int):
            steps[(r["epoch"], r["step"])] = r
        else:
            epochs[r["epoch"]] = r
    return [steps[k] for k in sorted(steps)], [epochs[k] for k in sorted(epochs)]


def _numeric(records: list[dict]) -> list[str]:
    keys: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if k not in _NOT_SERIES and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys[k] = None
    return list(keys)


def _xy(records: list[dict], key: str, x) -> tuple[list[float], list[float]]:
    pts = [(x(r), float(r[key])) for r in records if isinstance(r.get(key), (int, float))
           and math.isfinite(float(r[key]))]
    return [a for a, _ in pts], [b for _, b in pts]


def stage_charts(name: str, folder: str | os.PathLike) -> str:
    """A stage's charts: training loss per logged step and per epoch, the other logged loss terms, each
    validation number per epoch; a note when the stage has no log."""
    steps, epochs = read_log(Path(folder) / "train_log.jsonl")
    if not steps and not epochs:
        return f'<p class="note">{esc(name)}: no train_log.jsonl in {esc(folder)}.</p>'
    per_epoch: dict[int, int] = {}
    for r in steps:
        per_epoch[r["epoch"]] = max(per_epoch.get(r["epoch"], 1), r["step"])

    def at_step(r):
        return r["epoch"] - 1 + r["step"] / per_epoch[r["epoch"]]

    charts = []
    loss = [("loss per logged step", *_xy(steps, "loss", at_step)),
            ("mean loss per epoch", *_xy(epochs, "train_loss", lambda r: r["epoch"]))]
    charts.append(line_chart(loss, f"{name}: training loss", "epoch", "loss", width=380, height=240)
                  + legend([s[0] for s in loss]))
    terms = [k for k in _numeric(steps) if k != "loss"]
    if terms:
        series = [(k, *_xy(steps, k, at_step)) for k in terms]
        charts.append(line_chart(series, f"{name}: loss terms", "epoch", "", width=380, height=240)
                      + legend(terms))
    vals = sorted((k for k in _numeric(epochs) if k.startswith("val_")), key=lambda k: k == "val_score")
    seen: list[list[float]] = []
    for k in vals:
        x, y = _xy(epochs, k, lambda r: r["epoch"])
        if k == "val_score" and any(s == y or s == [-v for v in y] for s in seen):
            continue  # the selection score repeats one of the numbers
        seen.append(y)
        charts.append(line_chart([(k[4:], x, y)], f"{name}: validation {k[4:]}", "epoch", k[4:], width=300,
                                 height=220, points=400))
    secs = sum(float(r.get("seconds", 0.0)) for r in epochs)
    note = (f"{len(epochs)} epochs logged, {len(steps)} logged steps, {secs:.0f} s of training epochs "
            f"(from {esc(Path(folder) / 'train_log.jsonl')})")
    return (f"<h3>{esc(name)}</h3><div class=\"charts\">" + "".join(f"<figure>{c}</figure>" for c in charts)
            + f'</div><p class="note">{note}</p>')


def sample_grids(folder: str | os.PathLike, n: int = 4, max_width: int = 480) -> str:
    """Up to ``n`` of the synthesis stage's sample grids (``samples/step*.png``: label colours, real,
    generated per row), evenly spaced from the first to the last, embedded as small JPEGs."""
    from synboost.data.io import read_image

    files = sorted(Path(folder).glob("step*.png"))
    if not files:
        return f'<p class="note">No sample grid in {esc(folder)}.</p>'
    pick = (range(len(files)) if len(files) <= n else
            sorted({round(i * (len(files) - 1) / max(n - 1, 1)) for i in range(n)}))
    figs = []
    for i in pick:
        try:
            im = read_image(files[i])
        except Exception as e:  # a grid being written, or damaged: say so, keep the report
            figs.append(f'<p class="note">{esc(files[i].name)}: {esc(e)}</p>')
            continue
        step = files[i].stem.removeprefix("step").lstrip("0") or "0"
        figs.append(f"<figure>{img_tag(encode_rgb(im, max_width, quality=80), files[i].name)}"
                    f"<figcaption>step {esc(step)}</figcaption></figure>")
    return (f'<div class="charts samples">{"".join(figs)}</div><p class="note">{len(pick)} of {len(files)} grids '
            f"in {esc(folder)}; each row: the label map, the real image, the generator's image of the label map."
            "</p>")


def best_table_rows(stages: Mapping[str, dict]) -> list[list]:
    """(stage, epoch, its best validation numbers as text) per stage, from the stages' summaries."""
    rows = []
    for name, val in stages.items():
        val = dict(val or {})
        epoch = val.pop("epoch", None)
        text = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in val.items())
        rows.append([name, epoch, text])
    return rows
