"""Markdown tables of evaluation reports: one dataset's metrics with its notes, and several datasets side by side
(the papers' layout), plus ``summary.md`` / ``summary.json``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from synboost.data.io import write_json, write_text


def _pct(v) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.2f}"


#: (report key, column title) of the pixel and component metrics
PIXEL_COLUMNS = (("ap", "AP"), ("fpr95", "FPR95"), ("auroc", "AUROC"))
COMPONENT_COLUMNS = (("siou", "sIoU"), ("ppv", "PPV"), ("f1_mean", "mean F1"))


def false_positive_line(name: str, top: list[dict]) -> str:
    """``- name: class fp % / inlier % (ratio x), ...`` for the ``top`` of a ``false_positive_classes`` entry."""
    return f"- {name}: " + ", ".join(f"{t['class']} {100 * t['fp_share']:.1f} % / {100 * t['inlier_share']:.1f} % "
                                     f"({t['ratio']:.1f}x)" for t in top)


def markdown_table(report: dict) -> str:
    """One dataset's report as markdown: the metrics table, then notes (skipped files and ignored entries)."""
    head = f"**{report['dataset']}**: {report['images']} images"
    if "anomaly_pixel_ratio" in report:
        head += f", anomaly pixel ratio {100 * report['anomaly_pixel_ratio']:.2f} %"
    if "miou" in report:
        head += f", segmenter mIoU {100 * report['miou']:.1f}"
    cols = PIXEL_COLUMNS + (COMPONENT_COLUMNS if report.get("components") else ())
    lines = [head, "", "| method | " + " | ".join(f"{t} (%)" for _, t in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for r in report["results"]:
        lines.append(f"| {r['method']} | " + " | ".join(_pct(r.get(k)) for k, _ in cols) + " |")
    notes = []
    if report.get("components"):
        c = report["components"]
        notes.append(f"Components: SMIYC {c['preset']} track (predicted components < {c['min_pred_size']} px "
                     f"removed, GT < {c['min_gt_size']} px void), at each method's pixel best-F1 threshold.")
    if report.get("eval_size"):
        notes.append(f"Scored at {report['eval_size'][0]}x{report['eval_size'][1]}.")
    tops = [(r["method"], r["false_positive_classes"]["top"]) for r in report["results"]
            if r.get("false_positive_classes", {}).get("top")]
    if tops:
        notes.append("False positives at each method's pixel best-F1 threshold, the inlier classes most over-"
                     "represented among them (share of the false positives / share of the inlier pixels):")
        notes += [false_positive_line(m, top) for m, top in tops]
    if report.get("unlabelled"):
        notes.append(f"{report['unlabelled']} frames without public labels were not scored.")
    if report.get("submission"):
        sub = report["submission"]
        notes.append(f"Submission files ({', '.join(sub['formats'])}) in {sub['dir']}.")
    if report.get("skipped"):
        notes.append(f"{len(report['skipped'])} files skipped; the first (all in metrics.json):")
        notes += [f"- {e['reason']}" for e in report["skipped"][:5]]
    if report.get("ignored"):
        notes.append(f"{len(report['ignored'])} folder entries are not images; the first (all in metrics.json):")
        notes += [f"- {e['path']}: {e['reason']}" for e in report["ignored"][:5]]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def dataset_names(specs: Sequence[str]) -> list[str]:
    """A unique name per dataset spec: its kind (``fishyscapes_laf:DIR`` -> fishyscapes_laf) or folder name."""
    names: list[str] = []
    for spec in specs:
        base = str(spec).split(":", 1)[0] if ":" in str(spec) else Path(str(spec).split("@")[0]).name
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def combined_table(reports: Sequence[dict]) -> str:
    """One markdown table, methods as rows and the datasets as column groups (the papers' layout)."""
    groups = [(r["dataset"], PIXEL_COLUMNS[:2] + (COMPONENT_COLUMNS if r.get("components") else ()))
              for r in reports]
    head = ["method"] + [f"{name} {t}" if i == 0 else t for name, cols in groups for i, (_, t) in enumerate(cols)]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    methods = list(dict.fromkeys(row["method"] for r in reports for row in r["results"]))
    for m in methods:
        cells = [m]
        for rep, (_, cols) in zip(reports, groups):
            row = next((x for x in rep["results"] if x["method"] == m), {})
            cells += [_pct(row.get(k)) for k, _ in cols]
        lines.append("| " + " | ".join(cells) + " |")
    sizes = ", ".join(f"{r['dataset']} {r['images']}" for r in reports)
    return "\n".join(lines) + f"\n\nAP / FPR95 (and SMIYC sIoU / PPV / mean F1) in %; images scored: {sizes}.\n"


def write_combined(reports: Sequence[dict], out: str | os.PathLike) -> Path:
    """``summary.md`` (:func:`combined_table`) and ``summary.json`` (the reports) in ``out``."""
    out = Path(out)
    write_json(out / "summary.json", {"datasets": [r["dataset"] for r in reports], "reports": list(reports)})
    write_text(out / "summary.md", combined_table(reports))
    return out / "summary.md"
