"""``synboost fit density`` for real on the tiny synthetic world: every density method must beat chance on the
held-out anomaly scenes, and load / score through the same pipeline detectors as every other method."""
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from synboost.config import DensityConfig, load_config
from synboost.models.density import DENSITY_METHODS

REPO = Path(__file__).resolve().parents[1]


def _cfg(world, segmenter, out, *extra):
    """The shipped synthetic-world config, on the tiny world, with a smaller bank and regression pass."""
    return load_config(DensityConfig, REPO / "configs/density/synthetic.yaml", [
        f"out={out}", f"segmenter={segmenter}", f"data.train=synthetic:{world}@train", "data.mix_images=40",
        "data.mix_pixels=128", "model.bank_per_image=32", "model.bank_size=600", "device=cpu", *extra])


@pytest.fixture(scope="module")
def fitted(tiny_world, tiny_segmenter, tmp_path_factory):
    from synboost.training.density import fit_density

    out = tmp_path_factory.mktemp("density")
    t0 = time.time()
    s = fit_density(_cfg(tiny_world, tiny_segmenter["segmenter"], out), progress=False)
    return s, time.time() - t0


def test_fit_density_beats_chance_on_held_out_anomaly_scenes(tiny_world, fitted):
    from synboost.data.kinds import open_dataset
    from synboost.detectors.detector import load_pipeline
    from synboost.hub.checkpoint import load_model
    from synboost.jobs.evaluate import evaluate

    s, seconds = fitted
    assert seconds < 30, seconds
    sd, meta = load_model(s["density"], "density")
    assert meta["layers"] == ["bot_fine", "trunk", "final"] and meta["bank_size"] == s["bank_size"] == 600
    assert meta["bank_offered"] > 600 and set(meta["dims"]) == {"bot_fine", "trunk", "final"}
    assert sd["knn.bank"].shape == (600, meta["dims"][meta["knn_layer"]])
    assert s["regression_pixels"]["outlier"] > 100 and np.all(np.array(s["nll_std"]) > 0)

    det = load_pipeline(s["pipeline"])
    assert det.method == "nll_single" and set(DENSITY_METHODS) <= set(det.methods)
    ds = open_dataset(f"synthetic:{tiny_world}")
    rep = evaluate(det, ds, list(DENSITY_METHODS) + ["msp"], progress=False)
    rows = {r["method"]: r for r in rep["results"]}
    # chance AP = the anomaly pixel ratio of the labelled pixels
    pos = tot = 0
    for i in range(len(ds)):
        a = ds[i]["anomaly"]
        pos, tot = pos + int((a == 1).sum()), tot + int((a != 255).sum())
    chance = pos / tot
    for m in DENSITY_METHODS:
        assert rows[m]["ap"] > chance and rows[m]["auroc"] > 0.55, (m, rows[m], chance)


def test_density_scores_come_from_the_segmenter_pass(tiny_world, fitted):
    """score_all gives the density maps of the same forward pass, equal to scoring each method alone; the
    post-hoc maps are unchanged by the hooks; MC-dropout passes do not overwrite the captured features."""
    from synboost.data.kinds import open_dataset
    from synboost.detectors.components import load_segmenter
    from synboost.detectors.detector import load_pipeline, read_pipeline, resolve_component
    from synboost.detectors.posthoc import PosthocDetector

    s, _ = fitted
    det = load_pipeline(s["pipeline"], precision="fp32")  # compared below with a plain fp32 segmenter pass
    images = [open_dataset(f"synthetic:{tiny_world}")[i]["image"] for i in range(3)]
    every = det.score_all(images)
    assert every[0]["knn"].shape == images[0].shape[:2] and every[0]["knn"].dtype == np.float32
    for m in DENSITY_METHODS:
        alone = det.run(images, [m])
        np.testing.assert_allclose(alone[1][m], every[1][m], rtol=1e-5, atol=1e-5)
    with_mc = det.run(images, ["nll_min", "mcdropout"])
    np.testing.assert_allclose(with_mc[0]["nll_min"], every[0]["nll_min"], rtol=1e-5, atol=1e-5)
    pipe = Path(s["pipeline"])
    seg = resolve_component(read_pipeline(pipe).components.segmenter, pipe.parent)
    plain = PosthocDetector(load_segmenter(seg)[0], "energy")
    np.testing.assert_allclose(plain(images)[2]["anomaly"], every[2]["energy"], rtol=1e-5, atol=1e-5)


def test_density_cli_and_errors(tiny_world, tiny_segmenter, fitted, tmp_path):
    from synboost.cli import main
    from synboost.detectors.components import load_density
    from synboost.detectors.detector import load_pipeline
    from synboost.errors import CheckpointError, ConfigError
    from synboost.hub.checkpoint import save_model
    from synboost.training.density import fit_density

    s, _ = fitted
    seg = tiny_segmenter["segmenter"]
    gen_like = tmp_path / "g.safetensors"
    save_model(gen_like, {"w": torch.zeros(1)}, {"kind": "generator"})
    with pytest.raises(ConfigError, match="is a 'generator' checkpoint"):
        fit_density(_cfg(tiny_world, gen_like, tmp_path / "a"), progress=False)
    with pytest.raises(ConfigError, match="checkpoint file not found"):
        fit_density(_cfg(tiny_world, tmp_path / "none.safetensors", tmp_path / "a"), progress=False)
    with pytest.raises(ConfigError, match="no layer nope"):
        fit_density(_cfg(tiny_world, seg, tmp_path / "a", "model.layers=[bot_fine,nope]"), progress=False)
    # a pipeline without density refuses the density methods; a density file of another segmenter is refused
    with pytest.raises(ConfigError, match="needs an embedding-density fit"):
        load_pipeline(s["pipeline"], ["density=''", "method=knn"])
    with pytest.raises(CheckpointError, match="expected 'density'"):
        load_pipeline(s["pipeline"], [f"density={seg}"])
    with pytest.raises(CheckpointError, match="fitted on the segmenter"):
        load_density(s["density"], gen_like)
    # the verb: one line on a user error, exit status 2
    assert main(["fit", "density", "--config", str(tmp_path / "missing.yaml")]) == 2
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"out: {tmp_path / 'cli'}\nsegmenter: {gen_like}\n")
    assert main(["fit", "density", "--config", str(cfg)]) == 2
