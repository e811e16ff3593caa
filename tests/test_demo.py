"""The main job end to end on a reduced demo config: SynBoost must beat every post-hoc baseline of the same
segmenter in AP and FPR95 on the held-out anomaly scenes (the paper's claim, on the synthetic world), and PEBAL
must beat the plain energy of the segmenter it fine-tunes (PEBAL's claim).

This is the suite's long test (about 5 minutes on 2 cores): it trains all three stages for real."""
import json

from synboost.config import DemoConfig, load_config
from synboost.demo import run_demo

POSTHOC = ("msp", "maxlogit", "entropy", "energy", "sml")


def test_synboost_beats_every_posthoc_baseline(tmp_path):
    cfg = load_config(DemoConfig, None, [f"out={tmp_path / 'demo'}", "world.n=260", "segmentation.train.epochs=10",
                                         "synthesis.train.epochs=3", "dissimilarity.train.epochs=6",
                                         "pebal.train.epochs=4"])
    summary = run_demo(cfg)
    rows = {r["method"]: r for r in summary["report"]["results"]}
    ratio = summary["report"]["anomaly_pixel_ratio"]
    sb = rows["synboost"]
    for m in POSTHOC:
        assert sb["ap"] > rows[m]["ap"], (m, sb, rows[m])
        assert sb["fpr95"] < rows[m]["fpr95"], (m, sb, rows[m])
    assert sb["ap"] > 2 * ratio
    assert rows["pebal"]["ap"] > 1.5 * rows["energy"]["ap"], (rows["pebal"], rows["energy"])
    assert rows["pebal"]["fpr95"] < rows["energy"]["fpr95"], (rows["pebal"], rows["energy"])
    out = tmp_path / "demo"
    assert json.loads((out / "report.json").read_text())["report"]["results"]
    assert (out / "eval" / "curves.png").is_file() and (out / "pipeline.yaml").is_file()
    assert list((out / "synthesis" / "samples").glob("*.png"))
    # a second run reuses every finished stage
    again = run_demo(load_config(DemoConfig, None, [f"out={out}", "world.n=260", "segmentation.train.epochs=10",
                                                    "synthesis.train.epochs=3", "dissimilarity.train.epochs=6",
                                                    "pebal.train.epochs=4"]))
    assert again["seconds"]["segmentation"] < 5 and again["seconds"]["dissimilarity"] < 5
    assert again["seconds"]["pebal"] < 5
    assert again["report"]["results"] == summary["report"]["results"]
