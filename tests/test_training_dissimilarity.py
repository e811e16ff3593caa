"""The dissimilarity stage's training under torchrun: 2 gloo processes, rank 0 alone logs and writes."""
import json

import pytest
import torch

from conftest import logged_steps, torchrun_cli
from synboost.config import SynthesisModelConfig
from synboost.detectors.components import build_generator, save_component
from synboost.hub.checkpoint import load_model


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_ddp_two_cpu_processes(tiny_world, tiny_segmenter, tmp_path):
    torch.manual_seed(0)
    gm = SynthesisModelConfig(ngf=8, num_upsampling=4, z_dim=16, nef=8, encoder_size=128, spade_hidden=16)
    gen = build_generator(gm, [32, 64])
    save_component(tmp_path / "gen.safetensors", gen, "generator", gm, size=[32, 64])
    out = tmp_path / "ddp"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"out: {out}\nsegmenter: {tiny_segmenter['segmenter']}\ngenerator: {tmp_path / 'gen.safetensors'}\n"
        "perceptual_vgg_pretrained: false\nmodel: {width: 0.125, vgg_pretrained: false}\n"
        f"data: {{train: 'synthetic:{tiny_world}@train', size: [32, 64], variants: 1, max_images: 16}}\n"
        "train: {epochs: 1, batch_size: 2, workers: 0, steps_per_epoch: 2, log_every: 1}\n")
    torchrun_cli(["train", "dissimilarity", "--config", cfg], port=29539)
    assert logged_steps(out) == [1, 2]  # rank 0 only
    sd, meta = load_model(out / "dissimilarity.safetensors", "dissimilarity")
    assert meta["epoch"] == 0 and (out / "pipeline.yaml").is_file()
    assert json.loads((out / "summary.json").read_text())["finished"]
