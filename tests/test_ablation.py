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
        {"variant": "full", "removes": "nothing", "ap": 0.5, "fpr95": 0.2, "auroc": 0.9},
        {"variant": "no_entropy", "removes": "the entropy input", "ap": 0.4, "fpr95": 0.3, "auroc": 0.8}]}
    text = ablation_table(rep)
    assert "| no_entropy | the entropy input | 40.00 | 30.00 | 80.00 | -10.00 |" in text
    assert "| full | nothing | 50.00 | 20.00 | 90.00 |  |" in text


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
