"""`report.html`: per-image AP and the example gallery, the page every eval / compare / ablate / demo run writes
(self-contained, sortable, examples ordered by each method's per-image AP), and the page in a real headless
browser (chromium): no script error, every image decodes, the method switch changes the shown image."""
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from synboost.jobs.evaluate import evaluate, evaluate_many
from synboost.jobs.report import (
    Gallery,
    per_image_ap,
    write_ablation_report,
    write_compare_report,
    write_demo_report,
)
from synboost.metrics import pixel_metrics


class ColourDetector:
    """Deterministic stand-in for a detector: 'saturation' (max - min channel; the synthetic world's anomalies
    are neon objects), 'brightness' and 'darkness'."""

    method = "saturation"
    methods = ("saturation", "brightness", "darkness")
    batch_size = 4

    def run(self, images, methods):
        out = []
        for im in images:
            f = im.astype(np.float32) / 255.0
            maps = {"saturation": f.max(2) - f.min(2), "brightness": f.mean(2), "darkness": 1.0 - f.mean(2)}
            out.append({**{m: maps[m] for m in methods}, "segmentation": np.zeros(im.shape[:2], np.uint8)})
        return out


class ListDataset:
    """Scenes in memory: a noisy image whose anomaly (label 1) is brighter by a per-image margin."""

    def __init__(self, n=30, seed=0, h=48, w=64, step=4):
        rng = np.random.default_rng(seed)
        self.items = []
        for i in range(n):
            img = rng.integers(0, 140, (h, w, 3)).astype(np.uint8)
            lab = np.zeros((h, w), np.uint8)
            y, x = rng.integers(0, h - 12), rng.integers(0, w - 12)
            lab[y:y + 12, x:x + 12] = 1
            img[lab == 1] = np.clip(img[lab == 1].astype(int) + step * i, 0, 255)  # image i: margin step x i
            lab[-4:] = 255
            self.items.append((f"scene{i:02d}", img, lab))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        name, img, lab = self.items[i]
        return {"name": name, "image": img, "anomaly": lab}


def external_refs(text: str) -> list[str]:
    """Every src / href that is not a data: URI or an in-page anchor, and any url(...) in CSS."""
    refs = [r for r in re.findall(r'(?:src|href)="([^"]*)"', text) if not r.startswith(("data:", "#"))]
    return refs + re.findall(r"url\((?!#)[^)]*\)", text)


def cards(text: str) -> list[tuple[str, list]]:
    """(image name, per-image APs) of each card, in page order."""
    return [(html.unescape(name), json.loads(html.unescape(ap))) for ap, name in
            re.findall(r'<figure class="card"[^>]*data-ap="([^"]*)">.*?<b>([^<]*)</b>', text)]


# ---------------------------------------------------------------------------------------------- per-image AP


def test_per_image_ap_is_the_metrics_ap():
    rng = np.random.default_rng(0)
    labels = (rng.random(5000) < 0.1).astype(np.uint8)
    scores = rng.normal(size=5000) + labels
    assert per_image_ap(scores, labels, None) == pytest.approx(pixel_metrics(scores, labels).ap, abs=1e-12)
    big_l = (rng.random(1_000_000) < 0.02).astype(np.uint8)
    big_s = rng.normal(size=1_000_000) + 1.5 * big_l
    exact = pixel_metrics(big_s, big_l).ap
    est = per_image_ap(big_s, big_l)  # every 8th pixel: the AP at a lower resolution
    assert est == pytest.approx(exact, abs=0.01) and est != exact
    one = np.zeros(1_000_000, np.uint8)
    one[3] = 1  # a sample of every 8th pixel misses it: then all pixels count
    assert per_image_ap(big_s, one) == pixel_metrics(big_s, one).ap
    assert np.isnan(per_image_ap(scores, np.zeros(5000, np.uint8)))


