from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from synboost.models import create_model, list_models
from synboost.models.generator import generator_input, instance_edges, labels_to_onehot, resynthesize
from synboost.models.spade import SPADE, SPADEDecoderLayer, SPADEResnetBlock

H, W = 64, 128
KEYS_FILE = Path(__file__).parent / "data" / "synboost-dissim-keys.txt"  # derived from the official code
# The official "ours" checkpoint's entries for one SPADE decoder layer (conv2, nc=256, label_nc=19).
OFFICIAL_CONV2 = {
    "norm1.shared.0.weight": (128, 19, 3, 3), "norm1.shared.0.bias": (128,),
    "norm1.gamma.weight": (256, 128, 3, 3), "norm1.gamma.bias": (256,),
    "norm1.beta.weight": (256, 128, 3, 3), "norm1.beta.bias": (256,),
    "conv.weight": (256, 256, 3, 3), "conv.bias": (256,),
    "norm2.shared.0.weight": (128, 19, 3, 3), "norm2.shared.0.bias": (128,),
    "norm2.gamma.weight": (256, 128, 3, 3), "norm2.gamma.bias": (256,),
    "norm2.beta.weight": (256, 128, 3, 3), "norm2.beta.bias": (256,),
}


def small_generator(**kw):
    args = dict(ngf=8, num_upsampling=4, out_size=(H, W), z_dim=16, nef=8, encoder_size=128, spade_hidden=16)
    args.update(kw)
    return create_model("spade_generator", **args).eval()


def test_onehot_hand_made():
    labels = torch.tensor([[[0, 2, 255], [1, 1, 0]]])
    oh = labels_to_onehot(labels, 3)
    assert oh.shape == (1, 3, 2, 3) and oh.dtype == torch.float32
    expect = torch.tensor([[[1, 0, 0], [0, 0, 1]],
                           [[0, 0, 0], [1, 1, 0]],
                           [[0, 1, 0], [0, 0, 0]]], dtype=torch.float32)
    assert torch.equal(oh[0], expect)
    assert oh[0, :, 0, 2].sum() == 0  # ignore pixel: all-zero vector
    with pytest.raises(ValueError, match=r"\[7\]"):
        labels_to_onehot(torch.tensor([[[0, 7]]]), 3)


def test_instance_edges_hand_made():
    ids = torch.tensor([[[1, 1, 1, 1],
                         [1, 2, 2, 1],
                         [1, 1, 1, 1]]])
    expect = torch.tensor([[[0, 1, 1, 0],
                            [1, 1, 1, 1],
                            [0, 1, 1, 0]]], dtype=torch.float32)
    e = instance_edges(ids)
    assert e.shape == (1, 1, 3, 4)
    assert torch.equal(e[:, 0], expect)
    assert instance_edges(torch.zeros(2, 5, 6, dtype=torch.long)).sum() == 0


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_spade_equals_direct_formula(norm):
    torch.manual_seed(0)
    m = SPADE(8, label_nc=5, norm=norm, hidden=16).train()
    x = torch.randn(3, 8, 16, 32) * 2 + 1
    seg = labels_to_onehot(torch.randint(0, 5, (3, 8, 16)), 5)  # coarser than x: resized nearest
    out = m(x, seg)
    dims = (2, 3) if norm == "instance" else (0, 2, 3)
    mean, var = x.mean(dims, keepdim=True), x.var(dims, unbiased=False, keepdim=True)
    normed = (x - mean) / torch.sqrt(var + 1e-5)
    seg_up = seg.repeat_interleave(2, 2).repeat_interleave(2, 3)  # nearest x2 by hand
    actv = F.relu(F.conv2d(seg_up, m.shared[0].weight, m.shared[0].bias, padding=1))
    gamma = F.conv2d(actv, m.gamma.weight, m.gamma.bias, padding=1)
    beta = F.conv2d(actv, m.beta.weight, m.beta.bias, padding=1)
    torch.testing.assert_close(out, normed * (1 + gamma) + beta, atol=1e-4, rtol=1e-4)
    assert not any(k.startswith("param_free_norm") for k, _ in m.named_parameters())


def test_spade_decoder_layer_has_official_key_names():
    sd = SPADEDecoderLayer(256, 19).state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == OFFICIAL_CONV2
    # cross-check against the full key list of the official network (tests/data)
    lines = [ln.split(" ", 1) for ln in KEYS_FILE.read_text().splitlines() if ln.startswith("conv2.norm")
             or ln.startswith("conv2.conv")]
    assert {k[len("conv2."):] for k, _ in lines} == set(sd)
    x = SPADEDecoderLayer(16, 19)(torch.randn(2, 16, 8, 16), labels_to_onehot(torch.randint(0, 19, (2, 32, 64)), 19))
    assert x.shape == (2, 16, 8, 16)


