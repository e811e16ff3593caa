"""How the demo wires its stages: with pretrained_trunks the world-pretrained VGGs reach every VGG consumer."""
from pathlib import Path

import pytest

from synboost.config import DemoConfig
from synboost.jobs.stages import backbone_done, place_stages, trunk_files


def test_pretrained_trunks_reach_every_vgg(tmp_path):
    cfg = DemoConfig(out=str(tmp_path / "d"), pretrained_trunks=True)
    place_stages(cfg)
    vgg16, vgg19 = trunk_files(cfg.backbone)
    assert Path(vgg16).parent == tmp_path / "d" / "backbone" and vgg16.endswith("vgg16-world.safetensors")
    assert cfg.backbone.data.train.endswith("world@train") and cfg.backbone.data.val.endswith("world@val")
    syn, dis = cfg.synthesis, cfg.dissimilarity
    # the demo's generator has no VGG loss (lambda_vgg 0): its stage stays the one without trunks, so that a run
    # with trunks reuses it (LPIPS is measured after training, jobs.stages.generator_lpips)
    plain = DemoConfig(out=str(tmp_path / "d"))
    place_stages(plain)
    assert syn == plain.synthesis and not syn.vgg_pretrained and not syn.lpips_path
    assert (dis.model.vgg_pretrained, dis.model.vgg_path, dis.model.encoder_width) == (True, vgg16, 1.0)
    assert (dis.perceptual_vgg_pretrained, dis.perceptual_vgg_path) == (True, vgg19)
    assert not backbone_done(cfg.backbone)  # nothing trained yet
    with_loss = DemoConfig(out=str(tmp_path / "d"), pretrained_trunks=True)
    with_loss.synthesis.lambda_vgg = 10.0
    place_stages(with_loss)
    assert (with_loss.synthesis.vgg_pretrained, with_loss.synthesis.vgg_path) == (True, vgg19)


def test_backbone_from_places_the_trunks_elsewhere(tmp_path):
    cfg = DemoConfig(out=str(tmp_path / "d" / "seed-1"), pretrained_trunks=True,
                     backbone_from=str(tmp_path / "d" / "backbone"))
    place_stages(cfg)
    vgg16, vgg19 = trunk_files(cfg.backbone)
    assert Path(vgg16).parent == tmp_path / "d" / "backbone" == Path(vgg19).parent
    assert cfg.dissimilarity.model.vgg_path == vgg16
    # the trunks train on their own copy of the world, so that no seed's folder is an input of the shared trunks
    assert cfg.backbone.data.train == f"synthetic:{tmp_path / 'd' / 'backbone' / 'world'}@train"
    assert cfg.dissimilarity.out.startswith(str(tmp_path / "d" / "seed-1"))


def test_without_pretrained_trunks_every_vgg_stays_random(tmp_path):
    cfg = DemoConfig(out=str(tmp_path / "d"), pretrained_trunks=False)
    place_stages(cfg)
    assert not cfg.synthesis.vgg_pretrained and not cfg.synthesis.lpips_path
    assert not cfg.dissimilarity.model.vgg_pretrained and not cfg.dissimilarity.perceptual_vgg_pretrained
    assert cfg.dissimilarity.model.encoder_width == 0.0


def _finished_run(cfg, product: str, text: str) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / product).write_bytes(b"x")
    (out / "summary.json").write_text('{"finished": true}')
    (out / "config.yaml").write_text(text)


def test_stage_done_compares_parsed_configs(tmp_path):
    import yaml

    from synboost.config import to_dict
    from synboost.jobs.stages import stage_done

    cfg = DemoConfig(out=str(tmp_path / "d"))
    place_stages(cfg)
    dis = cfg.dissimilarity
    saved = to_dict(dis)
    del saved["data"]["crop"]  # a run saved before the schema had this field (at its default)
    _finished_run(dis, "dissimilarity.safetensors", yaml.safe_dump(saved, sort_keys=False))
    assert stage_done(dis, "dissimilarity.safetensors")
    dis.data.crop = [32, 64]  # a real difference
    assert not stage_done(dis, "dissimilarity.safetensors")
    dis.data.crop = []
    saved["data"]["gone"] = 1  # a key the schema no longer has
    (Path(dis.out) / "config.yaml").write_text(yaml.safe_dump(saved))
    assert not stage_done(dis, "dissimilarity.safetensors")
    (Path(dis.out) / "config.yaml").write_text("out: [unclosed")
    assert not stage_done(dis, "dissimilarity.safetensors")
    (Path(dis.out) / "summary.json").write_text('{"finished": false}')
    _finished_run(dis, "dissimilarity.safetensors", yaml.safe_dump(to_dict(dis)))
    (Path(dis.out) / "summary.json").write_text('{"finished": false}')
    assert not stage_done(dis, "dissimilarity.safetensors")


