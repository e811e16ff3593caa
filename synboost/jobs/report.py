"""``report.html``: one self-contained page per ``eval``, ``compare``, ``ablate`` and ``demo`` run.

Everything is inside the file (images as ``data:`` URIs, inline CSS, a little inline JavaScript, a policy that
forbids any network fetch), so it can be mailed or archived. It holds, per dataset: the metrics table (sortable by
any column), the PR and ROC curves (inline SVG from the curve arrays), the per-image examples (a
:class:`~synboost.jobs.report_assets.gallery.Gallery`: switch one image between each method's heatmap and the
ground truth; order the images by any method's per-image AP, worst first); then the run's config and timings, and
for the demo its stages' training curves and the synthesis sample grids. Images are small JPEG thumbnails (at
most 320 pixels wide) and at most ``keep`` (24) examples per dataset: on the demo's 128 x 256 scenes a report
weighs 0.9 MB with 3 methods and 1.9 MB with 8 (each example holds the image, its ground truth and one view per
method).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from synboost.data.io import write_text
from synboost.jobs.report_assets.gallery import Gallery, per_image_ap  # noqa: F401
from synboost.jobs.report_assets.page import esc, page, table_html
from synboost.jobs.report_assets.svg import legend, line_chart
from synboost.jobs.report_assets.training import best_table_rows, sample_grids, stage_charts

REPORT_NAME = "report.html"


def _plain(obj: Any) -> Any:
    """JSON-able copy (paths, numpy numbers and other objects become strings / numbers)."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in str(text)).strip("-").lower() or "x"


def write_html(path: str | os.PathLike, title: str, sections: Sequence[tuple[str, str, str]],
               subtitle: str = "") -> Path:
    """Write the page (atomically) and return its path."""
    from synboost import __version__

    footer = f"synboost {__version__}, written {time.strftime('%Y-%m-%d %H:%M:%S')}; self-contained, no network."
    path = Path(path)
    write_text(path, page(title, sections, subtitle, footer))
    return path


# ------------------------------------------------------------------------------------------------ sections


def curves_html(curves: Mapping[str, Mapping[str, Any]]) -> str:
    """PR and ROC charts of every method (``curves[name]``: recall, precision, fpr, tpr arrays, ap, auroc)."""
    if not curves:
        return '<p class="note">No curve (no anomaly pixel was scored).</p>'
    pr = [(n, c["recall"], c["precision"]) for n, c in curves.items()]
    roc = [(n, c["fpr"], c["tpr"]) for n, c in curves.items()]
    labels = [f"{n} (AP {100 * c['ap']:.1f}, AUROC {100 * c['auroc']:.1f})" if c.get("ap") is not None
              and c.get("auroc") is not None else n for n, c in curves.items()]
    pr_svg = line_chart(pr, "precision-recall", "recall", "precision", (0, 1), (0, 1.01))
    roc_svg = line_chart(roc, "ROC", "false positive rate", "true positive rate", (0, 1), (0, 1.01), hline=0.95)
    return (f'<div class="charts"><figure>{pr_svg}</figure><figure>{roc_svg}'
            "<figcaption>dashed: 95 % TPR (FPR95)</figcaption></figure></div>"
            + legend(labels))


def config_html(config: Mapping[str, Any] | None, timings: Mapping[str, float] | None) -> str:
    """The timings as a table and the config as YAML."""
    parts = []
    if timings:
        rows = [[k, float(v)] for k, v in timings.items() if v is not None]
        parts.append(table_html([("step", "text", ""), ("time", "sec", "")], rows, sortable=False))
    if config:
        parts.append(f"<pre>{esc(yaml.safe_dump(_plain(config), sort_keys=False, width=110))}</pre>")
    return "\n".join(parts) or '<p class="note">No config recorded.</p>'


def _dataset_note(rep: Mapping[str, Any]) -> str:
    bits = [f"{rep.get('images', 0)} images scored"]
    if rep.get("anomaly_pixel_ratio") is not None:
        bits.append(f"anomaly pixel ratio {100 * rep['anomaly_pixel_ratio']:.2f} % (the AP of a random score)")
    if rep.get("miou") is not None:
        bits.append(f"segmenter mIoU {100 * rep['miou']:.1f}")
    if rep.get("eval_size"):
        bits.append(f"scored at {rep['eval_size'][0]}x{rep['eval_size'][1]}")
    if rep.get("fpr_rule"):
        bits.append(f"FPR95 rule {rep['fpr_rule']}")
    if rep.get("skipped"):
        bits.append(f"{len(rep['skipped'])} files skipped (listed in metrics.json)")
    if rep.get("ignored"):
        bits.append(f"{len(rep['ignored'])} folder entries not images")
    if rep.get("components"):
        bits.append(f"components: SMIYC {rep['components']['preset']} track at each method's best-F1 threshold")
    return '<p class="note">' + esc("; ".join(bits)) + ".</p>"


