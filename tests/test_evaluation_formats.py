"""`evaluate` beyond pixel metrics: SMIYC component metrics (equal to ComponentMetrics on the same maps, bounded
memory), submission files from `eval`, the combined table over several benchmarks, and the reproduction configs."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from synboost.cli import main
from synboost.config import ReproduceConfig, load_config
from synboost.data.kinds import open_dataset
from synboost.detectors.detector import read_pipeline
from synboost.jobs.evaluate import combined_table, component_preset, evaluate, evaluate_many
from synboost.jobs.reproduce import METRIC_KEYS
from synboost.jobs.submission import read_smiyc
from synboost.metrics import PRESETS, ComponentMetrics, pixel_curve

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "reproduce").glob("*.yaml"))


class BrightnessDetector:
    """Deterministic stand-in for a pipeline detector: 'bright' = grey level, 'dark' = 1 - grey level."""

    method = "bright"
    methods = ("bright", "dark")
    batch_size = 2

    def run(self, images, methods):
        out = []
        for im in images:
            g = im.astype(np.float32).mean(axis=2) / 255.0
            maps = {"bright": g, "dark": 1.0 - g}
            out.append({**{m: maps[m] for m in methods}, "segmentation": np.zeros(im.shape[:2], np.uint8)})
        return out


def scene(rng, h=96, w=128):
    """A dim noisy image with bright anomalies (one large, one below the anomaly-track GT size), a bright false
    alarm, a void band at the bottom and void inside one anomaly; labels 0 / 1 / 255."""
    img = rng.integers(0, 110, (h, w, 3)).astype(np.uint8)
    lab = np.zeros((h, w), np.uint8)
    y, x = rng.integers(5, 30), rng.integers(5, 60)
    lab[y:y + 30, x:x + 34] = 1  # 1020 px
    lab[y + 12:y + 16, x + 10:x + 14] = 255  # a hole inside the anomaly
    lab[70:78, 110:118] = 1  # 64 px: voided under the anomaly track, kept under the obstacle track
    img[lab == 1] = rng.integers(120, 256, (int((lab == 1).sum()), 3))
    img[40:66, 100:124] = rng.integers(140, 256, (26, 24, 3))  # a false alarm of 624 px
    img[y + 28:y + 34, x:x + 20] = 200  # prediction spilling out of the anomaly
    lab[86:, :] = 255
    img[88:, :40] = 255  # bright but void
    return img, lab


def write_png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), arr[..., ::-1] if arr.ndim == 3 else arr)


def make_smiyc(root, track="anomaly", labelled=3, unlabelled=2, seed=0):
    folder = root / {"anomaly": "dataset_AnomalyTrack", "obstacle": "dataset_ObstacleTrack"}[track]
    rng = np.random.default_rng(seed)
    for i in range(labelled + unlabelled):
        img, lab = scene(rng)
        write_png(folder / "images" / f"frame{i:02d}.png", img)
        if i < labelled:
            write_png(folder / "labels_masks" / f"frame{i:02d}_labels_semantic.png", lab)
    return root


def make_fishyscapes(root, n=3, seed=1, variants=("LostAndFound", "Static")):
    rng = np.random.default_rng(seed)
    for variant in variants:
        for i in range(n):
            img, lab = scene(rng)
            write_png(root / "fishyscapes" / variant / "original" / f"{i}.png", img)
            write_png(root / "fishyscapes" / variant / "labels" / f"{i}.png", lab)
    return root


def direct_components(det, dataset, method, preset):
    """ComponentMetrics computed straight on the detector's full maps, threshold from the exact pixel curve."""
    maps, labels = [], []
    for i in range(len(dataset)):
        s = dataset[i]
        if "anomaly" in s:
            maps.append(det.run([s["image"]], [method])[0][method])
            labels.append(s["anomaly"])
    valid = [lab <= 1 for lab in labels]
    curve = pixel_curve([m[v] for m, v in zip(maps, valid)], [lab[v] for lab, v in zip(labels, valid)])
    threshold, _ = curve.best_f1_threshold()
    acc = ComponentMetrics(threshold, preset)
    for m, lab in zip(maps, labels):
        acc.update(m, lab)
    return threshold, acc.compute()