def test_stage_done_holds_for_a_moved_run_and_another_spelling(tmp_path, monkeypatch):
    """A finished run stays finished when its folder is moved with its inputs, or named by an absolute path
    where it was saved with a relative one; a real change of an input path still makes it unfinished."""
    import shutil

    import yaml

    from synboost.config import to_dict
    from synboost.config.loading import same_path
    from synboost.jobs.stages import stage_done

    monkeypatch.chdir(tmp_path)
    cfg = DemoConfig(out="runs/d")
    place_stages(cfg)
    seg = cfg.segmentation
    assert seg.data.train == "synthetic:runs/d/world@train"
    _finished_run(seg, "segmenter.safetensors", yaml.safe_dump(to_dict(seg), sort_keys=False))
    assert stage_done(seg, "segmenter.safetensors")

    absolute = DemoConfig(out=str(tmp_path / "runs" / "d"))  # the same folder, spelled from the root
    place_stages(absolute)
    assert absolute.segmentation.data.train != seg.data.train
    assert stage_done(absolute.segmentation, "segmenter.safetensors")

    shutil.move("runs/d", "moved")  # the run folder moved, its world with it
    moved = DemoConfig(out="moved")
    place_stages(moved)
    assert stage_done(moved.segmentation, "segmenter.safetensors")
    moved.segmentation.data.val = moved.segmentation.data.val.replace("@val", "@train")  # another split
    assert not stage_done(moved.segmentation, "segmenter.safetensors")
    moved.segmentation.data.val = "synthetic:elsewhere/world@val"  # another world
    assert not stage_done(moved.segmentation, "segmenter.safetensors")

    assert not same_path("tiny", "small", "a", "b")  # names are never paths
    assert not same_path("synthetic:a/w@val", "cityscapes:a/w@val", "a/s", "a/s")  # another kind of data
    assert same_path("/data/x.safetensors", "/data/./x.safetensors", "r1", "/elsewhere/r2")  # the same file


def test_place_stages_gives_every_training_stage_the_job_seed(tmp_path):
    cfg = DemoConfig(out=str(tmp_path / "d"), seed=7)
    place_stages(cfg)
    assert {s.train.seed for s in (cfg.segmentation, cfg.synthesis, cfg.dissimilarity, cfg.pebal)} == {7}


def test_a_stage_started_with_another_config_is_trained_afresh_not_resumed(tmp_path, capsys):
    import yaml

    from synboost.config import to_dict
    from synboost.jobs.stages import resumable

    cfg = DemoConfig(out=str(tmp_path / "d"))
    place_stages(cfg)
    seg = cfg.segmentation
    assert resumable(seg, True)  # nothing there yet: resuming is a fresh start anyway
    Path(seg.out).mkdir(parents=True)
    (Path(seg.out) / "config.yaml").write_text(yaml.safe_dump(to_dict(seg)))  # an interrupted run of this config,
    (Path(seg.out) / "last.json").write_text("{}")  # with a checkpoint to resume from
    assert resumable(seg, True) and not resumable(seg, False)
    seg.train.epochs += 4  # a longer run continues it
    assert resumable(seg, True)
    seg.train.lr *= 2  # another run: continuing it would keep the old weights under the new config
    assert not resumable(seg, True)
    assert "was started with another config (train.lr: " in capsys.readouterr().out


def _record_trainers(monkeypatch, record) -> None:
    """prepare_stages with the world writer and every stage trainer replaced by ``record(name, stage_config)``
    (``world`` for the writer, the trainer's own name otherwise): nothing is written or trained."""
    import synboost.data.synthetic as synthetic
    import synboost.training.dissimilarity as dissimilarity
    import synboost.training.pebal as pebal
    import synboost.training.segmentation as segmentation
    import synboost.training.synthesis as synthesis

    monkeypatch.setattr(synthetic, "write_world", lambda w: record("world", w))
    for mod, fn in ((segmentation, "train_segmentation"), (pebal, "train_pebal"), (synthesis, "train_synthesis"),
                    (dissimilarity, "train_dissimilarity")):
        monkeypatch.setattr(mod, fn, lambda c, resume, fn=fn: record(fn, c))


def test_seeds_train_the_shared_trunks_once(monkeypatch, tmp_path):
    """prepare_stages of two seeds sharing backbone_from: each seed writes its own world and trains its own stages,
    the trunks (and their copy of the world) are made once and reused by the second seed, although that seed's
    own world was just written."""
    import synboost.training.backbone as backbone
    from synboost.jobs import stages

    made, calls = set(), []
    monkeypatch.setattr(stages, "world_is_current", lambda w: w.out in made)
    monkeypatch.setattr(stages, "backbone_done", lambda bb: bb.out in made)
    monkeypatch.setattr(backbone, "train_backbone",
                        lambda bb, resume: made.add(bb.out) or calls.append(("backbone", bb.out)))
    monkeypatch.setattr(stages, "stage_done", lambda c, product: c.out in made)
    _record_trainers(monkeypatch, lambda name, c: made.add(c.out) or calls.append((name, c.out)))
    shared = tmp_path / "d" / "backbone"
    for k in (0, 1):
        cfg = DemoConfig(out=str(tmp_path / "d" / f"seed-{k}"), pretrained_trunks=True, backbone_from=str(shared))
        place_stages(cfg)
        stages.prepare_stages(cfg)
    assert [c for c in calls if c[0] == "backbone"] == [("backbone", str(shared))]
    assert [c for c in calls if c[0] == "world"] == [
        ("world", str(tmp_path / "d" / "seed-0" / "world")), ("world", str(shared / "world")),
        ("world", str(tmp_path / "d" / "seed-1" / "world"))]
    for k in (0, 1):
        assert ("train_dissimilarity", str(tmp_path / "d" / f"seed-{k}" / "dissimilarity")) in calls


