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