def eval_table(rep: Mapping[str, Any], gallery: Gallery | None = None) -> str:
    """One dataset's metrics (in %) per method, with the mean per-image AP when a gallery has it."""
    cols = [("method", "text", ""), ("AP", "pct", "max"), ("FPR95", "pct", "min"), ("AUROC", "pct", "max")]
    keys = ["ap", "fpr95", "auroc"]
    if rep.get("components"):
        cols += [("sIoU", "pct", "max"), ("PPV", "pct", "max"), ("mean F1", "pct", "max")]
        keys += ["siou", "ppv", "f1_mean"]
    if gallery is not None:
        cols.append(("mean per-image AP", "pct", "max"))
    rows = []
    for r in rep.get("results", []):
        row = [r["method"]] + [r.get(k) for k in keys]
        if gallery is not None:
            row.append(gallery.mean_ap(r["method"]))
        rows.append(row)
    return _dataset_note(rep) + table_html(cols, rows) + false_alarm_table(rep)


def false_alarm_table(rep: Mapping[str, Any]) -> str:
    """Per method, the inlier classes most over-represented among its false positives at its pixel best-F1
    threshold (:mod:`synboost.metrics.attribution`); empty where the data has no semantic labels."""
    rows = [[r["method"], t["class"], t["fp_share"], t["inlier_share"], t["ratio"]]
            for r in rep.get("results", []) for t in r.get("false_positive_classes", {}).get("top", [])]
    if not rows:
        return ""
    cols = [("method", "text", ""), ("inlier class", "text", ""), ("share of the false positives (%)", "pct", ""),
            ("share of the inlier pixels (%)", "pct", ""), ("over-represented (x)", "num", "")]
    return ('<p class="note">Where the false positives fall: at each method\'s pixel best-F1 threshold, the inlier '
            'classes most over-represented among them (a class the method takes for an anomaly).</p>'
            + table_html(cols, rows))


def _per_dataset(names: Sequence[str], body) -> str:
    return "\n".join((f"<h3>{esc(n)}</h3>" if len(names) > 1 else "") + body(n) for n in names)


def _examples(galleries: Mapping[str, Gallery], names: Sequence[str]) -> str:
    return _per_dataset(names, lambda n: galleries[n].html(f"gallery-{_slug(n)}") if n in galleries else
                        '<p class="note">No example kept.</p>')


def _common(names, tables, curves, galleries) -> list[tuple[str, str, str]]:
    return [("metrics", "Metrics", tables),
            ("curves", "PR and ROC curves", _per_dataset(names, lambda n: curves_html(curves.get(n, {})))),
            ("examples", "Per-image examples", _examples(galleries, names))]


# ------------------------------------------------------------------------------------------------ the jobs


def eval_config(detector, methods: Sequence[str], **fields) -> dict:
    """What an evaluation ran: the detector (its class, or the pipeline file), the methods and ``fields``."""
    det = str(detector) if isinstance(detector, (str, os.PathLike)) else type(detector).__name__
    info = {k: getattr(detector, k) for k in ("device", "batch_size", "input_size", "amp")
            if not isinstance(detector, (str, os.PathLike)) and hasattr(detector, k)}
    return {"detector": det, **{k: str(v) for k, v in info.items()}, "methods": list(methods), **fields}


def write_eval_report(out: str | os.PathLike, reports: Sequence[Mapping[str, Any]],
                      curves: Mapping[str, Mapping[str, Any]], galleries: Mapping[str, Gallery],
                      config: Mapping[str, Any] | None = None, timings: Mapping[str, float] | None = None,
                      title: str = "synboost eval", extra: Sequence[tuple[str, str, str]] = ()) -> Path:
    """``out/report.html`` of an evaluation over one or more datasets (``reports``: :func:`evaluate`'s, with
    ``curves`` and ``galleries`` by dataset name); ``extra`` sections go before the config."""
    names = [r["dataset"] for r in reports]
    tables = _per_dataset(names, lambda n: eval_table(next(r for r in reports if r["dataset"] == n),
                                                      galleries.get(n)))
    if timings is None:
        timings = {f"evaluation of {r['dataset']}": r.get("seconds") for r in reports}
    sections = _common(names, tables, curves, galleries) + list(extra)
    sections.append(("config", "Config and timings", config_html(config, timings)))
    methods = list(dict.fromkeys(x["method"] for r in reports for x in r.get("results", [])))
    sub = f"{len(methods)} methods on {', '.join(names)}"
    return write_html(Path(out) / REPORT_NAME, title, sections, sub)


