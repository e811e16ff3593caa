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


def _items(n=3, size=(8, 12)):
    """Samples whose every tensor holds its pixel index, so a crop's position can be read back from any of them."""
    idx = torch.arange(size[0] * size[1]).view(*size)
    return [{"image": idx.expand(3, *size).float(), "synthesis": idx.expand(3, *size).float() + 0.5,
             "labels": idx.clone(), "priors": idx.expand(2, *size).float(), "target": idx.clone()}
            for _ in range(n)]


def test_samples_crop_joint_seeded_and_in_bounds():
    from synboost.training.dissimilarity import DissimSamples

    ds = DissimSamples(_items(), flip=True, seed=3, crop=(4, 6))
    positions = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            image, syn, labels, priors, target = ds[i]
            assert target.shape == (4, 6) and image.shape == (3, 4, 6) and priors.shape == (2, 4, 6)
            # every tensor was cut at the same place (and flipped alike)
            assert torch.equal(labels, target) and torch.equal(image[0].long(), target)
            assert torch.equal(syn[1] - 0.5, image[1]) and torch.equal(priors[0].long(), target)
            again = ds[i]
            assert all(torch.equal(a, b) for a, b in zip(again, (image, syn, labels, priors, target)))
            positions.add(int(target.min()))
    assert len(positions) > 3  # the crop moves between samples and epochs


def test_samples_without_crop_keep_whole_samples():
    from synboost.training.dissimilarity import DissimSamples

    ds = DissimSamples(_items(), flip=False, seed=0)
    assert ds[0][-1].shape == (8, 12) and torch.equal(ds[0][-1], _items(1)[0]["target"])


@pytest.mark.parametrize("crop", [[9, 12], [8, 13], [8], [0, 4]])
def test_crop_larger_than_size_is_a_config_error(crop):
    from synboost.config import DissimilarityConfig
    from synboost.errors import ConfigError
    from synboost.training.dissimilarity import DissimilarityTask

    cfg = DissimilarityConfig(segmenter="s.safetensors", generator="g.safetensors")
    cfg.data.size, cfg.data.crop = [8, 12], crop
    with pytest.raises(ConfigError, match="data.crop"):
        DissimilarityTask(cfg)