@pytest.mark.parametrize("track", ["anomaly", "obstacle"])
def test_component_metrics_equal_componentmetrics_on_the_maps(tmp_path, track):
    ds = open_dataset(f"smiyc_{track}:{make_smiyc(tmp_path, track)}")
    det = BrightnessDetector()
    rep = evaluate(det, ds, ["bright", "dark"], tmp_path / "ev", dataset_name=f"smiyc_{track}", progress=False)
    assert rep["components"]["preset"] == track and rep["images"] == 3 and rep["unlabelled"] == 2
    assert (rep["components"]["min_pred_size"], rep["components"]["min_gt_size"]) == PRESETS[track]
    for row in rep["results"]:
        threshold, direct = direct_components(det, ds, row["method"], track)
        assert row["component_threshold"] == threshold
        assert row["siou"] == pytest.approx(direct.siou_gt, abs=1e-12)
        assert row["ppv"] == pytest.approx(direct.ppv, abs=1e-12)
        assert row["f1_mean"] == pytest.approx(direct.f1_mean, abs=1e-12)
        assert (row["n_gt_components"], row["n_pred_components"]) == (direct.n_gt, direct.n_pred)
    bright = rep["results"][0]
    assert bright["n_gt_components"] == (3 if track == "anomaly" else 6)  # the 64 px anomalies: void vs kept
    assert bright["siou"] > 0.3 and bright["ppv"] > 0.3
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["results"][0]["siou"] == bright["siou"]
    md = (tmp_path / "ev" / "metrics.md").read_text()
    assert "sIoU (%)" in md and "mean F1 (%)" in md and f"| bright | {100 * bright['ap']:.2f} |" in md


def test_spilling_to_disk_changes_nothing(tmp_path):
    ds = open_dataset(f"smiyc_anomaly:{make_smiyc(tmp_path)}")
    kw = dict(methods=["bright", "dark"], progress=False, components="anomaly")
    in_memory = evaluate(BrightnessDetector(), ds, out_dir=tmp_path / "a", **kw)
    spilled = evaluate(BrightnessDetector(), ds, out_dir=tmp_path / "b", memory_gb=0, **kw)
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert json.dumps(strip(in_memory)) == json.dumps(strip(spilled))
    assert not list((tmp_path / "b").glob(".eval-scratch-*"))  # the scratch folder is gone


def test_components_on_request_and_off(tmp_path):
    ds = open_dataset(f"fishyscapes_laf:{make_fishyscapes(tmp_path)}")
    plain = evaluate(BrightnessDetector(), ds, ["bright"], progress=False)
    assert "components" not in plain and "siou" not in plain["results"][0]
    asked = evaluate(BrightnessDetector(), ds, ["bright"], progress=False, components="auto")
    assert asked["components"]["preset"] == "anomaly" and asked["results"][0]["siou"] > 0
    assert asked["results"][0]["ap"] == plain["results"][0]["ap"]
    smiyc = open_dataset(f"smiyc_obstacle:{make_smiyc(tmp_path / 's', 'obstacle')}")
    assert "components" not in evaluate(BrightnessDetector(), smiyc, ["bright"], progress=False, components="off")
    assert component_preset(smiyc, "False") is None and component_preset(ds, "True") == "anomaly"  # YAML off / on
    assert component_preset(smiyc, None) == "obstacle" and component_preset(ds, "obstacle") == "obstacle"


def test_eval_size_scores_resized_maps(tmp_path):
    ds = open_dataset(f"fishyscapes_laf:{make_fishyscapes(tmp_path)}")
    rep = evaluate(BrightnessDetector(), ds, ["bright"], progress=False, eval_size=(48, 64))
    labels = [cv2.resize(ds[i]["anomaly"], (64, 48), interpolation=cv2.INTER_NEAREST) for i in range(len(ds))]
    row = rep["results"][0]
    assert rep["eval_size"] == [48, 64]
    assert (row["n_pos"], row["n_neg"]) == (sum(int((x == 1).sum()) for x in labels),
                                            sum(int((x == 0).sum()) for x in labels))