def write_compare_report(out: str | os.PathLike, table: Mapping[str, Any], curves: Mapping[str, Mapping[str, Any]],
                         galleries: Mapping[str, Gallery], config: Mapping[str, Any] | None = None,
                         timings: Mapping[str, float] | None = None) -> Path:
    """``out/report.html`` of ``synboost compare``: the papers' table (one row per method), curves and examples
    per dataset."""
    names = list(table["datasets"])
    cols = [("method", "text", ""), ("re-training", "text", ""), ("extra network", "text", ""),
            ("outlier data", "text", "")]
    for n in names:
        cols += [(f"{n} AP", "pct", "max"), (f"{n} FPR95", "pct", "min"), (f"{n} AUROC", "pct", "max")]
    cols.append(("mIoU", "pct", "max"))
    rows = []
    for r in table["rows"]:
        cells, miou = [r["label"], r["retraining"], r["extra_network"], r["outlier_data"]], None
        for n in names:
            d = r["datasets"].get(n, {})
            cells += [d.get("ap"), d.get("fpr95"), d.get("auroc")]
            miou = miou if miou is not None else d.get("miou")
        rows.append(cells + [miou])
    ratios = [f"{n}: {100 * d['anomaly_pixel_ratio']:.2f} %" for n in names for r in table["rows"][:1]
              for d in [r["datasets"].get(n, {})] if d.get("anomaly_pixel_ratio")]
    note = ("AP / FPR95 / AUROC in %; mIoU of the segmenter each row uses, on the first dataset with semantic "
            "labels." + (" Anomaly pixel ratio (the AP of a random score): " + ", ".join(ratios) + "."
                         if ratios else ""))
    tables = table_html(cols, rows) + f'<p class="note">{esc(note)}</p>'
    sections = _common(names, tables, curves, galleries)
    sections.append(("config", "Config and timings", config_html(config, timings or {"evaluation": table.get(
        "seconds")})))
    return write_html(Path(out) / REPORT_NAME, "synboost compare", sections,
                      f"{len(rows)} methods on {', '.join(names)}")


def write_ablation_report(out: str | os.PathLike, report: Mapping[str, Any], curves: Mapping[str, Any],
                          gallery: Gallery | None, config: Mapping[str, Any] | None = None,
                          timings: Mapping[str, float] | None = None,
                          stages: Mapping[str, str | os.PathLike] | None = None) -> Path:
    """``out/report.html`` of ``synboost ablate``: the variants' table (AP against the full configuration), their
    curves and examples (the variants are the "methods"), the training curves of each network it trained
    (``stages``: variant -> run folder)."""
    full = next((r for r in report["rows"] if r["variant"] == "full"), None)
    cols = [("variant", "text", ""), ("removes", "text", ""), ("AP", "pct", "max"), ("FPR95", "pct", "min"),
            ("AUROC", "pct", "max"), ("AP vs full", "pct", "")]
    if gallery is not None:
        cols.append(("mean per-image AP", "pct", "max"))
    rows = []
    for r in report["rows"]:
        row = [r["variant"], r["removes"], r["ap"], r["fpr95"], r["auroc"],
               None if full is None or r is full else r["ap"] - full["ap"]]
        rows.append(row + ([gallery.mean_ap(r["variant"])] if gallery is not None else []))
    name = report["dataset"]
    tables = (f'<p class="note">{esc(report["images"])} images of the {esc(name)}; each variant removes one '
              "thing from the main configuration.</p>" + table_html(cols, rows))
    sections = _common([name], tables, {name: curves}, {name: gallery} if gallery is not None else {})
    if stages:
        sections.append(("training", "Training", training_html(stages)))
    sections.append(("config", "Config and timings", config_html(config, timings or {"total": report.get(
        "seconds")})))
    return write_html(Path(out) / REPORT_NAME, "synboost ablate", sections, f"{len(rows)} variants on {name}")


def training_html(stages: Mapping[str, str | os.PathLike], best: Mapping[str, dict] | None = None,
                  samples: str | os.PathLike | None = None) -> str:
    """The training section: each stage's best validation (``best``), loss and validation curves (from its
    folder's ``train_log.jsonl``) and the synthesis sample grids (``samples``: a ``samples/`` folder)."""
    parts = []
    if best:
        parts.append(table_html([("stage", "text", ""), ("best epoch", "num", ""), ("its validation", "text", "")],
                                best_table_rows(best), sortable=False))
    parts += [stage_charts(name, folder) for name, folder in stages.items()]
    if samples is not None:
        parts.append("<h3>synthesis samples</h3>" + sample_grids(samples))
    return "\n".join(parts)


def write_demo_report(out: str | os.PathLike, summary: Mapping[str, Any], curves: Mapping[str, Any],
                      gallery: Gallery | None, stages: Mapping[str, str | os.PathLike],
                      samples: str | os.PathLike | None = None) -> Path:
    """``out/report.html`` of ``synboost demo``: the evaluation (table, curves, examples), the training of every
    stage, the config and the time of each step. ``summary``: the demo's ``report.json`` content."""
    rep = summary["report"]
    name = rep["dataset"]
    extra = [("training", "Training", training_html(stages, summary.get("stages"), samples))]
    return write_eval_report(out, [rep], {name: curves}, {name: gallery} if gallery is not None else {},
                             summary.get("config"), summary.get("seconds"), "synboost demo", extra)
