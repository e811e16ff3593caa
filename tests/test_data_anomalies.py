import numpy as np

from synboost.data.anomalies import OFFICIAL_SWITCH_TARGETS, paste, switch_instances, void_mask


def _scene():
    lab = np.full((20, 30), 7, np.uint8)  # road
    inst = lab.astype(np.int32).copy()
    lab[2:6, 2:6], inst[2:6, 2:6] = 26, 26000  # car 0
    lab[10:15, 10:20], inst[10:15, 10:20] = 26, 26001  # car 1
    lab[0:3, 25:30], inst[0:3, 25:30] = 24, 24000  # person
    lab[18:20, :5], inst[18:20, :5] = 4, 4  # static (void)
    return lab, inst


def test_switching_changes_whole_instances_to_another_class():
    lab, inst = _scene()
    rng = np.random.default_rng(0)
    for _ in range(50):
        out, mask = switch_instances(lab, inst, rng)
        assert np.array_equal(out[~mask], lab[~mask])  # nothing outside the switched instances changes
        for k in (26000, 26001, 24000):
            m = inst == k
            assert mask[m].all() or not mask[m].any()  # whole instances only
            if mask[m].any():
                new = np.unique(out[m])
                assert new.size == 1 and new[0] != k // 1000 and new[0] in OFFICIAL_SWITCH_TARGETS
    _, mask = switch_instances(lab, inst, rng, fraction=1.0)
    assert mask.sum() == (inst >= 1000).sum()
    _, mask = switch_instances(lab, inst, rng, fraction=0.0)
    assert not mask.any()


def test_the_share_switched_is_uniform_in_expectation():
    lab, inst = _scene()
    rng = np.random.default_rng(1)
    counts = [len(np.unique(inst[switch_instances(lab, inst, rng)[1]])) for _ in range(3000)]
    # floor(U * 3): 0, 1, 2 instances with probability 1/3 each
    assert np.allclose(np.bincount(counts, minlength=3)[:3] / 3000, 1 / 3, atol=0.03)


def test_void_and_paste():
    lab, _ = _scene()
    m = void_mask(lab)
    assert m.sum() == 10 and m[18:20, :5].all()
    assert not void_mask(np.ones((2, 2), np.uint8)).any()  # the ego vehicle (id 1) is never an anomaly
    pred = np.full_like(lab, 3)
    out = paste(lab, pred, m)
    assert (out[m] == 3).all() and np.array_equal(out[~m], lab[~m])


def test_anomaly_mix_pastes_the_object_at_native_size_with_label_254():
    from synboost.data.anomalies import OUTLIER, anomaly_mix

    rng = np.random.default_rng(0)
    image = np.full((60, 80, 3), 100, np.uint8)
    label = rng.integers(0, 19, (60, 80)).astype(np.uint8)
    obj = rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)
    mask = np.zeros((30, 30), bool)
    mask[5:15, 8:20] = True  # bounding box 10 x 12 inside a 30 x 30 canvas
    mask[9, 8] = False
    img2, lab2 = anomaly_mix(image, label, obj, mask, rng)
    pasted = lab2 == OUTLIER
    assert pasted.sum() == mask.sum()
    ys, xs = np.nonzero(pasted)
    assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (10, 12)  # native size, cropped to the box
    y0, x0 = ys.min(), xs.min()
    np.testing.assert_array_equal(img2[y0:y0 + 10, x0:x0 + 12][mask[5:15, 8:20]], obj[5:15, 8:20][mask[5:15, 8:20]])
    np.testing.assert_array_equal(img2[~pasted], image[~pasted])  # a hard paste touches nothing else
    np.testing.assert_array_equal(lab2[~pasted], label[~pasted])
    assert image.max() == 100 and not (label == OUTLIER).any()  # inputs untouched


def test_anomaly_mix_shrinks_objects_larger_than_the_image_and_blends_edges():
    from synboost.data.anomalies import OUTLIER, anomaly_mix

    rng = np.random.default_rng(1)
    image, label = np.zeros((20, 30, 3), np.uint8), np.zeros((20, 30), np.uint8)
    big = np.full((100, 100, 3), 255, np.uint8)
    img2, lab2 = anomaly_mix(image, label, big, np.ones((100, 100), bool), rng)
    assert (lab2 == OUTLIER).sum() == 20 * 20  # shrunk by 1/5 to fit the height
    small = np.ones((21, 21), bool)
    img3, lab3 = anomaly_mix(image, label, big[:21, :21], small, rng, scale=0.5, blend=1.0)
    inside = lab3 == OUTLIER
    assert inside.sum() == 10 * 10
    edge_values = img3[inside]
    assert edge_values.min() <= 160 and edge_values.max() >= 250  # feathered edge, solid centre
    assert (img3[~inside] == 0).all()


def test_procedural_outliers_honour_the_chosen_families():
    import pytest

    from synboost.data.anomalies import ProceduralOutliers
    from synboost.errors import ConfigError

    src = ProceduralOutliers((0.2, 0.3), shapes=["box"], fills=["solid"])
    rng = np.random.default_rng(2)
    for _ in range(5):
        obj, mask = src.draw(rng, 100)
        ys, xs = np.nonzero(mask)
        assert mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()  # a box fills its bounding box
        colours = obj[mask].reshape(-1, 3)
        assert (colours == colours[0]).all()  # a solid fill
    with pytest.raises(ConfigError, match="unknown outlier shapes"):
        ProceduralOutliers(shapes=["cube"])