def test_eval_writes_smiyc_submission_for_every_frame(tmp_path):
    ds = open_dataset(f"smiyc_anomaly:{make_smiyc(tmp_path / 'data')}")
    det = BrightnessDetector()
    rep = evaluate(det, ds, ["bright", "dark"], progress=False, submission=tmp_path / "sub")
    assert rep["submission"]["frames"] == 5 and rep["images"] == 3 and rep["unlabelled"] == 2
    for method in ("bright", "dark"):
        files = sorted((tmp_path / "sub/anomaly_p" / method / "AnomalyTrack-all").glob("*.hdf5"))
        assert [f.stem for f in files] == [f"frame{i:02d}" for i in range(5)]
        expected = det.run([ds[4]["image"]], [method])[0][method]
        np.testing.assert_array_equal(read_smiyc(files[4]), expected.astype(np.float16))
    # without labels at all, a submission run still works; a metrics-only run says what is missing
    unlabelled = open_dataset(f"smiyc_anomaly:{make_smiyc(tmp_path / 'u', labelled=0)}")
    assert evaluate(det, unlabelled, ["bright"], progress=False, submission=tmp_path / "sub2")["results"] == []
    with pytest.raises(Exception, match="no image with anomaly labels"):
        evaluate(det, unlabelled, ["bright"], progress=False)


def test_eval_writes_fishyscapes_submission(tmp_path):
    ds = open_dataset(f"fishyscapes_laf:{make_fishyscapes(tmp_path / 'data')}")
    rep = evaluate(BrightnessDetector(), ds, ["bright"], dataset_name="fs_laf", progress=False,
                   submission=tmp_path / "sub")
    folder = tmp_path / "sub/fishyscapes/bright/fs_laf"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{i}_anomaly.npy" for i in range(3)] + [f"{i}_segmentation.npy" for i in range(3)]
        + ["validation_performance.json"])
    perf = json.loads((folder / "validation_performance.json").read_text())
    assert perf == {"ap": rep["results"][0]["ap"], "fpr": rep["results"][0]["fpr95"]}
    assert np.load(folder / "0_anomaly.npy").dtype == np.float32
    assert np.load(folder / "0_segmentation.npy").dtype == np.uint8


def test_several_benchmarks_one_combined_table(tmp_path):
    fs = make_fishyscapes(tmp_path / "fs")
    sm = make_smiyc(tmp_path / "sm", "obstacle")
    specs = [f"fishyscapes_laf:{fs}", f"smiyc_obstacle:{sm}", f"fishyscapes_laf:{fs}"]
    shown = []
    reports = evaluate_many(BrightnessDetector(), specs, ["bright", "dark"], tmp_path / "out", echo=shown.append,
                            progress=False)
    assert [r["dataset"] for r in reports] == ["fishyscapes_laf", "smiyc_obstacle", "fishyscapes_laf-2"]
    assert len(shown) == 3
    table = (tmp_path / "out" / "summary.md").read_text()
    assert table == combined_table(reports)
    head, _, bright, dark = table.splitlines()[:4]
    assert head.split(" | ")[1:4] == ["fishyscapes_laf AP", "FPR95", "smiyc_obstacle AP"]
    assert "sIoU" in head and head.count("sIoU") == 1  # only the SMIYC group has component columns
    assert bright.startswith("| bright | ") and dark.startswith("| dark | ")
    assert len(bright.split("|")) == len(head.split("|"))
    assert f"{100 * reports[1]['results'][0]['siou']:.2f}" in bright
    assert (tmp_path / "out" / "smiyc_obstacle" / "metrics.json").is_file()


# -------------------------------------------------------------------------------------------- reproduction


@pytest.fixture()
def tiny_pipeline(tmp_path):
    from synboost.config import SegModelConfig
    from synboost.detectors.components import save_component
    from synboost.detectors.detector import write_pipeline_file
    from synboost.models import create_model

    m = SegModelConfig(backbone="tiny", pretrained=False, aspp_dim=8, decoder_dim=8, width=4)
    net = create_model("deeplabv3plus", backbone="tiny", aspp_dim=8, decoder_dim=8, width=4)
    ckpt = save_component(tmp_path / "seg.safetensors", net, "segmenter", m)
    return write_pipeline_file(tmp_path / "p.yaml", segmenter=str(ckpt), method="energy", device="cpu")


