"""``synboost demo --seeds``: every figure as mean +- std over the seeds' runs, and ``--seed`` reaches every stage."""
import numpy as np
import pytest

from synboost.jobs.demo import seed_checks, seed_folder, seeds_markdown, summarise_seeds


def fake_summary(k: float) -> dict:
    return {"stages": {"segmentation": {"score": 0.30 + 0.01 * k}, "synthesis": {"l1": 0.10 + k / 100,
                                                                                   "l1_mean_colour_painting": 0.12},
                       "dissimilarity": {"heldout_ap": 0.5 + k / 10}, "pebal": {"ap": 0.4}},
            "ensemble": {"weights": [1 - k / 4, k / 4, 0.0, 0.0]},
            "report": {"results": [{"method": "synboost", "ap": 0.1 * (k + 1), "fpr95": 0.5, "auroc": 0.9},
                                   {"method": "entropy", "ap": 0.05, "fpr95": 0.6 - 0.1 * k, "auroc": 0.8}]}}


def test_the_summary_is_the_mean_and_population_std_of_the_seeds():
    agg = summarise_seeds({0: fake_summary(0), 1: fake_summary(1), 2: fake_summary(2)})
    assert agg["seeds"] == [0, 1, 2]
    ap = agg["methods"]["synboost"]["ap"]
    assert ap["values"] == pytest.approx([10, 20, 30])
    assert ap["mean"] == pytest.approx(20) and ap["std"] == pytest.approx(np.std([10, 20, 30]))
    assert agg["methods"]["entropy"]["fpr95"]["mean"] == pytest.approx(50)
    assert agg["figures"]["segmenter mIoU"]["mean"] == pytest.approx(31)
    assert agg["figures"]["generator L1"]["values"] == pytest.approx([0.10, 0.11, 0.12])
    assert agg["figures"]["fusion weight of the entropy"]["values"] == pytest.approx([0, 0.25, 0.5])
    text = seeds_markdown(agg)
    assert "| synboost | 20.00 +- 8.16 |" in text
    assert "| fusion weight of the entropy | 0.250 +- 0.204 | 0.000, 0.250, 0.500 |" in text
    assert text.index("| synboost |") < text.index("| entropy |")  # best AP first
    assert "precision" not in text  # summaries without the field: no line


def test_the_seeds_say_what_precision_each_stage_trained_in():
    """seeds.md names each seed's training precision, so a float32 machine's numbers are not read as bf16's."""
    runs = {k: fake_summary(k) for k in (0, 1)}
    runs[0]["precision"] = {"segmentation": "bf16", "dissimilarity": "bf16"}
    runs[1]["precision"] = {"segmentation": "fp32", "dissimilarity": "fp32"}
    text = seeds_markdown(summarise_seeds(runs))
    assert "- seed 0: training precision: segmentation bf16, dissimilarity bf16" in text
    assert "- seed 1: training precision: segmentation fp32, dissimilarity fp32" in text


def test_the_per_seed_checks_hold_synboost_against_the_best_posthoc_score():
    """fake seeds: SynBoost AP 10 / 20 / 30 against the entropy's 5; FPR95 50 against 60 / 50 / 40."""
    agg = summarise_seeds({0: fake_summary(0), 1: fake_summary(1), 2: fake_summary(2)})
    checks = seed_checks(agg)
    assert [c["ratio"] for c in checks] == pytest.approx([2, 4, 6])
    assert [c["fpr95_below_all"] for c in checks] == [True, False, False]  # 50 < 60; 50 == 50 is not below; 50 > 40
    assert all(c["best_ap_method"] == "entropy" for c in checks)
    text = seeds_markdown(agg)
    assert "| 1 | 20.00 | 5.00 (entropy) | 4.00x | 50.00 | 50.00 (entropy) | no |" in text
    assert seed_checks({"seeds": [0], "methods": {"entropy": {}}}) == []  # no SynBoost row: no checks


def test_each_seed_has_its_own_folder():
    assert seed_folder("runs/demo", 2).replace("\\", "/") == "runs/demo/seed-2"


def test_the_demo_seed_is_every_stages_training_seed(monkeypatch, tmp_path):
    """run_demo gives cfg.seed to the four training stages and leaves the world's seed alone."""
    from synboost.config import DemoConfig
    from synboost.jobs import demo

    seen = {}

    def stop(cfg, resume):
        seen.update({k: getattr(cfg, k).train.seed for k in ("segmentation", "synthesis", "dissimilarity", "pebal")})
        seen["world"] = cfg.world.seed
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "prepare_stages", stop)
    cfg = DemoConfig(out=str(tmp_path / "d"), seed=7)
    world_seed = cfg.world.seed
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(cfg)
    assert seen == {"segmentation": 7, "synthesis": 7, "dissimilarity": 7, "pebal": 7, "world": world_seed}


def _stop_at_stages(monkeypatch):
    from synboost.jobs import demo

    seen = []

    def stop(cfg, resume):
        seen.append(cfg)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "prepare_stages", stop)
    return seen


