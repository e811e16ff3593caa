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
