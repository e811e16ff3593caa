import numpy as np

from synboost.data.kinds import open_dataset
from synboost.data.labels import ID_TO_TRAIN_ID, NUM_CLASSES, ids_to_train_ids
from synboost.data.synthetic import generate_scene, ood_object, scene_seed, split_sizes


def test_deterministic_for_a_seed():
    a, b, c = generate_scene(11, 64, 128, n_ood=2), generate_scene(11, 64, 128, n_ood=2), generate_scene(12, 64, 128)
    for k in ("image", "label_ids", "instance_ids", "anomaly"):
        assert np.array_equal(getattr(a, k), getattr(b, k))
    assert not np.array_equal(a.image, c.image)
    # a scene's seed does not depend on the other splits' sizes
    assert scene_seed(0, "test", 5) == scene_seed(0, "test", 5) != scene_seed(0, "val", 5)


def test_label_space_and_anomaly_masks():
    seen = np.zeros(NUM_CLASSES, int)
    for s in range(40):
        sc = generate_scene(s, 96, 192, n_ood=2, ego=s % 4 == 0)
        ids = np.unique(sc.label_ids)
        assert set(ids.tolist()) <= {0, 1, 4, 5} | {i for i in range(34) if ID_TO_TRAIN_ID[i] != 255}
        train = ids_to_train_ids(sc.label_ids)
        seen += np.bincount(train[train < 255], minlength=NUM_CLASSES) > 0
        # anomalies are exactly the "unlabeled" pixels; the ego vehicle and the clutter are void in both maps
        assert np.array_equal(sc.anomaly == 1, sc.label_ids == 0)
        assert np.array_equal(sc.anomaly == 255, np.isin(sc.label_ids, [1, 4, 5]))
        assert (sc.anomaly == 1).any()
        # instance ids: thing classes carry id*1000+k, stuff carries its label id
        inst_cls = np.where(sc.instance_ids >= 1000, sc.instance_ids // 1000, sc.instance_ids)
        assert np.array_equal(inst_cls, sc.label_ids)
    # every one of the 19 classes occurs in the world (most of them in many scenes)
    assert (seen > 0).all(), seen
    assert (seen >= 5).sum() >= 14


def test_classes_have_distinct_colour_statistics():
    """Each class has its own colour statistics, so that a segmenter has something to learn."""
    sums = np.zeros((NUM_CLASSES, 3))
    counts = np.zeros(NUM_CLASSES)
    for s in range(40):  # building and fence vary per scene around near means: 20 scenes leave them 2.5 apart
        sc = generate_scene(100 + s, 96, 192)
        t = ids_to_train_ids(sc.label_ids)
        for c in range(NUM_CLASSES):
            m = t == c
            sums[c] += sc.image[m].sum(0)
            counts[c] += m.sum()
    means = sums[counts > 0] / counts[counts > 0, None]
    d = np.linalg.norm(means[:, None] - means[None], axis=-1) + np.eye(len(means)) * 1e9
    assert d.min() > 3.0  # no two classes share a mean colour
    road, sky = sums[0] / counts[0], sums[10] / counts[10]
    assert sky[2] > road[2] + 20  # sky is bluer than the road


def test_ood_objects():
    rng = np.random.default_rng(0)
    for _ in range(20):
        col, mask = ood_object(rng, 40)
        assert col.shape == (40, 40, 3) and mask.shape == (40, 40) and mask.dtype == bool
        assert 20 < mask.sum() < 1600


def test_world_layout_is_read_by_the_readers(tiny_world):
    sizes = split_sizes(60, 0.1, 0.2)
    train = open_dataset(f"synthetic:{tiny_world}@train")
    val = open_dataset(f"cityscapes:{tiny_world}@val")
    test = open_dataset(f"synthetic:{tiny_world}")
    assert (len(train), len(val), len(test)) == (sizes["train"], sizes["val"], sizes["test"])
    s = train[0]
    assert s["image"].shape == (64, 128, 3) and s["label"].shape == (64, 128)
    assert s["label"].max() <= 255 and (s["label"] < 19).mean() > 0.9
    t = test[0]
    assert set(np.unique(t["anomaly"]).tolist()) <= {0, 1, 255} and (t["anomaly"] == 1).any()
    assert np.array_equal(t["label"] == 255, t["anomaly"] != 0)  # anomalies and void are ignored semantically
    inst = open_dataset(f"synthetic:{tiny_world}@train", with_instances=True)[0]["instances"]
    assert inst.shape == (64, 128)


def test_street_clutter_is_varied_void_and_never_the_test_objects():
    """The void clutter (static / dynamic) occurs in most scenes, in many colours, on the sidewalks, by the road's
    edge and in the middle of the road (road on both sides of it); the out-of-distribution objects (label 0) occur
    only where asked for (test scenes)."""
    import cv2

    scenes = [generate_scene(200 + s, 128, 256) for s in range(40)]
    hues, on_road, mid_road, with_clutter = [], 0, 0, 0
    for sc in scenes:
        clutter = np.isin(sc.label_ids, [4, 5])
        assert not (sc.label_ids == 0).any() and not (sc.anomaly == 1).any()  # no OOD object without n_ood
        assert (sc.anomaly[clutter] == 255).all()
        if not clutter.any():
            continue
        with_clutter += 1
        n, comp = cv2.connectedComponents(clutter.astype(np.uint8))
        hsv = cv2.cvtColor(sc.image, cv2.COLOR_RGB2HSV)
        for k in range(1, n):
            part = comp == k
            if part.sum() >= 12:
                hues.append(np.median(hsv[..., 0][part]))
                # road directly below the object's lowest row: it stands on the road (or its kerb line)
                ys, xs = np.nonzero(part)
                below = sc.label_ids[min(ys.max() + 1, sc.label_ids.shape[0] - 1), xs]
                on_road += int((below == 7).mean() > 0.5)
                # road to the left and to the right of its bottom row: it stands inside the road, not at its kerb
                y, x0, x1 = ys.max(), xs[ys == ys.max()].min(), xs[ys == ys.max()].max()
                row = sc.label_ids[y]
                mid_road += int(x0 >= 3 and x1 <= row.size - 4 and (row[max(0, x0 - 6):x0 - 2] == 7).all()
                                and (row[x1 + 3:x1 + 7] == 7).all())
    assert with_clutter >= 30
    assert len(hues) >= 60
    assert np.histogram(hues, bins=6, range=(0, 180))[0].min() >= 2  # every sixth of the hue circle occurs
    assert on_road >= 3
    assert mid_road >= 12  # world v3, with clutter only by the kerb: 7 of these 40 scenes; v4: 19
