"""The main job end to end on a reduced demo config: SynBoost must beat every post-hoc baseline of the same
segmenter in AP and FPR95 on the held-out anomaly scenes (the paper's claim, on the synthetic world), and PEBAL
must beat the plain energy of the segmenter it fine-tunes (PEBAL's claim).

The comparison table's one command then reuses the demo's stages and adds every other method's row.

These are the suite's long tests (about 5 + 3 minutes on 2 cores): they train every stage for real."""
import json

import pytest

from synboost.config import CompareConfig, DemoConfig, load_config
from synboost.jobs.demo import run_demo

POSTHOC = ("msp", "maxlogit", "entropy", "energy", "sml")
DEMO = ["world.n=260", "segmentation.train.epochs=10", "synthesis.train.epochs=3", "dissimilarity.train.epochs=6",
        "dissimilarity.data.variants=2",
        "pebal.train.epochs=4"]


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    return out, run_demo(load_config(DemoConfig, None, [f"out={out}", *DEMO]))


def test_synboost_beats_every_posthoc_baseline(demo_out):
    out, summary = demo_out
    rows = {r["method"]: r for r in summary["report"]["results"]}
    ratio = summary["report"]["anomaly_pixel_ratio"]
    sb = rows["synboost"]
    for m in POSTHOC:
        assert sb["ap"] > rows[m]["ap"], (m, sb, rows[m])
        assert sb["fpr95"] < rows[m]["fpr95"], (m, sb, rows[m])
    assert sb["ap"] > 2 * ratio
    assert rows["pebal"]["ap"] > 1.5 * rows["energy"]["ap"], (rows["pebal"], rows["energy"])
    assert rows["pebal"]["fpr95"] < rows["energy"]["fpr95"], (rows["pebal"], rows["energy"])
    assert json.loads((out / "report.json").read_text())["report"]["results"]
    # each stage's training precision, as its engine chose it on this CPU, in the summary and report.md
    import torch

    from synboost.runtime import cpu_bf16_supported

    want = "bf16" if torch.cuda.is_available() or cpu_bf16_supported() else "fp32"
    assert summary["precision"] == {k: want for k in ("segmentation", "synthesis", "dissimilarity", "pebal")}
    assert f"training precision: segmentation {want}, synthesis {want}" in (out / "report.md").read_text()
    assert (out / "eval" / "curves.png").is_file() and (out / "pipeline.yaml").is_file()
    assert list((out / "synthesis" / "samples").glob("*.png"))
    # a second run reuses every finished stage
    again = run_demo(load_config(DemoConfig, None, [f"out={out}", *DEMO]))
    assert again["seconds"]["segmentation"] < 5 and again["seconds"]["dissimilarity"] < 5
    assert again["seconds"]["pebal"] < 5
    assert again["report"]["results"] == summary["report"]["results"]


def test_compare_table_in_one_command_reuses_the_demo(demo_out, tmp_path):
    """`synboost compare --config configs/compare/synthetic.yaml` on the demo above (shortened training for the
    rows it adds): every method of the table is a row, each scored on the same scenes; the re-trained segmenter
    reports its own mIoU; the markdown is the JSON's table."""
    from synboost.jobs.compare import METHOD_INFO, compare_table, run_compare

    out, summary = demo_out
    cfg = load_config(CompareConfig, "configs/compare/synthetic.yaml", [
        f"out={tmp_path / 'compare'}", f"base.out={out}", *(f"base.{o}" for o in DEMO), "resynthesis_epochs=1",
        "density.model.bank_size=4000", "density.data.mix_images=40", "outlier_methods=[void]",
        "outlier.void.train.epochs=2", "outlier.void.train.steps_per_epoch=12"])
    table = run_compare(cfg)
    rows = {r["label"]: r for r in table["rows"]}
    assert set(rows) == {info[3] for m, info in METHOD_INFO.items() if m not in ("outlier_head", "dirichlet")}

    def score(m):
        return rows[METHOD_INFO[m][3]]["datasets"]["synthetic"]

    ratio = score("energy")["anomaly_pixel_ratio"]
    for m in ("synboost", "pebal", "knn", "void"):  # clear winners even with the shortened training
        assert score(m)["ap"] > ratio, (m, score(m))
    # the demo's stages were reused (its report's numbers), the re-trained segmenter is another one
    demo = {r["method"]: r for r in summary["report"]["results"]}
    for m in ("energy", "synboost", "pebal"):
        assert score(m)["ap"] == pytest.approx(demo[m]["ap"], abs=2e-3), m
    assert rows[METHOD_INFO["void"][3]]["retraining"] == "yes" and rows[METHOD_INFO["energy"][3]]["retraining"] == "no"
    assert score("void")["miou"] != score("energy")["miou"]
    assert (tmp_path / "compare" / "compare.md").read_text().startswith(compare_table(table))
    assert (tmp_path / "compare" / "curves_synthetic.png").is_file()