def test_gallery_keeps_each_methods_worst_and_drops_the_rest():
    ds = ListDataset(n=12, step=10)
    g = Gallery(keep=3)
    for i in range(len(ds)):
        s = ds[i]
        valid = s["anomaly"] <= 1
        out = ColourDetector().run([s["image"]], ["brightness", "darkness"])[0]
        maps = {m: out[m] for m in ("brightness", "darkness")}
        g.add(s["name"], s["image"], s["anomaly"], maps, s["anomaly"][valid], {m: v[valid] for m, v in maps.items()})
    for m in ("brightness", "darkness"):
        worst = sorted(g.ap[m], key=g.ap[m].get)[:3]
        assert set(worst) <= set(g.views), m
    # the margin grows with the index: brightness fails most on the first scenes, darkness on the last
    assert sorted(g.ap["brightness"], key=g.ap["brightness"].get)[:3] == ["scene00", "scene01", "scene02"]
    assert len(g.views) == 6  # the others were rendered when they entered a heap, and dropped when they left it
    assert set(g.views["scene00"]["maps"]) == {"brightness", "darkness"}
    assert g.selected()[:2] == ["scene00", sorted(g.ap["darkness"], key=g.ap["darkness"].get)[0]]
    other = Gallery(keep=3).merge(g, {"darkness": ["dark A", "dark B"]})
    assert other.methods == ["brightness", "dark A", "dark B"] and other.ap["dark B"] == g.ap["darkness"]
    assert other.views["scene00"]["maps"]["dark A"] == g.views["scene00"]["maps"]["darkness"]


# ---------------------------------------------------------------------------------------------- the pages


def test_eval_report_is_self_contained_and_ordered(tmp_path):
    ds = ListDataset(n=30)
    out = tmp_path / "eval"
    rep = evaluate(ColourDetector(), ds, ["brightness", "darkness"], out, dataset_name="toy", progress=False)
    text = (out / "report.html").read_text()
    assert external_refs(text) == [] and "default-src 'none'" in text
    assert text.count("<svg") == 2 and text.count("<polyline") >= 4  # PR + ROC, a line per method
    for r in rep["results"]:
        assert f'data-v="{float(r["ap"])!r}"' in text  # the table's raw values, for sorting
    shown = cards(text)
    assert len(shown) == 24  # capped; 30 scored
    aps = [a[0] for _, a in shown]
    assert aps == sorted(aps)  # served in the first method's order, worst first
    by_name = dict(shown)
    for i in (0, 5, 29):  # per-image AP on the card = the metrics' AP of that image alone
        s = ds[i]
        if s["name"] in by_name:
            valid = s["anomaly"] <= 1
            g = (s["image"].astype(np.float32) / 255.0).mean(2)
            assert by_name[s["name"]][0] == pytest.approx(pixel_metrics(g[valid], s["anomaly"][valid]).ap, abs=1e-6)
    assert text.count('data-view="truth"') == 25 and text.count("<img") == 24 * 4
    assert 'id="config"' in text and "fpr_rule: first_ge" in text and "evaluation of toy" in text
    assert 20_000 < (out / "report.html").stat().st_size < 1_500_000


def test_evaluate_many_writes_one_report(tmp_path, tiny_world):
    out = tmp_path / "many"
    spec = f"synthetic:{tiny_world}"
    evaluate_many(ColourDetector(), [spec, spec], ["saturation", "brightness"], out, echo=lambda _: None,
                  progress=False)
    text = (out / "report.html").read_text()
    assert not list(out.glob("*/report.html"))  # one page per run
    assert text.count('<div class="gallery"') == 2 and text.count("<h3>") >= 6  # two datasets, three sections
    assert (out / "summary.md").is_file() and external_refs(text) == []


