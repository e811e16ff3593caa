"""`synboost compare`: rows from pipeline files, the papers' columns, numbers equal to `evaluate`'s."""
import json

import pytest

from synboost.errors import ConfigError
from synboost.jobs.compare import compare, compare_table, parse_rows


def test_row_specs():
    rows = parse_rows(["p.yaml", "a/q.yaml:msp,energy", "Image Resynthesis=r.yaml:dissimilarity",
                       "resynthesis=r2.yaml:dissimilarity"])
    assert [(r.label, r.pipeline, r.method) for r in rows] == [
        ("", "p.yaml", ""), ("MSP (softmax)", "a/q.yaml", "msp"), ("energy", "a/q.yaml", "energy"),
        ("Image Resynthesis", "r.yaml", "dissimilarity"), ("Image Resynthesis", "r2.yaml", "dissimilarity")]
    assert rows[1].info == ("no", "no", "no") and rows[4].info == ("no", "yes", "no")
    with pytest.raises(ConfigError, match="a label names one row"):
        parse_rows(["x=p.yaml:msp,energy"])


def test_table_rows_equal_evaluate(tiny_world, tiny_segmenter, tmp_path):
    from synboost.data.kinds import open_dataset
    from synboost.detectors.detector import load_pipeline
    from synboost.jobs.evaluate import evaluate

    pipe = tiny_segmenter["pipeline"]  # method entropy
    rows = parse_rows([pipe, f"{pipe}:msp,energy", f"{pipe}:sml"])
    table = compare(rows, [f"synthetic:{tiny_world}"], tmp_path / "cmp", progress=False)
    labels = [r["label"] for r in table["rows"]]
    assert labels == ["softmax entropy", "MSP (softmax)", "energy", "SML"]
    direct = evaluate(load_pipeline(pipe), open_dataset(f"synthetic:{tiny_world}"), ["entropy", "msp", "sml"],
                      progress=False)
    by = {r["method"]: r for r in direct["results"]}
    for r in table["rows"]:
        if r["method"] in by:
            d = r["datasets"][table["datasets"][0]]
            assert d["ap"] == pytest.approx(by[r["method"]]["ap"]) and d["miou"] == pytest.approx(direct["miou"])
            # where the false positives fall: the same counts as evaluate's, named in compare.md
            assert d["false_positive_classes"] == by[r["method"]]["false_positive_classes"]
            assert sum(d["false_positive_classes"]["fp"]) > 0
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert md.splitlines()[0].startswith("| method | re-training | extra network | outlier data |")
    assert "| SML | no | no | no |" in md and "mIoU" in md
    assert "- SML: " in md and "false positives at each row's pixel best-F1 threshold" in md
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"][0]["retraining"] == "no"
    assert (tmp_path / "cmp" / f"curves_{table['datasets'][0]}.png").stat().st_size > 1000
    assert compare_table(table) == md
