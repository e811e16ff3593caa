"""Freezing a detector's own networks for inference: spectral norm and the BatchNorms after a conv folded into the
weights, bf16 networks' weights kept in bf16 with their float32 originals. The outputs equal the unfrozen
networks' up to float rounding; a caller's networks are never changed."""
import numpy as np
import pytest
import torch
from torch import nn

from conftest import synboost_pipe
from synboost.detectors.freeze import WeightCast, fold_batchnorm_, fold_spectral_norm_
from synboost.errors import ConfigError


def _randomise_bn(net: nn.Module, seed: int = 0) -> None:
    """BatchNorm statistics and affines far from the identity, so that a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g))
            m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.1)
            if m.affine:
                m.weight.data.copy_(torch.randn(c, generator=g))
                m.bias.data.copy_(torch.randn(c, generator=g))


def _bns(net: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())


@pytest.mark.parametrize("backbone", ["tiny", "resnet50"])
def test_batchnorm_folds_into_the_convs_and_the_logits_stay(backbone):
    from synboost.models import create_model

    torch.manual_seed(0)
    seg = create_model("deeplabv3plus", backbone=backbone, aspp_dim=16, decoder_dim=16, width=8).eval()
    _randomise_bn(seg)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref = seg(x)
        before = _bns(seg)
        n = fold_batchnorm_(seg)
        got = seg(x)
    # every BatchNorm of these networks follows a conv (ResNet's bottlenecks and stem, ASPP, the head)
    assert n == before and _bns(seg) == 0
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    assert fold_batchnorm_(seg) == 0  # idempotent


def test_wide_resnet_blocks_fold_only_the_batchnorms_after_a_conv():
    """WideResNet-38 is pre-activation: each block's first BN reads the block input, not a conv, and stays."""
    from synboost.models.backbones import WideResBlock

    torch.manual_seed(0)
    block = WideResBlock(16, (16, 32, 64), stride=1, dilation=2).eval()
    _randomise_bn(block)
    x = torch.randn(1, 16, 20, 24)
    with torch.no_grad():
        ref = block(x)
        assert fold_batchnorm_(block) == 2  # bn2 (after conv1) and bn3 (after conv2)
        got = block(x)
    assert isinstance(block.bn1[0], nn.BatchNorm2d)
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_hooked_or_training_batchnorms_are_left_alone():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)).eval()
    seen = []
    net[1].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    assert fold_batchnorm_(net) == 1 and isinstance(net[1], nn.BatchNorm2d) and isinstance(net[3], nn.Identity)
    net(torch.randn(1, 3, 8, 8))
    assert seen == [torch.Size([1, 4, 6, 6])]  # the hook still fires
    train = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))  # training mode: batch statistics, no fold
    assert fold_batchnorm_(train) == 0 and isinstance(train[1], nn.BatchNorm2d)


def test_spectral_norm_folds_and_the_resynthesis_stays():
    from synboost.config import SynthesisModelConfig
    from synboost.detectors.components import build_generator
    from synboost.models.generator import resynthesize

    torch.manual_seed(0)
    gen = build_generator(SynthesisModelConfig(ngf=8, num_upsampling=4, z_dim=16, nef=8, encoder_size=128,
                                               spade_hidden=16), [32, 64]).eval()
    labels = torch.randint(0, 19, (2, 32, 64))
    image = torch.rand(2, 3, 32, 64)
    with torch.no_grad():
        ref = resynthesize(gen, labels, image)
        n = fold_spectral_norm_(gen)
        got = resynthesize(gen, labels, image)
    assert n > 0 and not any(k.endswith("weight_orig") for k in gen.state_dict())
    assert torch.allclose(got, ref, atol=1e-5)


