from pathlib import Path

import pytest
import torch
from torch import nn

from synboost.detectors.perceptual import build_lpips, lpips_map, perceptual_difference
from synboost.errors import CheckpointError
from synboost.models.vgg import VGG16Encoder, VGG19Pyramid, load_imagenet_vgg

H, W = 64, 128
KEYS_FILE = Path(__file__).parent / "data" / "synboost-dissim-keys.txt"  # derived from the official code
# ``vgg_encoder.*`` of the official dissimilarity checkpoint ("ours" and baseline), prefix removed.
OFFICIAL_VGG_ENCODER = {
    "layer1.0": (64, 3), "layer1.2": (64, 64), "layer2.1": (128, 64), "layer2.3": (128, 128),
    "layer3.1": (256, 128), "layer3.3": (256, 256), "layer3.5": (256, 256),
    "layer4.1": (512, 256), "layer4.3": (512, 512), "layer4.5": (512, 512),
}


@pytest.fixture(scope="module")
def vgg19():
    torch.manual_seed(0)
    return VGG19Pyramid().eval()


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def test_difference_with_itself_is_zero(vgg19):
    x = torch.randn(2, 3, H, W)
    raw = perceptual_difference(vgg19, x, x.clone(), normalize=False)
    assert raw.shape == (2, H, W) and raw.dtype == torch.float32
    assert torch.count_nonzero(raw) == 0
    assert torch.count_nonzero(perceptual_difference(vgg19, x, x)) == 0  # constant map -> 0, not NaN


def test_shape_range_and_batched_equals_per_image(vgg19):
    torch.manual_seed(1)
    x, y = torch.randn(3, 3, H, W), torch.randn(3, 3, H, W)
    with torch.no_grad():
        batched = perceptual_difference(vgg19, x, y)
        single = torch.cat([perceptual_difference(vgg19, x[i:i + 1], y[i:i + 1]) for i in range(3)])
    assert batched.shape == (3, H, W)
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    for m in batched:
        assert m.min().item() == pytest.approx(0, abs=1e-6) and m.max().item() == pytest.approx(1, abs=1e-6)


def test_matches_the_official_upsample_formulation(vgg19):
    """nn.Upsample(scale_factor=2**i, mode='bicubic') as in the official VGG19_difference, batch 1."""
    torch.manual_seed(2)
    x, y = torch.randn(1, 3, H, W), torch.randn(1, 3, H, W)
    with torch.no_grad():
        fx, fy = vgg19(x), vgg19(y)
        ref = 0
        for i, (w, a, b) in enumerate(zip((1 / 32, 1 / 16, 1 / 8, 1 / 4, 1), fx, fy)):
            m = torch.mean(torch.abs(a - b), dim=1).unsqueeze(0)
            ref = ref + w * nn.Upsample(scale_factor=2 ** i, mode="bicubic")(m)
        ref = ref[0]
        ref = (ref - ref.min()) / (ref.max() - ref.min())
        torch.testing.assert_close(perceptual_difference(vgg19, x, y), ref, atol=1e-5, rtol=1e-5)
        odd = perceptual_difference(vgg19, x[..., :60, :100], y[..., :60, :100])  # sizes not /16 work too
    assert odd.shape == (1, 60, 100)


def test_a_local_difference_peaks_in_its_region(vgg19):
    torch.manual_seed(3)
    x = torch.randn(2, 3, H, W) * 0.5
    y = x.clone()
    y[0, :, 16:48, 16:48] += torch.randn(3, 32, 32) * 2  # left region in image 0
    y[1, :, 16:48, 80:112] += torch.randn(3, 32, 32) * 2  # right region in image 1
    with torch.no_grad():
        d = perceptual_difference(vgg19, x, y)
    for i, (c0, c1) in enumerate([(16, 48), (80, 112)]):
        region = torch.zeros(H, W, dtype=torch.bool)
        region[16:48, c0:c1] = True
        r, c = divmod(int(d[i].argmax()), W)
        assert region[r, c], (i, r, c)
        assert d[i][region].mean() > 3 * d[i][~region].mean()


