"""The SynBoost detector from a pipeline file: stages composed, ensemble, sizes, bad inputs."""
import numpy as np
import pytest
import torch

from conftest import synboost_pipe
from synboost import scores
from synboost.errors import CheckpointError
from synboost.tensors import resize_maps


def test_maps_at_input_size_for_any_image_size(stages, tmp_path):
    det = synboost_pipe(stages, tmp_path)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in [(64, 128), (50, 90), (64, 128)]]
    out = det(images)
    for im, o in zip(images, out):
        assert o["anomaly"].shape == im.shape[:2] and o["segmentation"].shape == im.shape[:2]
        assert np.isfinite(o["anomaly"]).all() and 0 <= o["anomaly"].min() and o["anomaly"].max() <= 1
    every = det.score_all(images[:1])[0]
    assert {"msp", "maxlogit", "entropy", "energy", "synboost", "dissimilarity"} <= set(every)


def test_ensemble_is_the_weighted_sum_with_the_normalised_entropy(stages, tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
    only_dis = synboost_pipe(stages, tmp_path, ensemble_weights=[1.0, 0.0]).score_all([image])[0]
    np.testing.assert_allclose(only_dis["synboost"], only_dis["dissimilarity"], atol=1e-6)
    det = synboost_pipe(stages, tmp_path, ensemble_weights=[0.0, 1.0])
    only_ent = det.score_all([image])[0]["synboost"]
    # independently: the official entropy map of the segmenter's logits, at the dissimilarity size, then back up
    from synboost.tensors import images_to_batch

    with torch.no_grad():
        logits = det.model(images_to_batch([image], "cpu"))
    ent = resize_maps((32, 64), None, [scores.synboost_entropy(logits)])[0]
    ent = torch.nn.functional.interpolate(ent[:, None], size=(64, 128), mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(only_ent, ent.numpy(), atol=1e-5)
    no_ens = synboost_pipe(stages, tmp_path, ensemble=False).score_all([image])[0]
    np.testing.assert_allclose(no_ens["synboost"], no_ens["dissimilarity"], atol=1e-6)


def test_four_weights_add_the_distance_and_the_perceptual_difference(stages, tmp_path):
    """Four weights: the fused map is the weighted sum of the four maps the official weight search ranges over;
    each map computed here by hand (fp32, so that they match to rounding) at the dissimilarity size, then
    upsampled."""
    from synboost.detectors.perceptual import perceptual_difference
    from synboost.tensors import imagenet_denormalize01, imagenet_normalize01, images_to_batch

    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
    det = synboost_pipe(stages, tmp_path, ensemble_weights=[0.0, 0.0, 0.0, 1.0], precision="fp32")
    only_perc = det.score_all([image])[0]["synboost"]
    with torch.no_grad():
        batch = images_to_batch([image], "cpu")
        logits = det.model(batch)
        labels, img01 = resize_maps((32, 64), logits.argmax(1), [], imagenet_denormalize01(batch))
        from synboost.models.generator import resynthesize

        syn = resynthesize(det.generator, labels, img01)
        perc = perceptual_difference(det.vgg19, imagenet_normalize01(img01), imagenet_normalize01(syn))
        dist = resize_maps((32, 64), None, [scores.synboost_distance(logits)])[0]
    up = [torch.nn.functional.interpolate(m[:, None], size=(64, 128), mode="bilinear", align_corners=False)[0, 0]
          .numpy() for m in (perc, dist)]
    np.testing.assert_allclose(only_perc, up[0], atol=1e-4)
    def fused(weights):
        return synboost_pipe(stages, tmp_path, ensemble_weights=weights, precision="fp32").score_all([image])[0][
            "synboost"]

    np.testing.assert_allclose(fused([0.0, 0.0, 1.0, 0.0]), up[1], atol=1e-5)
    np.testing.assert_allclose(fused([0.25, 0.25, 0.25, 0.25]), 0.5 * fused([0.5, 0.5]) + 0.25 * up[1] + 0.25 * up[0],
                               atol=1e-4)


@pytest.mark.parametrize("weights", [[0.5, 0.3, 0.2], [1.0, -0.5], [0.0, 0.0]])
def test_bad_fusion_weights_are_one_clear_error(stages, tmp_path, weights):
    from synboost.errors import ConfigError

    with pytest.raises(ConfigError, match="ensemble_weights"):
        synboost_pipe(stages, tmp_path, ensemble_weights=weights)


def test_deterministic(stages, tmp_path):
    image = np.random.default_rng(2).integers(0, 255, (64, 128, 3), dtype=np.uint8)
    det = synboost_pipe(stages, tmp_path)
    a, b = det([image])[0]["anomaly"], det([image])[0]["anomaly"]
    assert np.array_equal(a, b)


def test_missing_stage_checkpoint_names_the_file_and_the_verb(stages, tmp_path):
    with pytest.raises(CheckpointError, match=r"nope.safetensors: generator checkpoint not found .*train synthesis"):
        synboost_pipe(stages, tmp_path, generator=str(tmp_path / "nope.safetensors"))
    with pytest.raises(CheckpointError, match="is a 'segmenter' checkpoint, expected 'dissimilarity'"):
        synboost_pipe(stages, tmp_path, dissimilarity=str(stages / "seg.safetensors"))


def test_random_perceptual_vgg_is_the_same_in_every_process():
    """Training data and inference must compute the perceptual difference with the same network, also when
    it is randomly initialised (no ImageNet file offline): a fixed seed, independent of the global RNG."""
    import subprocess
    import sys

    from synboost.detectors.components import perceptual_vgg

    torch.manual_seed(123)
    a = perceptual_vgg(False).state_dict()
    torch.rand(10)
    b = perceptual_vgg(False).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    code = ("import torch; from synboost.detectors.components import perceptual_vgg; "
            "print(float(perceptual_vgg(False).state_dict()['slice5.28.weight'].sum()))")
    other = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert other == pytest.approx(float(a["slice5.28.weight"].sum()), rel=1e-6)


def test_channels_last_gives_the_same_maps(stages, tmp_path):
    """The NHWC fast path (pipeline `channels_last: true`) runs every network in channels_last and gives the same
    maps as the NCHW path, up to float rounding."""
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, (64, 128, 3), dtype=np.uint8) for _ in range(2)]
    ref = synboost_pipe(stages, tmp_path).score_all(images)
    det = synboost_pipe(stages, tmp_path, channels_last=True)
    for net in (det.model, det.generator, det.dissim, det.vgg19):
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.dim() == 4
                 and m.weight.shape[-1] > 1]
        assert convs and all(getattr(m, "weight_orig", m.weight).is_contiguous(memory_format=torch.channels_last)
                             for m in convs)  # spectral norm: the stored weight, from which each pass computes
    fast = det.score_all(images)
    for r, f in zip(ref, fast):
        assert set(r) == set(f)
        for k in r:
            if k == "segmentation":  # argmax may flip only where two classes tie to rounding
                assert (r[k] != f[k]).mean() < 1e-3, k
            else:
                np.testing.assert_allclose(f[k], r[k], atol=2e-4, rtol=1e-3, err_msg=k)
