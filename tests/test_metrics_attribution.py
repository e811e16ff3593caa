"""False positives by inlier class (synboost.metrics.attribution) against a direct count."""
import numpy as np
import pytest

from synboost.metrics.attribution import class_false_positives


def test_class_false_positives_count_inliers_above_the_threshold_per_class():
    rng = np.random.default_rng(0)
    chunks = [(rng.random(50).astype(np.float32), rng.integers(0, 2, 50), rng.choice([0, 3, 11, 255], 50))
              for _ in range(3)]
    got = class_false_positives(chunks, 0.6)
    s, lab, cls = (np.concatenate([c[k] for c in chunks]) for k in range(3))
    for c in range(19):
        inl = (lab == 0) & (cls == c)
        assert got.inliers[c] == inl.sum() and got.fp[c] == (inl & (s > 0.6)).sum()
    assert got.inliers.sum() == ((lab == 0) & (cls != 255)).sum()  # unknown class: in neither count
    top = got.top([f"c{i}" for i in range(19)], min_share=0.0, n=19)
    ratios = [t["ratio"] for t in top]
    assert ratios == sorted(ratios, reverse=True) and len(top) == 3  # classes 0, 3, 11
    assert sum(t["fp_share"] for t in top) == pytest.approx(1.0)
