"""Obstacles as objects: connected components of a thresholded map (hand-built cases), their SMIYC component
scores (computed by hand), the calibrated thresholds (against brute force), the pipeline file round trip, and
``infer --objects`` / ``eval --calibrate`` from the command line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from synboost.cli import main
from synboost.data.io import read_image
from synboost.errors import ConfigError
from synboost.jobs.calibrate import calibrate, store_threshold, threshold_from_curve
from synboost.jobs.infer import run_folder
from synboost.jobs.objects import ObjectSettings, find_objects, label_objects, score_objects
from synboost.metrics.pixel import pixel_curve


def scene():
    """64x64: GT A (10x10 at y 5, x 5) predicted exactly (0.9), GT B (10x10 at y 40, x 40) half predicted (its
    left 5 columns, 0.8), a false 8x8 blob at y 5, x 40 (0.7 and one 0.75 pixel), a 2x2 speck (0.95) that
    min_area 20 removes, a GT component of 3 px (voided by min_gt_size 10) and a void band."""
    labels = np.zeros((64, 64), np.uint8)
    labels[5:15, 5:15] = 1
    labels[40:50, 40:50] = 1
    labels[60:62, 2:4] = 1
    labels[60, 10] = 1
    labels[30:33, :] = 255
    score = np.full((64, 64), 0.1, np.float32)
    score[5:15, 5:15] = 0.9
    score[40:50, 40:45] = 0.8
    score[5:13, 40:48] = 0.7
    score[6, 41] = 0.75
    score[25:27, 25:27] = 0.95
    return score, labels


def test_objects_of_a_hand_built_map():
    score, _ = scene()
    objs = find_objects(score, 0.5, min_area=20)
    assert [o["bbox"] for o in objs] == [[5, 5, 10, 10], [40, 5, 8, 8], [40, 40, 5, 10]]  # raster order
    assert [o["area"] for o in objs] == [100, 64, 50] and [o["id"] for o in objs] == [1, 2, 3]
    assert objs[0]["centroid"] == [9.5, 9.5] and objs[2]["centroid"] == [42.0, 44.5]
    assert objs[0]["mean_score"] == pytest.approx(0.9) and objs[0]["max_score"] == pytest.approx(0.9)
    assert objs[1]["max_score"] == pytest.approx(0.75) and objs[1]["mean_score"] == pytest.approx((63 * .7 + .75) / 64)
    assert len(find_objects(score, 0.5, min_area=1)) == 4  # the speck is back
    json.dumps(objs)  # plain JSON
    lab, again = label_objects(score, 0.5, min_area=20)
    assert again == objs and lab.dtype == np.int32 and sorted(np.unique(lab)) == [0, 1, 2, 3]
    assert (lab == 3).sum() == 50 and lab[25, 25] == 0


def test_threshold_is_strict_and_nan_is_never_an_object():
    m = np.zeros((8, 8), np.float32)
    m[2:4, 2:4] = 0.5
    assert find_objects(m, 0.5, min_area=1) == []  # score > threshold, not >=
    assert len(find_objects(m, np.nextafter(np.float32(0.5), np.float32(0)), min_area=1)) == 1
    m[2:4, 2:4] = np.nan
    assert find_objects(m, -1.0, min_area=1)[0]["area"] == 60  # NaN pixels belong to no object
    m[:] = 0.0
    m[0, 0], m[1, 1] = 1, 1  # diagonal neighbours: one object with 8-connectivity, two with 4
    assert len(find_objects(m, 0.5, 1)) == 1 and len(find_objects(m, 0.5, 1, connectivity=4)) == 2
    with pytest.raises(ConfigError):
        ObjectSettings(float("nan"))


def test_component_scores_of_the_objects_known_answer():
    score, labels = scene()
    r = score_objects([(score, labels)], 0.5, min_area=20, min_gt_size=10)
    # GT A: sIoU 1; GT B: 50 / (50 + 100 - 50) = 0.5; the 3 px GT is voided. Predictions: A, B (PPV 1), blob (0).
    assert (r.n_gt, r.n_pred) == (2, 3)
    assert r.siou_gt == pytest.approx(0.75) and r.ppv == pytest.approx(2 / 3)
    # tau 0.25..0.50 (6 values): TP 2, FN 0, FP 1 -> F1 4/5; tau 0.55..0.75 (5): TP 1, FN 1, FP 1 -> 1/2
    assert r.f1 == pytest.approx((0.8,) * 6 + (0.5,) * 5)
    assert r.f1_mean == pytest.approx((6 * 0.8 + 5 * 0.5) / 11)
    both = score_objects([(score, labels), (score, labels)], 0.5, min_area=20, min_gt_size=10)
    assert (both.n_gt, both.n_pred, both.f1_mean) == (4, 6, pytest.approx(r.f1_mean))
    perfect = score_objects([(np.where(labels == 1, 1.0, 0.0), labels)], 0.5, min_area=1, min_gt_size=1)
    assert perfect.f1_mean == 1.0 and perfect.siou_gt == 1.0


@pytest.mark.parametrize("rule", ["tpr95", "f1"])
def test_calibrated_thresholds_against_brute_force(rule):
    rng = np.random.default_rng(0)
    labels = (rng.random(4000) < 0.1).astype(np.uint8)
    labels[rng.random(4000) < 0.05] = 255
    scores = (rng.normal(size=4000) + 1.5 * (labels == 1)).astype(np.float32)
    scores[:200] = np.round(scores[:200], 1)  # ties
    point = threshold_from_curve(pixel_curve(scores, labels), rule)
    pos, neg = scores[labels == 1], scores[labels == 0]

    def at(t):
        tp, fp = int((pos > t).sum()), int((neg > t).sum())
        return tp / pos.size, 2 * tp / (2 * tp + fp + pos.size - tp), fp / neg.size

    candidates = [np.nextafter(u, np.float32(-np.inf)) for u in np.unique(pos)]
    tpr, f1, fpr = at(point["value"])
    assert (point["tpr"], point["f1"], point["fpr"]) == pytest.approx((tpr, f1, fpr))
    if rule == "tpr95":
        ok = [t for t in candidates if at(t)[0] >= 0.95]
        assert point["value"] == max(ok)  # the highest threshold that still finds 95 % of the anomaly pixels
    else:
        assert f1 == pytest.approx(max(at(t)[1] for t in candidates))


class MeanDetector:
    """anomaly = the image's channel mean / 255 (a deterministic stand-in)."""

    method = "entropy"
    batch_size = 4

    def __call__(self, images):
        return [{"anomaly": im.astype(np.float32).mean(2) / 255.0, "segmentation": np.zeros(im.shape[:2], np.uint8)}
                for im in images]


