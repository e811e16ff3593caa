import pytest

from synboost.config import AblationConfig, DissimModelConfig, load_config
from synboost.detectors.components import build_dissimilarity
from synboost.errors import ConfigError
from synboost.jobs.ablate import VARIANTS, ablation_table


def test_every_default_variant_is_known_and_builds():
    cfg = load_config(AblationConfig)
    assert set(cfg.variants) == set(VARIANTS)
    for name, (model_ov, data_ov, method, removes) in VARIANTS.items():
        m = DissimModelConfig(width=0.125, vgg_pretrained=False)
        for k, v in model_ov.items():
            setattr(m, k, v)
        net = build_dissimilarity(m)
        assert method in ("synboost", "dissimilarity") and removes
        if name == "no_uncertainty_maps":
            assert not hasattr(net, "prior_encoder")
        if name == "no_entropy":
            assert net.priors == ("perceptual", "distance")


def test_table_reports_the_difference_to_the_full_model():
    rep = {"dataset": "d", "images": 3, "rows": [
        {"variant": "full", "removes": "nothing", "ap": 0.5, "fpr95": 0.2, "auroc": 0.9, "fusion_weights": [0.6, 0.4]},
        {"variant": "no_entropy", "removes": "the entropy input", "ap": 0.4, "fpr95": 0.3, "auroc": 0.8},
        {"variant": "no_ensemble", "removes": "the fusion", "ap": 0.45, "fpr95": 0.3, "auroc": 0.8,
         "fusion_weights": None}]}
    text = ablation_table(rep)
    assert "| no_entropy | the entropy input | 40.00 | 30.00 | 80.00 | -10.00 |  |" in text
    assert "| full | nothing | 50.00 | 20.00 | 90.00 |  | 0.6 / 0.4 |" in text
    assert "| no_ensemble | the fusion | 45.00 | 30.00 | 80.00 | -5.00 |  |" in text


def test_unknown_variant_is_an_error(tmp_path):
    from synboost.jobs.ablate import run_ablation

    cfg = load_config(AblationConfig, None, [f"out={tmp_path}", "variants=[full,no_wings]"])
    with pytest.raises(ConfigError, match="no_wings"):
        run_ablation(cfg)


def test_variant_keys_group_identical_networks():
    """'full' and 'no_ensemble' share one trained network; every other variant trains its own."""
    from synboost.jobs.ablate import training_key

    keys = {name: training_key(name) for name in VARIANTS}
    assert keys["full"] == keys["no_ensemble"]
    assert len(set(keys.values())) == len(VARIANTS) - 1


def _report(full_ap, rows):
    return {"dataset": "d", "images": 3, "seconds": 1.0, "rows": [
        {"variant": "full", "removes": "nothing", "ap": full_ap, "fpr95": 0.5, "auroc": 0.9}] + [
        {"variant": v, "removes": f"the {v}", "ap": ap, "fpr95": fpr, "auroc": 0.8} for v, ap, fpr in rows]}


def test_seed_summary_pairs_each_variant_with_the_full_run_of_its_seed():
    from synboost.jobs.ablate import ablation_seeds_markdown, summarise_ablation_seeds

    reports = {0: _report(0.30, [("a", 0.20, 0.60), ("b", 0.31, 0.50)]),
               1: _report(0.40, [("a", 0.32, 0.62), ("b", 0.39, 0.52)]),
               2: _report(0.20, [("a", 0.11, 0.58), ("b", 0.22, 0.48)])}
    agg = summarise_ablation_seeds(reports)
    rows = {r["variant"]: r for r in agg["rows"]}
    assert agg["seeds"] == [0, 1, 2] and list(rows) == ["full", "a", "b"]
    assert rows["full"]["ap"]["mean"] == pytest.approx(30.0) and rows["full"]["ap"]["std"] == pytest.approx(8.165, 1e-3)
    # a: -10, -8, -9 points against its own seed's full run; unpaired the spread (8 points) would hide it
    da = rows["a"]["delta_ap"]
    assert da["values"] == pytest.approx([-10, -8, -9]) and da["mean"] == pytest.approx(-9) and da["beyond_spread"]
    assert rows["a"]["delta_fpr95"]["mean"] == pytest.approx(10) and rows["a"]["delta_fpr95"]["beyond_spread"]
    # b: +1, -1, +2: mixed signs, not beyond its spread
    assert not rows["b"]["delta_ap"]["beyond_spread"] and "delta_ap" not in rows["full"]
    db = rows["b"]["delta_fpr95"]
    assert db["values"] == pytest.approx([0, 2, -2]) and not db["beyond_spread"]
    text = ablation_seeds_markdown(agg)
    assert ("| a | the a | 21.00 +- 8.60 | 60.00 +- 1.63 | -9.00 +- 0.82 * | +10.00 +- 1.63 * | "
            "20.00, 32.00, 11.00 |") in text
    assert "| b | the b | 30.67 +- 6.94 | 50.00 +- 1.63 | +0.67 +- 1.25 | +0.00 +- 1.63 |" in text


def test_ablate_seeds_runs_each_seed_on_that_seeds_demo_stages(tmp_path, monkeypatch):
    from synboost.jobs import ablate

    seen = []

    def fake(cfg, resume=True):
        seen.append((cfg.base.seed, cfg.base.out, cfg.out, resume))
        return _report(0.3 + 0.01 * cfg.base.seed, [("a", 0.2, 0.6)])

    monkeypatch.setattr(ablate, "run_ablation", fake)
    cfg = load_config(AblationConfig, None, [f"out={tmp_path / 'ab'}", f"base.out={tmp_path / 'demo'}"])
    agg = ablate.run_ablation_seeds(cfg, [0, 2], resume=False)
    assert seen == [(0, str(tmp_path / "demo" / "seed-0"), str(tmp_path / "ab" / "seed-0"), False),
                    (2, str(tmp_path / "demo" / "seed-2"), str(tmp_path / "ab" / "seed-2"), False)]
    assert agg["seeds"] == [0, 2] and (tmp_path / "ab" / "ablation_seeds.md").is_file()
    assert cfg.base.seed == 0 and cfg.out == str(tmp_path / "ab")  # the caller's config is left alone