def test_full_trains_only_the_dissimilarity_stage_anew_beside_the_default_demo(monkeypatch, tmp_path):
    """--full: out is <out>-full, every upstream stage is the default demo's (same folder, same config), and only
    the dissimilarity network (3x the epochs) lives in the new folder."""
    from synboost.cli import main
    from synboost.config import DemoConfig

    seen = _stop_at_stages(monkeypatch)
    out = tmp_path / "demo"
    main(["demo", "--full", "--set", f"out={out}"])  # stopped (as by Ctrl-C) where the stages would train
    cfg, plain = seen[0], DemoConfig(out=str(out))
    from synboost.jobs.stages import place_stages

    place_stages(plain)
    assert cfg.out == str(out) + "-full" and cfg.stages_from == str(out)
    for name in ("world", "segmentation", "synthesis", "pebal"):
        assert getattr(cfg, name) == getattr(plain, name), name  # the very stage runs of the default demo
    assert cfg.dissimilarity.out == str(tmp_path / "demo-full" / "dissimilarity")
    assert cfg.dissimilarity.train.epochs == 3 * plain.dissimilarity.train.epochs
    assert (cfg.dissimilarity.segmenter, cfg.dissimilarity.generator) == (plain.dissimilarity.segmenter,
                                                                          plain.dissimilarity.generator)


@pytest.mark.parametrize("flags, suffix", [(["--trunks"], "-trunks"), (["--full", "--trunks"], "-full-trunks")])
def test_trunks_puts_the_world_trunks_under_the_dissimilarity_stage_beside_the_default_demo(monkeypatch, tmp_path,
                                                                                             flags, suffix):
    """--trunks: out is <out>-trunks (<out>-full-trunks with --full), the upstream stages are the default demo's,
    the trunks are trained once in the default demo's folder, and the dissimilarity encoder (full width) and the
    perceptual difference start from them."""
    from synboost.cli import main
    from synboost.config import DemoConfig
    from synboost.jobs.stages import place_stages

    seen = _stop_at_stages(monkeypatch)
    out = tmp_path / "demo"
    main(["demo", *flags, "--set", f"out={out}"])
    cfg, plain = seen[0], DemoConfig(out=str(out))
    place_stages(plain)
    assert cfg.out == str(out) + suffix and cfg.stages_from == str(out) and cfg.pretrained_trunks
    for name in ("world", "segmentation", "synthesis", "pebal"):
        assert getattr(cfg, name) == getattr(plain, name), name
    assert cfg.backbone.out == str(out / "backbone")
    dis = cfg.dissimilarity
    assert dis.out == str(tmp_path / f"demo{suffix}" / "dissimilarity")
    assert (dis.model.vgg_path, dis.perceptual_vgg_path) == (str(out / "backbone" / "vgg16-world.safetensors"),
                                                             str(out / "backbone" / "vgg19-world.safetensors"))
    assert dis.model.encoder_width == 1.0
    factor = 3 if "--full" in flags else 1
    assert dis.train.epochs == factor * plain.dissimilarity.train.epochs


def test_trunks_and_quick_together_is_an_error(capsys):
    from synboost.cli import main

    assert main(["demo", "--trunks", "--quick"]) != 0
    assert "--trunks" in capsys.readouterr().err


def test_full_with_seeds_pairs_each_seed_with_that_seeds_default_run(monkeypatch, tmp_path):
    from synboost.config import DemoConfig
    from synboost.jobs import demo

    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda cfg, quick=False, resume=True: seen.append(cfg) or {"seconds": {}})
    monkeypatch.setattr(demo, "summarise_seeds", lambda s: {"seeds": [], "figures": {}, "methods": {}})
    cfg = demo.full_config(DemoConfig(out=str(tmp_path / "d")))
    demo.run_demo_seeds(cfg, [1, 2])
    assert [(c.seed, c.out, c.stages_from) for c in seen] == [
        (k, seed_folder(str(tmp_path / "d-full"), k), seed_folder(str(tmp_path / "d"), k)) for k in (1, 2)]
    # one pair of world-pretrained trunks for every seed: the default demo's
    assert [c.backbone_from for c in seen] == [str(tmp_path / "d" / "backbone")] * 2


def test_seeds_share_one_backbone(monkeypatch, tmp_path):
    from synboost.config import DemoConfig
    from synboost.jobs import demo

    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda cfg, quick=False, resume=True: seen.append(cfg) or {"seconds": {}})
    monkeypatch.setattr(demo, "summarise_seeds", lambda s: {"seeds": [], "figures": {}, "methods": {}})
    demo.run_demo_seeds(DemoConfig(out=str(tmp_path / "d"), pretrained_trunks=True), [0, 1, 2])
    assert {c.backbone_from for c in seen} == {str(tmp_path / "d" / "backbone")}
    assert len({c.out for c in seen}) == 3


def test_full_and_quick_together_is_an_error(capsys):
    from synboost.cli import main

    assert main(["demo", "--full", "--quick"]) != 0
    assert "--full" in capsys.readouterr().err


def test_quick_keeps_the_users_set_over_its_smoke_test_sizes(monkeypatch, tmp_path):
    """--quick shrinks every stage, but a key given with --set is the user's value, not the smoke-test size."""
    from synboost.cli import main

    seen = _stop_at_stages(monkeypatch)
    main(["demo", "--quick", "--set", f"out={tmp_path / 'q'}", "--set", "synthesis.train.epochs=3"])
    cfg = seen[0]
    assert cfg.synthesis.train.epochs == 3  # the user's, where --quick alone gives 1
    assert (cfg.world.n, cfg.segmentation.train.epochs, cfg.dissimilarity.train.epochs) == (40, 2, 1)
    assert cfg.out == str(tmp_path / "q")

