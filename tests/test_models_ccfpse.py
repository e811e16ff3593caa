"""CC-FPSE, the official SynBoost synthesis net: official key names, the importer, the pipeline interface."""
from collections import OrderedDict

import pytest
import torch

from synboost.data.labels import TRAIN_ID_TO_ID
from synboost.detectors.components import build_ccfpse, load_generator
from synboost.errors import CheckpointError
from synboost.hub.checkpoint import read_meta, save_model
from synboost.importers.ccfpse import import_ccfpse
from synboost.models import create_model, list_models
from synboost.models.ccfpse import CCFPSEGenerator, label_id_input
from synboost.models.generator import generator_input, resynthesize

# Read off the official code (image_synthesis/models/networks/{generator,architecture,condconv,normalization,
# encoder}.py) for the released Cityscapes options (ngf 64, semantic_nc 36, z_dim 256, 'more', 256x512):
OFFICIAL_G = {
    "fc.weight": (16 * 64 * 4 * 8, 256), "fc.bias": (32768,),
    "labelenc1.0.0.weight_orig": (64, 36, 3, 3), "labelenc1.0.0.weight_u": (64,), "labelenc1.0.0.weight_v": (324,),
    "labelenc1.0.1.weight": (64,), "labelenc1.0.1.running_var": (64,), "labelenc1.0.1.num_batches_tracked": (),
    "labelenc7.0.0.weight_orig": (64, 64, 3, 3), "labellat6.0.0.weight_orig": (64, 64, 1, 1),
    "labeldec6.0.1.bias": (64,),
    "head_0.gen_weights1.0.weight": (128, 100, 3, 3), "head_0.gen_weights1.2.weight": (9216, 128, 3, 3),
    "head_0.gen_se_weights2.2.bias": (1024,), "head_0.conv_0.norm_layer.running_mean": (1024,),
    "head_0.norm_0.weight": (1024,), "head_0.norm_1.running_var": (1024,), "head_0.conv_1.weight": (1024, 1024, 1, 1),
    "G_middle_1.conv_3.bias": (1024,),
    "up_0.conv_s.weight_orig": (512, 1024, 1, 1), "up_0.conv_s.weight_u": (512,), "up_0.conv_s.weight_v": (1024,),
    "up_0.norm_s.mlp_shared.0.weight": (128, 100, 3, 3), "up_0.norm_s.mlp_gamma.weight": (1024, 128, 3, 3),
    "up_0.norm_s.mlp_beta.bias": (1024,), "up_0.norm_s.param_free_norm.running_mean": (1024,),
    "up_0.gen_weights2.2.weight": (4608, 128, 3, 3), "up_0.conv_2.norm_layer.weight": (512,),
    "up_3.conv_1.weight": (64, 128, 1, 1), "up_3.conv_3.weight": (64, 64, 1, 1),
    "conv_img.weight": (3, 64, 3, 3), "conv_img.bias": (3,),
}
NOT_OFFICIAL_G = ["labelenc1.0.0.bias", "labelenc1.0.0.weight", "labelenc8.0.0.weight_orig",
                  "head_0.conv_s.weight_orig", "up_4.conv_1.weight", "up_0.norm_s.param_free_norm.weight",
                  "encoder.fc_mu.weight"]
OFFICIAL_E = {"layer1.0.weight_orig": (64, 3, 3, 3), "layer1.0.weight_u": (64,), "layer1.0.weight_v": (27,),
              "layer6.0.weight_orig": (512, 512, 3, 3), "fc_mu.weight": (256, 8192), "fc_var.bias": (256,)}
H, W = 64, 128


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These convs are small: one intra-op thread is fast, and far faster than two on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def released_on_meta() -> CCFPSEGenerator:
    """The released architecture as the pipeline builds it (with the Cityscapes train id -> label id table)."""
    with torch.device("meta"):
        return build_ccfpse()


