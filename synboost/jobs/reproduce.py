"""``synboost eval --config configs/reproduce/<table>.yaml``: a paper table re-run. Every dataset of the config
goes through the pipeline (:func:`synboost.evaluation.evaluate`), and our numbers are printed beside the published
ones with the difference; numbers the design notes could not verify are marked."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from synboost.data.io import write_json, write_text
from synboost.errors import ConfigError, DataError
from synboost.jobs.evaluate import (
    COMPONENT_COLUMNS,
    PIXEL_COLUMNS,
    combined_table,
    evaluate,
    markdown_table,
    write_combined,
)

METRIC_KEYS = ("ap", "fpr95", "auroc", "siou", "ppv", "f1_mean")
_METRIC_TITLES = dict(PIXEL_COLUMNS + COMPONENT_COLUMNS)


def reproduction_datasets(cfg) -> dict:
    """name -> opened dataset for each ``data.<kind>`` of a :class:`~synboost.config.ReproduceConfig`; a missing
    or placeholder folder is one line saying where it was looked for and how to point at it."""
    import dataclasses

    from synboost.data.kinds import KINDS, open_dataset

    out = {}
    for name, value in dataclasses.asdict(cfg.data).items():
        if not value:
            continue
        spec = value if value.split(":", 1)[0] in KINDS else f"{name}:{value}"
        path = spec.split(":", 1)[1]
        fix = (f"pass --set data_root=DIR (the folder holding your benchmark copies) or --set data.{name}=PATH "
               f"(or --set data.{name}= to leave it out)")
        if (path == "DIR" or path.startswith("DIR/")) and not Path(path.split("@")[0]).exists():
            raise DataError(f"data.{name} is still the placeholder '{path}': {fix}")
        try:
            out[name] = open_dataset(spec)
        except DataError as e:
            raise DataError(f"data.{name}: {e}; {fix}") from None
    if not out:
        raise ConfigError("the reproduction config names no dataset: set data.<kind>=PATH")
    return out


def _pipeline_file(path: str) -> Path:
    p = Path(path)
    for cand in (p, Path(__file__).resolve().parents[1] / p):
        if cand.is_file():
            return cand
    raise ConfigError(f"{path}: pipeline file not found (set 'pipeline' to a pipelines/*.yaml file)")


def compare_expected(expected, reports: Sequence[dict]) -> list[dict]:
    """One row per published number: expected, ours and ours - expected (percent; None where not comparable)."""
    by_name = {r["dataset"]: r for r in reports}
    rows = []
    for e in expected:
        rep = by_name.get(e.dataset)
        res = next((x for x in rep["results"] if x["method"] == e.method), None) if rep else None
        for k in METRIC_KEYS:
            exp = getattr(e, k)
            if exp is None:
                continue
            v = None if res is None else res.get(k)
            ours = None if v is None or np.isnan(v) else 100 * float(v)
            rows.append({"dataset": e.dataset, "method": e.method, "metric": k, "expected": exp, "ours": ours,
                         "diff": None if e.hidden or ours is None else ours - exp, "verified": e.verified,
                         "hidden": e.hidden, "source": e.source, "note": e.note})
    return rows


def reproduction_table(cfg, rows: Sequence[dict]) -> str:
    """Our numbers beside the published ones of a reproduction config, as markdown."""
    lines = [f"## {cfg.title or cfg.pipeline}", "", f"Source: {cfg.source}", "",
             f"Pipeline {cfg.pipeline}; FPR95 rule {cfg.fpr_rule}"
             + (f"; scored at {cfg.eval_size[0]}x{cfg.eval_size[1]}" if cfg.eval_size else "; native resolution"),
             "", "| dataset | method | metric | expected | ours | ours - expected | source |",
             "|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        exp = f"{r['expected']:.2f}" + ("" if r["verified"] else " ?")
        diff = "hidden test set" if r["hidden"] else "—" if r["diff"] is None else f"{r['diff']:+.2f}"
        src = r["source"] + (f" ({r['note']})" if r["note"] else "")
        ours = "—" if r["ours"] is None else f"{r['ours']:.2f}"
        lines.append(f"| {r['dataset']} | {r['method']} | {_METRIC_TITLES[r['metric']]} | {exp} | {ours} | {diff} "
                     f"| {src} |")
    lines += ["", "Metrics in %. '?' = unverified (quoted from memory or second-hand; check the paper before citing). "
              "'hidden test set': the published number is on a hidden test set, ours on the public frames."]
    return "\n".join(lines) + "\n"


def reproduce(cfg, progress: bool = True, echo=print) -> dict:
    """Run a :class:`~synboost.config.ReproduceConfig`: every dataset through the pipeline, the combined table in
    ``<out>/summary.md`` and ours beside the published numbers in ``<out>/reproduce.md`` / ``.json``."""
    from synboost.detectors.detector import load_pipeline
    from synboost.errors import CheckpointError

    if not cfg.pipeline:
        raise ConfigError("the reproduction config has no 'pipeline'; name a pipelines/*.yaml file")
    pipeline = _pipeline_file(cfg.pipeline)
    datasets = reproduction_datasets(cfg)
    try:
        det = load_pipeline(pipeline, cfg.pipeline_overrides)
    except CheckpointError as e:
        raise CheckpointError(f"{cfg.pipeline}: {e}") from None
    methods = list(cfg.methods) or [det.method]
    out = Path(cfg.out)
    reports = []
    for name, ds in datasets.items():
        rep = evaluate(det, ds, methods, out / name, dataset_name=name, progress=progress,
                       max_images=cfg.max_images or None, fpr_rule=cfg.fpr_rule, components=cfg.components or None,
                       eval_size=cfg.eval_size or None, submission=cfg.submission or None, formats=cfg.formats or None)
        reports.append(rep)
        echo(markdown_table(rep))
    write_combined(reports, out)
    rows = compare_expected(cfg.expected, reports)
    text = reproduction_table(cfg, rows)
    write_json(out / "reproduce.json", {"title": cfg.title, "source": cfg.source, "pipeline": cfg.pipeline,
                                        "methods": methods, "rows": rows})
    write_text(out / "reproduce.md", text)
    return {"reports": reports, "rows": rows, "text": text, "summary": combined_table(reports), "out": str(out)}
