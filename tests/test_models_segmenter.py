import pytest
import torch

from synboost.errors import CheckpointError
from synboost.hub.checkpoint import load_into, load_model, save_model
from synboost.models import create_model, list_models


@pytest.mark.parametrize("backbone,os_", [("tiny", 16), ("tiny", 8), ("resnet50", 16), ("resnet50", 8),
                                          ("mobilenet_v3_large", 16)])
def test_deeplab_shapes(backbone, os_):
    m = create_model("deeplabv3plus", backbone=backbone, output_stride=os_).eval()
    x = torch.randn(2, 3, 64, 128)
    with torch.no_grad():
        logits, feats = m.forward_features(x)
    assert logits.shape == (2, 19, 64, 128)
    assert feats.shape == (2, 256, 16, 32)  # decoder features at stride 4


def test_head_has_official_deepwv3plus_names():
    """The head's parameter names and shapes follow NVIDIA's DeepWV3Plus (the SynBoost / PEBAL segmenter)."""
    sd = create_model("deeplabv3plus", backbone="resnet50", output_stride=8).state_dict()
    expect = {
        "aspp.img_conv.0.weight": (256, 2048, 1, 1), "aspp.features.0.0.weight": (256, 2048, 1, 1),
        "aspp.features.1.0.weight": (256, 2048, 3, 3), "aspp.features.3.0.weight": (256, 2048, 3, 3),
        "bot_aspp.weight": (256, 1280, 1, 1), "bot_fine.weight": (48, 256, 1, 1),
        "final.0.weight": (256, 304, 3, 3), "final.1.weight": (256,), "final.3.weight": (256, 256, 3, 3),
        "classifier.weight": (19, 256, 1, 1),
    }
    for k, shape in expect.items():
        assert tuple(sd[k].shape) == shape, k
    assert "deeplabv3plus" in list_models()


def test_checkpoint_of_another_model_is_refused_with_the_keys(tmp_path):
    a = create_model("deeplabv3plus", backbone="tiny", num_classes=19)
    b = create_model("deeplabv3plus", backbone="tiny", num_classes=20)
    path = save_model(tmp_path / "a.safetensors", a.state_dict(), {"kind": "segmenter"})
    sd, meta = load_model(path, expect_kind="segmenter")
    assert meta["kind"] == "segmenter" and "synboost_version" in meta
    load_into(a, sd, str(path))  # round trip
    with pytest.raises(CheckpointError, match=r"classifier.weight \(19, 256, 1, 1\) vs model \(20, 256, 1, 1\)"):
        load_into(b, sd, str(path))
    c = create_model("deeplabv3plus", backbone="resnet50")
    with pytest.raises(CheckpointError, match="missing .* keys"):
        load_into(c, sd, str(path))
    with pytest.raises(CheckpointError, match="is a 'segmenter' checkpoint, expected 'generator'"):
        load_model(path, expect_kind="generator")


def test_foreign_and_corrupt_checkpoints(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a synboost checkpoint"):
        load_model(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "none.safetensors")
    # a pickle that would run code is refused by the safe loader
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    p = tmp_path / "evil.pth"
    p.write_bytes(pickle.dumps(Evil()))
    from synboost.hub.checkpoint import load_foreign

    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_foreign(p)


def test_missing_imagenet_weights_say_which_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    from synboost.config import SegmentationConfig, load_config
    from synboost.training.segmentation import SegmentationTask

    cfg = load_config(SegmentationConfig, None, ["model.backbone=resnet50"])
    with pytest.raises(CheckpointError, match=r"resnet50-\w+\.pth .*hub/checkpoints.*model.pretrained=false"):
        SegmentationTask(cfg).build_model()


def test_abstention_output_keeps_the_class_filters_and_forward_gives_inliers():
    torch.manual_seed(0)
    m = create_model("deeplabv3plus", backbone="tiny", aspp_dim=16, decoder_dim=16, width=8).eval()
    x = torch.randn(2, 3, 64, 128)
    with torch.no_grad():
        before = m(x)
        m.add_abstention()
        after, every = m(x), m(x, all_outputs=True)
    assert m.classifier.weight.shape == (20, 16, 1, 1)
    torch.testing.assert_close(after, before)  # the 19 class outputs are untouched by the surgery
    assert every.shape == (2, 20, 64, 128)
    torch.testing.assert_close(every[:, :19], before)
    assert m.classifier.weight[19].abs().sum() > 0  # the abstention filter is initialised (Kaiming), not zero


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_head_only_training_moves_the_head_and_optionally_the_trunk_statistics(freeze_bn):
    torch.manual_seed(0)
    m = create_model("deeplabv3plus", backbone="tiny", aspp_dim=16, decoder_dim=16, width=8).add_abstention()
    params = m.freeze_below_head(freeze_bn)
    assert {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad} == {"final", "classifier"}
    assert len(params) == sum(p.requires_grad for p in m.parameters())
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.train()
    opt = torch.optim.SGD(params, lr=0.1)
    out = m(torch.randn(2, 3, 64, 128) * 3 + 1, all_outputs=True)
    out.square().mean().backward()
    opt.step()
    after = m.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("final.") and k.endswith("weight") for k in changed)
    assert "classifier.weight" in changed
    trunk_params = {k for k, _ in m.named_parameters() if k.split(".")[0] not in ("final", "classifier")}
    assert not (changed & trunk_params)  # frozen weights never move
    trunk_stats = {k for k in changed if k.endswith("running_mean") and k.split(".")[0] not in ("final",)}
    # frozen BN (default): the trunk's running statistics stay; the official behaviour lets them drift
    assert (not trunk_stats) if freeze_bn else bool(trunk_stats)
    assert m.trunk.training is (not freeze_bn) and m.final.training