def test_cli_eval_several_benchmarks(tmp_path, tiny_pipeline, capsys):
    fs = make_fishyscapes(tmp_path / "fs", n=2, variants=("LostAndFound",))
    sm = make_smiyc(tmp_path / "sm", "obstacle", labelled=2, unlabelled=1)
    out, sub = tmp_path / "out", tmp_path / "sub"
    assert main(["eval", "--pipeline", str(tiny_pipeline), "--method", "energy,msp", "--data", f"fishyscapes_laf:{fs}",
                 "--data", f"smiyc_obstacle:{sm}", "--components", "--out", str(out), "--submission", str(sub)]) == 0
    text = capsys.readouterr().out
    head = "| method | fishyscapes_laf AP | FPR95 | sIoU | PPV | mean F1 | smiyc_obstacle AP | FPR95 | sIoU |"
    assert head in text and head in (out / "summary.md").read_text()
    assert len(list((sub / "anomaly_p/msp/ObstacleTrack-all").glob("*.hdf5"))) == 3
    assert (sub / "fishyscapes/energy/fishyscapes_laf/validation_performance.json").is_file()
    rep = json.loads((out / "smiyc_obstacle" / "metrics.json").read_text())
    assert rep["components"]["preset"] == "obstacle" and rep["unlabelled"] == 1 and "siou" in rep["results"][0]


def test_reproduce_prints_expected_beside_ours(tmp_path, tiny_pipeline, capsys):
    data = make_fishyscapes(tmp_path / "data", n=2)
    cfg = tmp_path / "table.yaml"
    cfg.write_text(f"""
title: a test table
source: made up for the test
pipeline: {tiny_pipeline}
methods: [energy, msp]
data:
  fishyscapes_laf: ${{data_root}}/fishyscapes
out: {tmp_path / 'rep'}
expected:
  - {{method: energy, dataset: fishyscapes_laf, ap: 50.0, fpr95: 10.0, source: "paper X, Table 9"}}
  - {{method: msp, dataset: fishyscapes_laf, auroc: 75.5, verified: false, source: "memory"}}
  - {{method: energy, dataset: fishyscapes_laf, ap: 12.0, hidden: true, source: "leaderboard"}}
""")
    assert main(["eval", "--config", str(cfg), "--set", f"data_root={data}"]) == 0
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "rep" / "reproduce.json").read_text())
    rows = {(r["method"], r["metric"], r["hidden"]): r for r in saved["rows"]}
    metrics = json.loads((tmp_path / "rep" / "fishyscapes_laf" / "metrics.json").read_text())["results"]
    ours = {r["method"]: r for r in metrics}
    ap = rows[("energy", "ap", False)]
    assert ap["ours"] == pytest.approx(100 * ours["energy"]["ap"]) and ap["diff"] == pytest.approx(ap["ours"] - 50)
    assert rows[("msp", "auroc", False)]["ours"] == pytest.approx(100 * ours["msp"]["auroc"])
    assert rows[("energy", "ap", True)]["diff"] is None
    assert f"| fishyscapes_laf | energy | AP | 50.00 | {ap['ours']:.2f} | {ap['diff']:+.2f} | paper X, Table 9 |" in out
    assert "| fishyscapes_laf | msp | AUROC | 75.50 ? |" in out and "hidden test set" in out
    assert (tmp_path / "rep" / "summary.md").is_file() and (tmp_path / "rep" / "reproduce.md").is_file()