def test_calibrate_on_a_labelled_world_is_the_exact_curve_threshold(tiny_world):
    from synboost.data.kinds import open_dataset

    rec = calibrate(MeanDetector(), [f"synthetic:{tiny_world}"], "tpr95", max_images=8, progress=False)
    ds = open_dataset(f"synthetic:{tiny_world}")
    maps = [MeanDetector()([ds[i]["image"]])[0]["anomaly"] for i in range(8)]
    labs = [ds[i]["anomaly"] for i in range(8)]
    want = threshold_from_curve(pixel_curve(maps, labs), "tpr95")
    assert rec["value"] == want["value"] and rec["images"] == 8 and rec["method"] == "entropy"
    assert rec["tpr"] >= 0.95
    spilled = calibrate(MeanDetector(), [f"synthetic:{tiny_world}"], "tpr95", max_images=8, progress=False,
                        memory_gb=1e-6)  # every array through the scratch folder on disk
    assert spilled["value"] == rec["value"] and spilled["objects"] == rec["objects"]
    objs = score_objects(zip(maps, labs), rec["value"], min_area=50, min_gt_size=10)
    assert rec["objects"]["siou"] == pytest.approx(objs.siou_gt, nan_ok=True)


def test_threshold_written_to_the_pipeline_file_keeps_it_loadable(stages, tmp_path, monkeypatch):
    from synboost.detectors.detector import read_pipeline, write_pipeline_file

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "seg.safetensors").write_bytes((stages / "seg.safetensors").read_bytes())
    monkeypatch.chdir(tmp_path / "run")
    p = write_pipeline_file(tmp_path / "run" / "pipeline.yaml", segmenter="seg.safetensors", method="entropy",
                            batch_size=3)
    monkeypatch.chdir(tmp_path)  # another working directory: relative paths stay the file's
    rec = {"rule": "f1", "method": "entropy", "dataset": ["synthetic:X"], "value": 0.3125, "images": 5, "tpr": 0.5,
           "fpr": 0.01, "precision": 0.4, "f1": 0.44, "ap": 0.3, "objects": {}}
    store_threshold(p, rec)
    raw = yaml.safe_load(p.read_text())
    assert raw["components"]["segmenter"] == "seg.safetensors" and raw["defaults"]["batch_size"] == 3
    cfg = read_pipeline(p)
    assert cfg.score.threshold == 0.3125 and cfg.score.calibration.rule == "f1"
    assert cfg.score.calibration.dataset == ["synthetic:X"] and cfg.score.calibration.value == 0.3125
    with pytest.raises(ConfigError, match="calibrated for method 'msp'"):
        store_threshold(p, {**rec, "method": "msp"})


