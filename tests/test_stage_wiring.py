"""How the demo wires its stages: with pretrained_trunks the world-pretrained VGGs reach every VGG consumer."""
from pathlib import Path

from synboost.config import DemoConfig
from synboost.jobs.stages import backbone_done, place_stages, trunk_files


def test_pretrained_trunks_reach_every_vgg(tmp_path):
    cfg = DemoConfig(out=str(tmp_path / "d"), pretrained_trunks=True)
    place_stages(cfg)
    vgg16, vgg19 = trunk_files(cfg.backbone)
    assert Path(vgg16).parent == tmp_path / "d" / "backbone" and vgg16.endswith("vgg16-world.safetensors")
    assert cfg.backbone.data.train.endswith("world@train") and cfg.backbone.data.val.endswith("world@val")
    syn, dis = cfg.synthesis, cfg.dissimilarity
    assert (syn.vgg_pretrained, syn.vgg_path, syn.lpips_path) == (True, vgg19, vgg16)
    assert (dis.model.vgg_pretrained, dis.model.vgg_path, dis.model.encoder_width) == (True, vgg16, 1.0)
    assert (dis.perceptual_vgg_pretrained, dis.perceptual_vgg_path) == (True, vgg19)
    assert not backbone_done(cfg.backbone)  # nothing trained yet


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


def test_place_stages_gives_every_training_stage_the_job_seed(tmp_path):
    cfg = DemoConfig(out=str(tmp_path / "d"), seed=7)
    place_stages(cfg)
    assert {s.train.seed for s in (cfg.segmentation, cfg.synthesis, cfg.dissimilarity, cfg.pebal)} == {7}