def test_vgg16_encoder_has_official_key_names():
    enc = VGG16Encoder()
    sd = enc.state_dict()
    expect = {}
    for k, (o, i) in OFFICIAL_VGG_ENCODER.items():
        expect[k + ".weight"], expect[k + ".bias"] = (o, i, 3, 3), (o,)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expect
    assert list(sd) == list(expect)  # same order as the official state_dict
    # the full key list of the official network (tests/data)
    listed = {ln.split(" ")[0][len("vgg_encoder."):] for ln in KEYS_FILE.read_text().splitlines()
              if ln.startswith("vgg_encoder.")}
    assert listed == set(sd)
    assert all(p.requires_grad for p in enc.parameters())
    assert not any(p.requires_grad for p in VGG16Encoder(frozen=True).parameters())
    feats = enc(torch.randn(1, 3, H, W))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, H, W), (128, H // 2, W // 2), (256, H // 4, W // 4),
                                                    (512, H // 8, W // 8)]


def fake_torchvision_file(folder: Path, depth: int) -> tuple[Path, dict]:
    """A torchvision-style VGG state dict: ``features.N.*`` (each conv filled with its index) + a classifier."""
    from torchvision.models.vgg import cfgs, make_layers
    feats = make_layers(cfgs[{16: "D", 19: "E"}[depth]])
    sd = {}
    for k, v in feats.state_dict().items():
        sd["features." + k] = torch.full_like(v, float(k.split(".")[0]) + (0.5 if k.endswith("bias") else 0))
    sd["classifier.0.weight"] = torch.zeros(2, 2)
    name = {16: "vgg16-397923af.pth", 19: "vgg19-dcbb9e9d.pth"}[depth]
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(sd, folder / name)
    return folder / name, sd


def test_load_imagenet_vgg_maps_torchvision_keys(tmp_path, empty_torch_home):
    file16, sd16 = fake_torchvision_file(tmp_path / "w", 16)
    enc = load_imagenet_vgg(VGG16Encoder(), 16, path=file16)
    own = enc.state_dict()
    assert torch.equal(own["layer2.1.weight"], sd16["features.5.weight"])
    assert torch.equal(own["layer4.5.bias"], sd16["features.21.bias"])
    assert all(torch.equal(v, sd16[enc.torchvision_keys()[k]]) for k, v in own.items())

    file19, sd19 = fake_torchvision_file(empty_torch_home, 19)  # found in $TORCH_HOME/hub/checkpoints
    vgg = load_imagenet_vgg(VGG19Pyramid())
    assert torch.equal(vgg.state_dict()["slice5.28.weight"], sd19["features.28.weight"])
    assert torch.equal(vgg.state_dict()["slice1.0.bias"], sd19["features.0.bias"])
    assert not any(p.requires_grad for p in vgg.parameters())  # still frozen

    with pytest.raises(ValueError, match="VGG16"):
        load_imagenet_vgg(VGG16Encoder(), 19)


def test_load_imagenet_vgg_errors(tmp_path, empty_torch_home):
    with pytest.raises(CheckpointError) as e:
        load_imagenet_vgg(VGG16Encoder())
    msg = str(e.value)
    assert "vgg16-397923af.pth" in msg and str(empty_torch_home) in msg and "\n" not in msg
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, bad / "vgg16-397923af.pth")
    with pytest.raises(CheckpointError, match="lacks"):
        load_imagenet_vgg(VGG16Encoder(), path=bad)  # a folder holding the file


def test_lpips_offline(tmp_path, empty_torch_home):
    with pytest.raises(CheckpointError) as e:
        build_lpips("alex")
    msg = str(e.value)
    assert "alexnet-owt-7be5be79.pth" in msg and "pnet_rand=True" in msg and "\n" not in msg

    model = build_lpips("alex", pnet_rand=True)
    x = torch.rand(2, 3, H, W)
    y = x.clone()
    y[:, :, 20:40, 30:60] = torch.rand(2, 3, 20, 30)
    with torch.no_grad():
        d = lpips_map(x, y, net=model)
        same = lpips_map(x, x, net=model)
    assert d.shape == (2, H, W) and d.min() >= 0
    assert same.abs().max() < 1e-6
    assert d[:, 20:40, 30:60].mean() > d[:, :, 100:].mean()

    # trunk weights from a local torchvision-style file (keys features.N.*)
    sd = {"features." + k.split(".", 1)[1]: torch.full_like(v, 0.01) for k, v in model.net.state_dict().items()}
    empty_torch_home.mkdir(parents=True)
    torch.save(sd, empty_torch_home / "alexnet-owt-7be5be79.pth")
    loaded = build_lpips("alex")
    assert all(torch.all(v == 0.01) for v in loaded.net.state_dict().values())
    assert not any(p.requires_grad for p in loaded.parameters())