def test_folder_run_with_objects_writes_lists_and_boxes(tmp_path):
    import cv2

    src = tmp_path / "in"
    src.mkdir()
    im = np.zeros((40, 60, 3), np.uint8)
    im[10:20, 10:30] = 250
    cv2.imwrite(str(src / "a.png"), im)
    objects = ObjectSettings(0.5, min_area=10)
    rep = run_folder(MeanDetector(), src, tmp_path / "out", save="overlay", objects=objects, progress=False)
    assert rep["objects"]["threshold"] == 0.5 and rep["done"] == ["a"]
    objs = json.loads((tmp_path / "out" / "objects" / "a.json").read_text())
    assert objs == find_objects(im.astype(np.float32).mean(2) / 255.0, 0.5, 10)
    assert objs[0]["bbox"] == [10, 10, 20, 10]
    run_folder(MeanDetector(), src, tmp_path / "plain", save="overlay", progress=False)
    boxed, plain = (read_image(tmp_path / d / "overlays" / "a.png") for d in ("out", "plain"))
    differ = np.argwhere((boxed != plain).any(2))
    assert differ.size and (boxed[10, 10:30] == 255).all()  # the box: its top edge is white
    with pytest.raises(ConfigError, match="--fresh"):
        run_folder(MeanDetector(), src, tmp_path / "out", save="overlay", objects=ObjectSettings(0.6, 10),
                   progress=False)


def test_cli_calibrate_then_infer_objects(stages, tiny_world, tmp_path, capsys):
    from synboost.detectors.detector import write_pipeline_file

    p = write_pipeline_file(tmp_path / "p.yaml", segmenter=str(stages / "seg.safetensors"), method="entropy",
                            device="cpu")
    images = tiny_world / "anomaly/test/original"
    assert main(["infer", "--pipeline", str(p), "--images", str(images), "--out", str(tmp_path / "o"),
                 "--objects"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--calibrate tpr95" in err and str(p) in err
    assert main(["eval", "--pipeline", str(p), "--data", f"synthetic:{tiny_world}", "--calibrate", "tpr95",
                 "--method", "msp"]) == 2
    assert "own method" in capsys.readouterr().err
    assert main(["eval", "--pipeline", str(p), "--data", f"synthetic:{tiny_world}", "--calibrate", "tpr95",
                 "--max-images", "6"]) == 0
    out = capsys.readouterr().out
    thr = yaml.safe_load(p.read_text())["score"]["threshold"]
    assert repr(thr) in out and "TPR" in out
    assert main(["infer", "--pipeline", str(p), "--images", str(images), "--out", str(tmp_path / "o"),
                 "--objects", "--save", "overlay"]) == 0
    assert f"score > {thr}" in capsys.readouterr().out
    files = sorted((tmp_path / "o" / "objects").glob("*.json"))
    assert len(files) == len(list(images.iterdir()))
    assert all(o["max_score"] > thr for f in files for o in json.loads(f.read_text()))
    assert main(["infer", "--pipeline", str(p), "--images", str(images), "--out", str(tmp_path / "o2"),
                 "--objects", "--method", "msp"]) == 2
    assert "belongs to method 'entropy'" in capsys.readouterr().err