def test_compare_report(tmp_path, tiny_world, stages):
    from synboost.detectors.detector import write_pipeline_file
    from synboost.jobs.compare import compare, parse_rows

    seg = str(stages / "seg.safetensors")
    p = write_pipeline_file(tmp_path / "p.yaml", method="entropy", segmenter=seg, device="cpu")
    q = write_pipeline_file(tmp_path / "q.yaml", method="energy", segmenter=seg, device="cpu")
    table = compare(parse_rows([f"{p}:msp,entropy", f"{q}:energy"]), [f"synthetic:{tiny_world}"], tmp_path / "cmp",
                    progress=False)
    text = (tmp_path / "cmp" / "report.html").read_text()
    for r in table["rows"]:
        assert f"<td>{html.escape(r['label'])}</td>" in text
    assert "synthetic AP" in text and "re-training" in text and "on synthetic" in text  # table, timings
    methods = json.loads(html.unescape(re.search(r'data-methods="([^"]*)"', text).group(1)))
    assert methods == ["MSP (softmax)", "softmax entropy", "energy"]  # two detectors joined by image name
    assert 0 < len(cards(text)) <= 24 and external_refs(text) == []


def fake_stage(folder: Path, epochs=3, steps=4, samples=False) -> Path:
    folder.mkdir(parents=True)
    rows = []
    for e in range(1, epochs + 1):
        rows += [{"epoch": e, "step": s, "loss": 2.0 / (e + s / steps), "lr": 0.01, "g_gan": 0.5} for s in
                 range(1, steps + 1)]
        rows.append({"epoch": e, "train_loss": 2.0 / e, "seconds": 1.5, "val_score": 0.1 * e, "val_miou": 0.1 * e,
                     "val_loss": 1.0 / e})
    (folder / "train_log.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n{not json\n")
    if samples:
        (folder / "samples").mkdir()
        for k in (10, 20, 30):
            grid = np.full((64, 96, 3), 4 * k, np.uint8)
            cv2.imwrite(str(folder / "samples" / f"step{k:07d}.png"), grid)
    return folder


def demo_like_report(tmp_path, ds=None, name="toy anomaly test") -> Path:
    """A demo's report.html from a tiny evaluation (of ``ds``), fake stage folders and sample grids."""
    ds = ds if ds is not None else ListDataset(n=30)
    gallery, curves = Gallery(), {}
    rep = evaluate(ColourDetector(), ds, ["saturation", "brightness", "darkness"], tmp_path / "run" / "eval",
                   dataset_name=name, progress=False, curves=curves, gallery=gallery, html=False)
    st = {"segmentation": fake_stage(tmp_path / "seg"), "synthesis": fake_stage(tmp_path / "syn", samples=True)}
    summary = {"report": rep, "stages": {"segmentation": {"score": 0.3, "miou": 0.3, "epoch": 3}},
               "seconds": {"world": 1.0, "segmentation": 2.0, "evaluation": rep["seconds"]}, "config": {"out": "x"}}
    return write_demo_report(tmp_path / "run", summary, curves, gallery, st, tmp_path / "syn" / "samples")


def test_demo_and_ablation_reports(tmp_path):
    text = demo_like_report(tmp_path).read_text()
    assert not (tmp_path / "run" / "eval" / "report.html").exists()
    assert "segmentation: training loss" in text and "segmentation: validation miou" in text
    assert "validation score" not in text  # val_score repeats val_miou
    assert "synthesis: loss terms" in text and "3 of 3 grids" in text and "best epoch" in text
    assert text.count("<svg") == 2 + 2 * 4 and external_refs(text) == []
    ds = ListDataset(n=10)
    gallery, curves, rows = Gallery(), {}, []
    for variant, method in (("full", "brightness"), ("no_thing", "darkness")):
        g, c = Gallery(), {}
        r = evaluate(ColourDetector(), ds, [method], None, progress=False, curves=c, gallery=g)["results"][0]
        gallery.merge(g, {method: [variant]})
        curves[variant] = c[method]
        rows.append({"variant": variant, "removes": "x", "ap": r["ap"], "fpr95": r["fpr95"], "auroc": r["auroc"]})
    report = {"dataset": "toy", "images": 10, "rows": rows, "seconds": 1.0}
    text = write_ablation_report(tmp_path / "abl", report, curves, gallery, {"variants": ["full", "no_thing"]}
                                 ).read_text()
    assert "AP vs full" in text and f'data-v="{rows[1]["ap"] - rows[0]["ap"]!r}"' in text
    assert json.loads(html.unescape(re.search(r'data-methods="([^"]*)"', text).group(1))) == ["full", "no_thing"]


