"""PEBAL in the detectors: the smoothed-energy score beside the base segmenter's baselines, one trunk pass."""
import numpy as np
import pytest
import torch

from synboost import scores
from synboost.config import SegModelConfig, to_dict
from synboost.detectors.components import save_component
from synboost.detectors.detector import load_pipeline, write_pipeline_file
from synboost.errors import CheckpointError, ConfigError
from synboost.models import create_model
from synboost.tensors import images_to_batch

KW = dict(backbone="tiny", aspp_dim=16, decoder_dim=16, width=8)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("pebal")
    torch.manual_seed(0)
    base = create_model("deeplabv3plus", **KW)
    sm = SegModelConfig(pretrained=False, **KW)
    save_component(d / "seg.safetensors", base, "segmenter", sm)
    peb = create_model("deeplabv3plus", **KW)
    peb.load_state_dict(base.state_dict())
    peb.add_abstention()
    with torch.no_grad():
        for p in list(peb.final.parameters()) + list(peb.classifier.parameters()):
            p.add_(torch.randn_like(p) * 0.1)  # a fine-tuned head
    pm = {**to_dict(sm), "abstention": True}
    save_component(d / "pebal.safetensors", peb, "segmenter", pm)
    drift = create_model("deeplabv3plus", **KW, abstention=True)
    drift.load_state_dict(peb.state_dict())
    for mod in drift.trunk.modules():  # trunk statistics that drifted (official behaviour)
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.add_(0.3)
            break
    save_component(d / "drift.safetensors", drift, "segmenter", pm)
    return d, base.eval(), peb.eval(), drift.eval()


def _det(d, tmp_path, **kw):
    fields = dict(method="pebal", segmenter=str(d / "seg.safetensors"), pebal=str(d / "pebal.safetensors"),
                  device="cpu")
    fields.update(kw)
    return load_pipeline(write_pipeline_file(tmp_path / "p.yaml", **fields))


def test_pebal_score_beside_the_baselines_with_one_trunk_pass(models, tmp_path):
    d, base, peb, drift = models
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 128, 3), dtype=np.uint8) for _ in range(3)]
    det = _det(d, tmp_path)
    assert det.shared_trunk and "pebal" in det.methods
    every = det.score_all(images)
    x = images_to_batch(images, "cpu")
    with torch.no_grad():
        ref_pebal = scores.gaussian_blur(scores.energy(peb(x))).numpy()
        ref_energy = scores.energy(base(x)).numpy()
    for j, o in enumerate(every):
        np.testing.assert_allclose(o["pebal"], ref_pebal[j], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(o["energy"], ref_energy[j], rtol=1e-4, atol=1e-4)  # base segmenter's energy
        assert not np.allclose(o["pebal"], o["energy"], atol=1e-2)
    # a fine-tune whose trunk statistics drifted is run separately, and still right
    det2 = _det(d, tmp_path, pebal=str(d / "drift.safetensors"))
    assert not det2.shared_trunk
    with torch.no_grad():
        ref = scores.gaussian_blur(scores.energy(drift(x))).numpy()
    np.testing.assert_allclose(det2(images)[0]["anomaly"], ref[0], rtol=1e-4, atol=1e-4)
    # the fine-tune alone as the segmenter works too
    det3 = _det(d, tmp_path, segmenter=str(d / "pebal.safetensors"), pebal="")
    np.testing.assert_allclose(det3(images)[1]["anomaly"], ref_pebal[1], rtol=1e-4, atol=1e-4)


def test_pebal_without_a_fine_tune_is_a_clear_error(models, tmp_path):
    d = models[0]
    with pytest.raises(ConfigError, match="method 'pebal' needs a PEBAL fine-tune"):
        _det(d, tmp_path, pebal="")
    with pytest.raises(CheckpointError, match="not a PEBAL fine-tune"):
        _det(d, tmp_path, pebal=str(d / "seg.safetensors"))
    with pytest.raises(CheckpointError, match="pebal checkpoint not found"):
        _det(d, tmp_path, pebal=str(d / "none.safetensors"))
