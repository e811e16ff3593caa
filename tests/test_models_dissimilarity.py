"""The dissimilarity network: official parameter names and shapes, every ablation switch, the fusion maths."""
from pathlib import Path

import pytest
import torch

from synboost.models import create_model
from synboost.models.dissimilarity import DissimilarityNet

KEYS = Path(__file__).parent / "data" / "synboost-dissim-keys.txt"  # derived from the official code


def _official(section: int) -> dict[str, tuple]:
    """The key -> shape list of one config in synboost-dissim-keys.txt (0: main 'ours', 1: baseline)."""
    blocks, cur = [], None
    for line in KEYS.read_text().splitlines():
        if line.startswith("# ==="):
            cur = {}
            blocks.append(cur)
        elif line and not line.startswith("#") and cur is not None:
            k, shape = line.split(" ", 1)
            cur[k] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    return blocks[section]


@pytest.mark.parametrize("section,kwargs,n_params", [
    (0, {}, 18_780_162),
    (1, {"priors": (), "spade": "none"}, 13_798_530),
])
def test_official_names_shapes_and_size(section, kwargs, n_params):
    net = DissimilarityNet(**kwargs)
    sd = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert sd == _official(section)
    assert sum(p.numel() for p in net.parameters()) == n_params


@pytest.mark.parametrize("kwargs", [
    {}, {"priors": ("entropy",)}, {"priors": ("perceptual", "distance")}, {"priors": ()},
    {"correlation": False}, {"semantic": False}, {"spade": "none"}, {"spade": "encoder"}, {"spade": "both"},
    {"semantic": False, "priors": ()},
])
def test_every_variant_runs(kwargs):
    net = create_model("dissimilarity", width=0.125, **kwargs)
    b, h, w = 2, 32, 64
    x, y = torch.randn(b, 3, h, w), torch.randn(b, 3, h, w)
    seg = torch.nn.functional.one_hot(torch.randint(0, 19, (b, h, w)), 19).permute(0, 3, 1, 2).float()
    pri = torch.rand(b, len(net.priors), h, w) if net.priors else None
    out = net(x, y, seg, pri)
    assert out.shape == (b, 2, h, w)
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_correlation_is_the_unnormalised_feature_dot_product():
    net = DissimilarityNet(width=0.125, priors=(), spade="none").eval()
    x, y = torch.randn(1, 3, 16, 32), torch.randn(1, 3, 16, 32)
    seen = {}
    net.conv1.register_forward_hook(lambda m, i, o: seen.update(inp=i[0]))  # returns None: output untouched
    seg = torch.zeros(1, 19, 16, 32)
    net(x, y, seg)
    r, s = net.vgg_encoder(x)[3], net.vgg_encoder(y)[3]
    torch.testing.assert_close(seen["inp"][:, :1], (r * s).sum(1, keepdim=True))  # prepended as channel 0


def test_bad_inputs():
    net = DissimilarityNet(width=0.125)
    seg = torch.zeros(1, 19, 20, 30)
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.randn(1, 3, 20, 30), torch.randn(1, 3, 20, 30), seg, torch.rand(1, 3, 20, 30))
    seg = torch.zeros(1, 19, 16, 32)
    with pytest.raises(ValueError, match="3 prior maps"):
        net(torch.randn(1, 3, 16, 32), torch.randn(1, 3, 16, 32), seg, torch.rand(1, 2, 16, 32))
    with pytest.raises(ValueError, match="unknown priors"):
        DissimilarityNet(priors=("depth",))


def test_a_narrow_network_takes_a_full_width_pretrained_encoder(tmp_path):
    """encoder_width=1.0 under width=0.25: the encoder is torchvision's VGG16 up to relu4_3 (its weights load from
    a vgg16().features state dict), the decoders stay narrow, and the forward gives 2-class logits."""
    import torchvision

    from synboost.models.vgg import load_imagenet_vgg

    torch.manual_seed(0)
    net = DissimilarityNet(width=0.25, encoder_width=1.0)
    narrow = DissimilarityNet(width=0.25)
    assert net.vgg_encoder.channels == (64, 128, 256, 512) and narrow.vgg_encoder.channels == (16, 32, 64, 128)
    assert net.conv1[0].out_channels == narrow.conv1[0].out_channels == 64  # the decoder's width is width's
    ref = torchvision.models.vgg16()
    sd = {f"features.{k}": v for k, v in ref.features.state_dict().items()}
    torch.save(sd, tmp_path / "vgg16-397923af.pth")
    load_imagenet_vgg(net.vgg_encoder, 16, tmp_path)
    assert torch.equal(net.vgg_encoder.layer1[0].weight, ref.features[0].weight)
    x = torch.randn(1, 3, 32, 64)
    out = net(x, x, torch.zeros(1, 19, 32, 64), torch.rand(1, 3, 32, 64))
    assert out.shape == (1, 2, 32, 64)
    assert DissimilarityNet(width=0.5).encoder_width == 0.5  # default: the network's width