# ---------------------------------------------------------------------------------------------- in a browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nice", "-n", "19", CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)


def selftest(page: Path, tmp_path: Path) -> tuple[dict, list[str]]:
    """The page's own check (``#selftest``) after load, read from the dumped DOM, and the console lines."""
    r = chromium(page, tmp_path / "profile", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                 "--dump-dom", page.resolve().as_uri() + "#selftest")
    found = re.search(r'<pre id="selftest">([^<]*)</pre>', r.stdout)
    assert found, f"no self-check result in the dumped DOM (exit {r.returncode}): {r.stderr[-1500:]}"
    console = [line for line in r.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    return json.loads(html.unescape(found.group(1))), console


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it: apt-get install chromium)")
def test_report_in_headless_chromium(tmp_path, tiny_world):
    from synboost.data.kinds import open_dataset

    page = demo_like_report(tmp_path, open_dataset(f"synthetic:{tiny_world}"), "synthetic anomaly test")
    text = page.read_text()
    result, console = selftest(page, tmp_path)
    assert console == [] and result["errors"] == []
    n_cards = len(cards(text))
    assert n_cards >= 10 and result["images"] == n_cards * 5 + 3  # each card's 5 views, the 3 sample grids
    assert result["broken"] == 0
    assert result["galleries"] == 1 and result["switch_changed"] is True  # each view button changed the image
    assert result["order_ok"] is True and result["sort_ok"] is True
    # the check itself sees a broken image and a script error
    bad = tmp_path / "bad.html"
    first = re.search(r'src="data:image/jpeg;base64,([^"]{40})', text).group(1)
    bad.write_text(text.replace(first, "A" * 40, 1).replace("</body>", "<script>undefinedThing();</script></body>"))
    result, console = selftest(bad, tmp_path)
    assert result["broken"] == 1 and any("undefinedThing" in e for e in result["errors"])
    assert any("Uncaught" in line and "undefinedThing" in line for line in console)
    # a compare page joins two runs: each card lacks the other run's view, and the switch still changes the image
    gal, curves, rows, ds = Gallery(keep=12), {}, [], ListDataset(n=30)
    for label, m in (("A", "brightness"), ("B", "darkness")):
        g, c = Gallery(keep=6), {}
        r = evaluate(ColourDetector(), ds, [m], None, dataset_name="toy", progress=False, curves=c, gallery=g)
        gal.merge(g, {m: [label]})
        curves[label] = c[m]
        rows.append({"label": label, "retraining": "no", "extra_network": "no", "outlier_data": "no",
                     "datasets": {"toy": {k: r["results"][0][k] for k in ("ap", "fpr95", "auroc")}}})
    merged = write_compare_report(tmp_path / "cmp", {"datasets": ["toy"], "rows": rows}, {"toy": curves},
                                  {"toy": gal})
    assert merged.read_text().count("not kept") == 12
    result, console = selftest(merged, tmp_path)
    assert console == [] and result["errors"] == [] and result["broken"] == 0 and result["images"] == 12 * 3
    assert result["switch_changed"] is True and result["order_ok"] is True and result["sort_ok"] is True
    shot = tmp_path / "report.png"
    r = chromium(page, tmp_path / "profile2", "--window-size=1280,2000", "--virtual-time-budget=5000",
                 f"--screenshot={shot}", page.resolve().as_uri())
    assert shot.is_file(), r.stderr[-1500:]
    im = cv2.imread(str(shot))
    assert im.shape[:2] == (2000, 1280) and im.std() > 10  # a page was drawn, not a blank
    if os.environ.get("SYNBOOST_SCREENSHOT_DIR"):
        dest = Path(os.environ["SYNBOOST_SCREENSHOT_DIR"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, dest / "report.png")