def test_shipped_config_runs_on_a_fake_benchmark_folder(tmp_path, tiny_pipeline, capsys):
    data = make_fishyscapes(tmp_path / "data", n=2)
    out = tmp_path / "t1"
    assert main(["eval", "--config", str(REPO / "configs/reproduce/synboost-table1-fishyscapes.yaml"),
                 "--set", f"pipeline={tiny_pipeline}", "--set", f"data_root={data}", "--method", "energy",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| fishyscapes_laf | synboost | AP | 43.22 | — | hidden test set |" in text
    assert "| method | fishyscapes_laf AP | FPR95 | fishyscapes_static AP | FPR95 |" in text
    for ds in ("fishyscapes_laf", "fishyscapes_static"):
        folder = out / "submission/fishyscapes/energy" / ds
        assert (folder / "0_anomaly.npy").is_file() and (folder / "validation_performance.json").is_file()


def test_reproduce_missing_data_or_weights_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SYNBOOST_WEIGHTS", str(tmp_path / "weights"))
    cfg = str(REPO / "configs/reproduce/pebal-paper.yaml")
    cases = [
        ([], "data.fishyscapes_laf is still the placeholder 'DIR/fishyscapes': pass --set data_root="),
        (["--set", f"data_root={tmp_path / 'nowhere'}"], f"data.fishyscapes_laf: {tmp_path / 'nowhere'}/fishyscapes"),
        (["--set", f"data_root={make_fishyscapes(tmp_path / 'd', n=1)}", "--set", "data.road_anomaly=",
          "--set", "data.lostandfound="], "run `synboost weights import synboost-segmenter`"),
    ]
    for extra, needle in cases:
        assert main(["eval", "--config", cfg, *extra]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_reproduce_config_loads(path):
    from synboost.data.kinds import KINDS
    from synboost.metrics.pixel import FPR_RULES

    cfg = load_config(ReproduceConfig, path)
    assert cfg.title and cfg.source and cfg.methods and cfg.expected and cfg.fpr_rule in FPR_RULES
    pipe = REPO / cfg.pipeline
    assert pipe.is_file() and read_pipeline(pipe).score.method in cfg.methods
    data = {k: v for k, v in vars(cfg.data).items() if v}
    assert data and set(data) <= set(KINDS) and all(v.startswith("DIR") for v in data.values())
    assert load_config(ReproduceConfig, path, ["data_root=/x"]).data.__dict__[next(iter(data))].startswith("/x")
    for e in cfg.expected:
        assert e.dataset in data and e.method in cfg.methods and e.source
        assert any(getattr(e, k) is not None for k in METRIC_KEYS)
    text = path.read_text()
    assert "Source" in text and "DIR" in text  # cites its source and documents the placeholder


def test_evaluate_names_the_inlier_classes_the_false_alarms_fall_on(tmp_path):
    """A bright 'person' in every scene: the 'bright' score fires on it, the 'dark' score does not."""
    from synboost.data.benchmarks import AnomalyFolderDataset

    rng = np.random.default_rng(3)
    for i in range(3):
        img = rng.integers(0, 100, (48, 64, 3)).astype(np.uint8)
        lab, sem = np.zeros((48, 64), np.uint8), np.zeros((48, 64), np.uint8)  # road
        lab[5:15, 5:15] = 1
        img[5:15, 5:15] = 250
        sem[30:40, 40:44] = 11  # a person, brighter than the anomaly
        img[30:40, 40:44] = 255
        sem[20:30, :] = 13  # a band of cars, dim
        write_png(tmp_path / "set" / "original" / f"{i}.png", img)
        write_png(tmp_path / "set" / "labels" / f"{i}.png", lab)
        write_png(tmp_path / "set" / "semantic" / f"{i}.png", sem)
    rep = evaluate(BrightnessDetector(), AnomalyFolderDataset(tmp_path / "set"), ["bright", "dark"],
                   tmp_path / "ev", progress=False)
    rows = {r["method"]: r for r in rep["results"]}
    bright = rows["bright"]["false_positive_classes"]
    assert bright["top"][0]["class"] == "person" and bright["top"][0]["ratio"] > 10
    assert bright["inliers"][11] == 3 * 40 and bright["fp"][11] == 3 * 40
    assert "person" not in [t["class"] for t in rows["dark"]["false_positive_classes"]["top"]]
    assert "- bright: person" in (tmp_path / "ev" / "metrics.md").read_text()
    html = (tmp_path / "ev" / "report.html").read_text()
    assert "Where the false positives fall" in html and "<td>person</td>" in html
    # without semantic labels there is nothing to attribute
    import shutil

    shutil.rmtree(tmp_path / "set" / "semantic")
    plain = evaluate(BrightnessDetector(), AnomalyFolderDataset(tmp_path / "set"), ["bright"], progress=False)
    assert "false_positive_classes" not in plain["results"][0]