def test_weight_cast_is_autocast_exactly_and_only_inside_its_region():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    orig = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 3, 8, 8)
    cast = WeightCast()
    cast.set("net", [net], True)
    assert len(cast) == 6 and "net" in cast
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref = net(x)
        with cast.swapped("net"), torch.autocast("cpu", dtype=torch.bfloat16):
            assert all(p.dtype == torch.bfloat16 for p in net.parameters())
            got = net(x)
        plain = net(x)  # outside the region: the float32 network, callable without autocast
    assert torch.equal(got, ref)  # autocast casts the same weights with the same rounding
    assert plain.dtype == torch.float32
    assert all(torch.equal(v, orig[k]) for k, v in net.state_dict().items())
    cast.set("net", [net], False)
    assert len(cast) == 0 and "net" not in cast


def test_a_pipeline_detector_is_frozen_and_scores_as_the_unfrozen_one(stages, tmp_path):
    import copy

    from synboost.data.synthetic import generate_scene

    images = [generate_scene(200 + i, 64, 128, n_ood=1).image for i in range(2)]
    frozen = synboost_pipe(stages, tmp_path, precision="fp32")
    plain = synboost_pipe(stages, tmp_path, precision="fp32", freeze=False)
    assert frozen.frozen == ("segmenter", "generator", "vgg", "dissimilarity") and plain.frozen == ()
    assert _bns(frozen.model) == 0 and _bns(plain.model) > 0
    assert not any(k.endswith("weight_orig") for k in frozen.generator.state_dict())
    a, b = frozen.score_all(images), plain.score_all(images)
    for ra, rb in zip(a, b):
        assert (ra["segmentation"] == rb["segmentation"]).mean() > 0.999
        for m in ("synboost", "entropy", "energy"):
            assert np.allclose(ra[m], rb[m], atol=1e-3), m
    # bf16 networks hold bf16 copies of their weights, used inside their region only; on a CPU without bf16
    # units bf16 resolves to fp32 (said in one line), and no copy is made
    from synboost.runtime import cpu_bf16_supported

    units = cpu_bf16_supported()
    w = {k: v.clone() for k, v in frozen.dissim.state_dict().items()}
    frozen.set_precision("bf16")
    conv = next(m for m in frozen.dissim.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.dtype == torch.float32
    with frozen._region("dissimilarity"):
        assert conv.weight.dtype == (torch.bfloat16 if units else torch.float32)
    assert ("dissimilarity" in frozen._cast) == units
    assert frozen.score_all(images[:1])[0]["synboost"].dtype == np.float32
    frozen.set_precision("fp32")
    assert "dissimilarity" not in frozen._cast
    assert all(torch.equal(v, w[k]) for k, v in frozen.dissim.state_dict().items())
    # a copy of a caller's networks: the detector given them directly never changes them
    seg = copy.deepcopy(plain.model)
    before = {k: v.clone() for k, v in seg.state_dict().items()}
    from synboost.detectors.posthoc import PosthocDetector

    det = PosthocDetector(seg, "entropy", precision="bf16")
    det(images[:1])
    assert det.frozen == () and all(torch.equal(v, before[k]) for k, v in seg.state_dict().items())


def test_a_segmenter_given_in_memory_is_not_rewritten(stages, tmp_path):
    import copy

    from synboost.detectors.components import load_segmenter
    from synboost.detectors.detector import build_detector, read_pipeline, write_pipeline_file

    seg = load_segmenter(str(stages / "seg.safetensors"))[0]
    mine = copy.deepcopy(seg)
    p = write_pipeline_file(tmp_path / "p.yaml", method="synboost", segmenter=str(stages / "seg.safetensors"),
                            generator=str(stages / "gen.safetensors"), dissimilarity=str(stages / "dis.safetensors"),
                            perceptual_vgg_pretrained=False, device="cpu")
    det = build_detector(read_pipeline(p), tmp_path, segmenter=mine, precision="bf16")
    assert "segmenter" not in det.frozen and "generator" in det.frozen
    assert _bns(mine) == _bns(seg) and all(p.dtype == torch.float32 for p in mine.parameters())


def test_freezing_a_network_in_training_mode_is_refused(stages, tmp_path):
    det = synboost_pipe(stages, tmp_path, freeze=False)
    det.generator.train()
    with pytest.raises(ConfigError, match="freeze: .* is in training mode"):
        det.freeze()