@pytest.mark.parametrize("stages_from, resume, refused", [("base", True, True), ("", True, False),
                                                          ("base", False, False)])
def test_a_changed_upstream_stage_is_not_retrained_in_the_stages_from_folder(monkeypatch, tmp_path, stages_from,
                                                                             resume, refused):
    """--full / --trunks take the default demo's stages (stages_from); a config that changes one of them (e.g.
    ``--set synthesis.lambda_vgg=10``) would train it again in that folder and replace the default demo's
    generator: refused in one line naming the folder and the fix, with the generator untouched. In the run's own
    folder, or with --fresh (resume off), it trains."""
    import synboost.jobs.stages as stages
    from synboost.errors import ConfigError

    base = tmp_path / "demo"
    cfg = DemoConfig(out=str(tmp_path / "demo-full"), stages_from=str(base) if stages_from else "")
    stages.place_stages(cfg)
    gen = Path(cfg.synthesis.out) / "generator.safetensors"
    gen.parent.mkdir(parents=True)
    gen.write_bytes(b"the default demo's generator")
    monkeypatch.setattr(stages, "world_is_current", lambda c: True)
    monkeypatch.setattr(stages, "stage_done", lambda c, product: product != "generator.safetensors")
    calls: list = []
    _record_trainers(monkeypatch, lambda name, c: calls.append(name))
    if refused:
        with pytest.raises(ConfigError) as e:
            stages.prepare_stages(cfg, resume=resume)
        assert str(Path(cfg.synthesis.out)) in str(e.value) and "--set out=DIR" in str(e.value)
        assert "train_synthesis" not in calls and "train_dissimilarity" not in calls
    else:
        stages.prepare_stages(cfg, resume=resume)
        assert "train_synthesis" in calls
    assert gen.read_bytes() == b"the default demo's generator"  # the recorder wrote nothing; the guard neither


def test_compare_seeds_its_density_fit_and_retraining_as_the_base_demo(monkeypatch, tmp_path):
    """`synboost compare` on a demo seed: the density fit and the re-training methods take that seed (they took 0
    whatever the seed), as the demo's own stages do."""
    import synboost.jobs.compare as compare
    import synboost.jobs.stages as stages
    import synboost.training.density as density
    import synboost.training.dissimilarity as dissimilarity
    import synboost.training.outlier as outlier
    from synboost.config import CompareConfig

    seen = {}
    monkeypatch.setattr(stages, "prepare_stages", lambda cfg, resume=True: ({}, False))
    monkeypatch.setattr(stages, "fusion_weights", lambda cfg, dis: {"weights": [1.0, 0.0, 0.0, 0.0]})
    monkeypatch.setattr(dissimilarity, "train_dissimilarity", lambda c, resume: seen.setdefault("resynthesis", c))
    monkeypatch.setattr(density, "fit_density", lambda c: seen.setdefault("density", c))
    monkeypatch.setattr(outlier, "train_outlier", lambda c, resume: seen.setdefault(c.method, c))
    cfg = CompareConfig(out=str(tmp_path / "cmp"), base=DemoConfig(out=str(tmp_path / "demo"), seed=2))
    compare.prepare_methods(cfg, resume=False)
    assert seen["density"].seed == 2 and seen["resynthesis"].train.seed == 2
    assert [seen[m].train.seed for m in cfg.outlier_methods] == [2, 2, 2]
    # Image Resynthesis keeps Lis et al.'s ground-truth switches while SynBoost's demo switches in the prediction
    assert cfg.base.dissimilarity.data.switch_on == "prediction"
    assert seen["resynthesis"].data.switch_on == "ground_truth" and not seen["resynthesis"].data.void_anomalies


def test_fusion_line_names_where_the_held_out_false_alarms_fall():
    from synboost.jobs.stages import fusion_line

    ens = {"weights": [1.0, 0.0, 0.0, 0.0], "images": 25, "fpr95": 0.4, "ap": 0.2,
           "official": {"fpr95": 0.45, "ap": 0.19}}
    assert "false alarms" not in fusion_line(ens)  # an ensemble.json written before the attribution
    ens["false_positive_classes"] = {"top": [{"class": "person", "fp_share": 0.2, "inlier_share": 0.01,
                                              "ratio": 20.0}], "on_misclassified": 0.61}
    line = fusion_line(ens)
    assert "1 * dissimilarity" in line and "FPR95 40.0, AP 20.0" in line
    assert "person (20.0 % of them, 20.0x its share)" in line and "61 % of them where the segmenter" in line