def test_released_model_has_the_official_keys_and_shapes():
    assert "ccfpse_generator" in list_models()
    model = released_on_meta()
    sd = model.state_dict()
    g = {k: tuple(v.shape) for k, v in sd.items() if not k.startswith("encoder.")}
    e = {k: tuple(v.shape) for k, v in model.encoder.state_dict().items()}
    assert {k: g.get(k) for k in OFFICIAL_G} == OFFICIAL_G
    assert not [k for k in NOT_OFFICIAL_G if k in g]
    assert {k: e.get(k) for k in OFFICIAL_E} == OFFICIAL_E
    assert len(g) == 519 and len(e) == 22 and len(sd) == 541  # counted on the official modules
    assert sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder.")) == 128_055_555
    assert sum(p.numel() for p in model.encoder.parameters()) == 10_463_424
    assert model.out_size == (256, 512) and (model.sh, model.sw) == (4, 8) and model.semantic_nc == 36


def test_train_ids_become_official_label_ids_and_edges():
    model = released_on_meta()  # ``semantics`` uses no parameters
    train = torch.tensor([[[0, 0, 13, 255], [0, 0, 13, 13], [10, 18, 13, 13]]])
    native = model.semantics(generator_input(model, train))
    assert native.shape == (1, 36, 3, 4)
    ids = torch.from_numpy(TRAIN_ID_TO_ID[train.numpy()]).long()  # road 7, car 26, sky 23, bicycle 33, void -> 0
    assert ids.tolist() == [[[7, 7, 26, 0], [7, 7, 26, 26], [23, 33, 26, 26]]]
    assert torch.equal(native, label_id_input(ids))  # = one-hot of the label ids + their boundaries
    assert native[0, :35].sum(0).eq(1).all() and native[0, 0, 0, 3] == 1  # void -> "unlabeled"
    assert native[0, 35].tolist() == [[0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]]
    with pytest.raises(ValueError, match="train-id channels"):
        model.semantics(torch.zeros(1, 7, 2, 4))
    with torch.device("meta"):
        bare = CCFPSEGenerator()  # no table: the native label-id input only
    assert bare.label_nc == 0 and torch.equal(bare.semantics(native), native)
    with pytest.raises(ValueError, match="native 36 label-id channels, got 20"):
        bare.semantics(generator_input(model, train))


def random_official_files(tmp_path, ngf=8, prefix="", size=(H, W)):
    """Random weights in the official files' layout: bare state_dicts, saved as util.save_network does."""
    torch.manual_seed(0)
    with torch.device("meta"):
        model = CCFPSEGenerator(ngf=ngf, out_size=size)
    g, e = OrderedDict(), OrderedDict()
    meta = model.state_dict()
    for k, v in meta.items():
        if k.endswith("num_batches_tracked"):
            t = torch.tensor(1000)
        elif k.endswith("running_var"):
            t = torch.rand(v.shape) + 0.5
        elif k.endswith(("weight_u", "weight_v")):  # power-iteration vectors: filled in below from weight_orig
            continue
        else:
            t = torch.randn(v.shape) * (0.05 if v.dim() > 1 else 0.1)
        if k.endswith("weight_orig"):  # spectral norm: unit v, u = W v / |W v| (so sigma = |W v| > 0)
            w = t.flatten(1)
            vec = torch.nn.functional.normalize(torch.randn(w.shape[1]), dim=0)
            extra = {k[:-4] + "u": torch.nn.functional.normalize(w @ vec, dim=0), k[:-4] + "v": vec}
        else:
            extra = {}
        for kk, tt in {k: t, **extra}.items():
            if kk.startswith("encoder."):
                e[kk[len("encoder."):]] = tt
            else:
                g[prefix + kk] = tt
    assert len(g) + len(e) == len(meta)
    torch.save(g, tmp_path / "latest_net_G.pth")
    torch.save(e, tmp_path / "latest_net_E.pth")
    return g, e


