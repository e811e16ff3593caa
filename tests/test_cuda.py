"""The CUDA paths: the same detector on the GPU gives the CPU's maps (fp32 exactly up to rounding; bf16 autocast
and channels_last close), and a training run uses the GPU with AMP. Skipped where no GPU is present (CI, the
2-core machines); `bash benchmarks/cuda_all.sh` runs them on a device."""
import numpy as np
import pytest
import torch

from conftest import seg_config, synboost_pipe

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture
def no_tf32():
    """fp32 on the GPU as fp32 (cuDNN's TF32 would differ from the CPU by ~1e-3 relative)."""
    was = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = was


def test_detector_on_cuda_matches_the_cpu(stages, tmp_path, no_tf32):
    rng = np.random.default_rng(5)
    images = [rng.integers(0, 255, (64, 128, 3), dtype=np.uint8) for _ in range(3)]
    cpu = synboost_pipe(stages, tmp_path, device="cpu").score_all(images)
    gpu = synboost_pipe(stages, tmp_path, device="cuda", amp=False).score_all(images)
    for c, g in zip(cpu, gpu):
        assert set(c) == set(g)
        for k in c:
            if k == "segmentation":
                assert (c[k] != g[k]).mean() < 1e-3
            else:
                np.testing.assert_allclose(g[k], c[k], atol=1e-3, rtol=1e-3, err_msg=k)
    for kw in ({"amp": True}, {"amp": True, "channels_last": True}):
        fast = synboost_pipe(stages, tmp_path, device="cuda", **kw).score_all(images)
        for c, f in zip(cpu, fast):
            for k in ("entropy", "synboost", "dissimilarity"):
                r = np.corrcoef(c[k].ravel(), f[k].ravel())[0, 1]
                assert r > 0.98 and np.abs(c[k] - f[k]).mean() < 0.02, (kw, k, r)


def test_segmentation_trains_on_cuda_with_amp(tiny_world, tmp_path):
    from synboost.training.segmentation import train_segmentation

    summary = train_segmentation(seg_config(tiny_world, tmp_path / "seg", "train.epochs=2", "train.device=cuda",
                                            "train.amp=true", "train.steps_per_epoch=4"), progress=False)
    assert summary["finished"] and np.isfinite(summary["val"]["score"])