def test_spade_resblock_shortcut():
    same = SPADEResnetBlock(8, 8, 4, hidden=8)
    diff = SPADEResnetBlock(8, 4, 4, hidden=8, spectral=False)
    assert not same.learned_shortcut and diff.learned_shortcut
    assert "conv_0.weight_orig" in same.state_dict() and "conv_s.weight" in diff.state_dict()
    seg = labels_to_onehot(torch.randint(0, 4, (2, 16, 16)), 4)
    assert same(torch.randn(2, 8, 8, 8), seg).shape == (2, 8, 8, 8)
    assert diff(torch.randn(2, 8, 8, 8), seg).shape == (2, 4, 8, 8)


@pytest.mark.parametrize("use_vae,edge,with_image", [(True, False, True), (True, True, True), (True, False, False),
                                                     (False, False, False), (False, True, False)])
def test_generator_shapes(use_vae, edge, with_image):
    g = small_generator(use_vae=use_vae, edge_channel=edge)
    labels = torch.randint(0, 19, (2, H, W))
    seg = generator_input(g, labels)
    assert seg.shape == (2, 19 + edge, H, W)
    img = torch.rand(2, 3, H, W) * 2 - 1 if with_image else None
    with torch.no_grad():
        fake, mu, logvar = g(seg, img, return_latent=True)
    assert fake.shape == (2, 3, H, W) and fake.abs().max() <= 1
    assert (mu is not None) == (use_vae and with_image)
    if mu is not None:
        assert mu.shape == logvar.shape == (2, 16)


def test_generator_num_upsampling_and_bad_sizes():
    g = small_generator(num_upsampling=6, out_size=(64, 128), ngf=4)
    assert (g.sh, g.sw) == (1, 2) and g.out_size == (64, 128)
    assert small_generator(crop_size=128, aspect_ratio=2.0, num_upsampling=5).out_size == (64, 128)
    with pytest.raises(ValueError, match="divisible"):
        small_generator(out_size=(60, 128))
    with pytest.raises(ValueError, match="label channels"):
        small_generator()(torch.zeros(1, 5, H, W))
    assert {"spade_generator", "multiscale_discriminator"} <= set(list_models())


def test_deterministic_and_stochastic_modes():
    torch.manual_seed(1)
    g = small_generator()
    seg = generator_input(g, torch.randint(0, 19, (2, H, W)))
    img = torch.rand(2, 3, H, W) * 2 - 1
    with torch.no_grad():
        a, b = g(seg, img), g(seg, img)
        assert torch.equal(a, b)
        assert torch.equal(g(seg), g(seg))  # no image: z = 0
        s1, s2 = g(seg, img, deterministic=False), g(seg, img, deterministic=False)
        assert not torch.allclose(s1, s2)
        assert not torch.allclose(g(seg, deterministic=False), g(seg, deterministic=False))


def test_resynthesize_batched_in_unit_range():
    torch.manual_seed(2)
    g = small_generator(edge_channel=True).train()
    labels = torch.randint(0, 19, (3, 2 * H, 2 * W))  # resized nearest to the generator's size
    labels[:, :4] = 255
    image = torch.rand(3, 3, 2 * H, 2 * W)
    out = resynthesize(g, labels, image, batch_size=2)
    assert out.shape == (3, 3, H, W) and out.min() >= 0 and out.max() <= 1
    assert g.training  # mode restored
    torch.testing.assert_close(out, resynthesize(g, labels, image))
    torch.testing.assert_close(out[1:2], resynthesize(g, labels[1:2], image[1:2]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_D,n_layers,edge", [(2, 4, False), (3, 3, True), (1, 2, False)])
def test_discriminator_outputs_per_scale(num_D, n_layers, edge):
    d = create_model("multiscale_discriminator", ndf=8, n_layers=n_layers, num_D=num_D, edge_channel=edge)
    seg = torch.rand(2, 19 + edge, H, W)
    out = d(seg, torch.rand(2, 3, H, W))
    assert len(out) == num_D
    for k, scale in enumerate(out):
        assert len(scale) == n_layers + 1
        assert scale[-1].shape[:2] == (2, 1)
        assert scale[0].shape[1] == 8
    assert out[0][-1].shape[-1] > out[-1][-1].shape[-1] or num_D == 1  # coarser scales give smaller maps
    same = d(torch.cat([seg, torch.rand(2, 3, H, W)], 1))
    assert len(same) == num_D
    sd = d.state_dict()
    assert "discriminator_0.model1.0.weight_orig" in sd and "discriminator_0.model0.0.weight" in sd
    with pytest.raises(ValueError, match="input channels"):
        d(torch.rand(2, 4, H, W))