def test_import_load_and_resynthesize(tmp_path):
    g, e = random_official_files(tmp_path, prefix="module.")
    dst = import_ccfpse(tmp_path / "latest_net_G.pth", tmp_path / "latest_net_E.pth", tmp_path / "ccfpse.safetensors",
                        size=(H, W))
    meta = read_meta(dst)
    assert meta["kind"] == "generator" and meta["architecture"] == "ccfpse" and meta["importer"] == "ccfpse"
    assert meta["size"] == [H, W] and meta["imported_from"] == ["latest_net_G.pth", "latest_net_E.pth"]
    assert meta["model"]["ngf"] == 8 and meta["model"]["num_upsampling"] == 6 and meta["model"]["z_dim"] == 256

    gen = load_generator(dst)
    assert isinstance(gen, CCFPSEGenerator) and not gen.training
    sd = gen.state_dict()
    assert len(sd) == len(g) + len(e)
    assert all(torch.equal(sd[k[len("module."):]], v) for k, v in g.items())
    assert all(torch.equal(sd[f"encoder.{k}"], v) for k, v in e.items())

    labels = torch.zeros(1, H, W, dtype=torch.long)  # road, a car, sky, a void patch
    labels[:, :20] = 10
    labels[:, 30:50, 40:90] = 13
    labels[:, 60:, :8] = 255
    image = torch.rand(1, 3, H, W)
    out = resynthesize(gen, labels.expand(3, H, W), torch.cat([image, image, 1 - image]))  # one pass (2 CPU cores)
    assert out.shape == (3, 3, H, W) and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1 and out.std() > 0.01
    assert torch.equal(out[0], out[1])  # deterministic: z = mu, no sampled noise
    assert (out[0] - out[2]).abs().max() > 1e-3  # the style comes from the image


def test_import_without_encoder_decodes_the_prior_mode(tmp_path):
    random_official_files(tmp_path, size=(64, 64))  # the smallest size with 6 up-samplings
    dst = import_ccfpse(tmp_path / "latest_net_G.pth", None, tmp_path / "g.safetensors", size=(64, 64))
    assert read_meta(dst)["imported_from"] == ["latest_net_G.pth"]
    gen = load_generator(dst)
    assert gen.encoder is None
    image = torch.rand(1, 3, 64, 64)
    z, mu, _ = gen.latent(1, "cpu", torch.float32, image)
    assert mu is None and not z.any()  # z = 0 with or without an image
    out = resynthesize(gen, torch.zeros(1, 32, 64, dtype=torch.long), image)  # labels resized to the model's size
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()


def one_line_error(fn, *match):
    with pytest.raises(CheckpointError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for m in match:
        assert m in msg, msg
    return msg


def test_wrong_files_give_one_clear_line(tmp_path):
    random_official_files(tmp_path)
    G, E = tmp_path / "latest_net_G.pth", tmp_path / "latest_net_E.pth"
    out = tmp_path / "x.safetensors"
    # the two files swapped
    one_line_error(lambda: import_ccfpse(E, G, out, size=(H, W)), "latest_net_E.pth", "is not the official CC-FPSE "
                   "generator", "looks like the encoder file", "missing", "unexpected 22 keys")
    # another network's weights
    torch.save({"conv1.weight": torch.zeros(2, 2, 1, 1)}, tmp_path / "other.pth")
    one_line_error(lambda: import_ccfpse(tmp_path / "other.pth", None, out, size=(H, W)), "other.pth",
                   "missing 519 of 519 keys", "unexpected 1 keys: conv1.weight")
    # a training-state dict, not a state_dict
    torch.save({"epoch": 3, "state": [1, 2]}, tmp_path / "state.pth")
    one_line_error(lambda: import_ccfpse(tmp_path / "state.pth", None, out), "state.pth", "bare state_dict")
    # the right generator at the wrong size (its fc fixes the latent grid)
    one_line_error(lambda: import_ccfpse(G, E, out, size=(128, 256)), "fc.weight", "needs 8 cells", "size=(256, 512)")
    one_line_error(lambda: import_ccfpse(G, E, out, size=(100, 128)), "multiples of 64")
    one_line_error(lambda: import_ccfpse(tmp_path / "absent.pth", None, out), "not found")
    assert not out.exists()
    # a checkpoint of an unknown architecture
    save_model(tmp_path / "odd.safetensors", {"w": torch.zeros(1)}, {"kind": "generator", "architecture": "pix2pixhd",
                                                                       "model": {}, "size": [H, W]})
    one_line_error(lambda: load_generator(tmp_path / "odd.safetensors"), "unknown generator architecture")


def test_registry_builds_the_small_variant_and_refuses_bad_sizes():
    with torch.device("meta"):
        m = create_model("ccfpse_generator", ngf=8, num_upsampling=5, out_size=(64, 128), with_encoder=False)
    assert m.encoder is None and (m.sh, m.sw) == (2, 4) and not hasattr(m, "labelenc7")
    with pytest.raises(ValueError, match="multiple of 2"):
        CCFPSEGenerator(out_size=(32, 64))
