"""The dissimilarity stage's training under torchrun: 2 gloo processes, rank 0 alone logs and writes."""
import json

import pytest
import torch

from conftest import logged_steps, torchrun_cli
from synboost.config import SynthesisModelConfig
from synboost.detectors.components import build_generator, save_component
from synboost.hub.checkpoint import load_model


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_ddp_two_cpu_processes(tiny_world, tiny_segmenter, tmp_path):
    torch.manual_seed(0)
    gm = SynthesisModelConfig(ngf=8, num_upsampling=4, z_dim=16, nef=8, encoder_size=128, spade_hidden=16)
    gen = build_generator(gm, [32, 64])
    save_component(tmp_path / "gen.safetensors", gen, "generator", gm, size=[32, 64])
    out = tmp_path / "ddp"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"out: {out}\nsegmenter: {tiny_segmenter['segmenter']}\ngenerator: {tmp_path / 'gen.safetensors'}\n"
        "perceptual_vgg_pretrained: false\nmodel: {width: 0.125, vgg_pretrained: false}\n"
        f"data: {{train: 'synthetic:{tiny_world}@train', size: [32, 64], variants: 1, max_images: 16}}\n"
        "train: {epochs: 1, batch_size: 2, workers: 0, steps_per_epoch: 2, log_every: 1}\n")
    torchrun_cli(["train", "dissimilarity", "--config", cfg], port=29539)
    assert logged_steps(out) == [1, 2]  # rank 0 only
    sd, meta = load_model(out / "dissimilarity.safetensors", "dissimilarity")
    assert meta["epoch"] == 0 and (out / "pipeline.yaml").is_file()
    assert json.loads((out / "summary.json").read_text())["finished"]


def _items(n=3, size=(8, 12)):
    """Samples whose every tensor holds its pixel index, so a crop's position can be read back from any of them."""
    idx = torch.arange(size[0] * size[1]).view(*size)
    return [{"image": idx.expand(3, *size).float(), "synthesis": idx.expand(3, *size).float() + 0.5,
             "labels": idx.clone(), "priors": idx.expand(2, *size).float(), "target": idx.clone()}
            for _ in range(n)]


def test_samples_crop_joint_seeded_and_in_bounds():
    from synboost.training.dissimilarity import DissimSamples

    ds = DissimSamples(_items(), flip=True, seed=3, crop=(4, 6))
    positions = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            image, syn, labels, priors, target = ds[i]
            assert target.shape == (4, 6) and image.shape == (3, 4, 6) and priors.shape == (2, 4, 6)
            # every tensor was cut at the same place (and flipped alike)
            assert torch.equal(labels, target) and torch.equal(image[0].long(), target)
            assert torch.equal(syn[1] - 0.5, image[1]) and torch.equal(priors[0].long(), target)
            again = ds[i]
            assert all(torch.equal(a, b) for a, b in zip(again, (image, syn, labels, priors, target)))
            positions.add(int(target.min()))
    assert len(positions) > 3  # the crop moves between samples and epochs


def test_samples_without_crop_keep_whole_samples():
    from synboost.training.dissimilarity import DissimSamples

    ds = DissimSamples(_items(), flip=False, seed=0)
    assert ds[0][-1].shape == (8, 12) and torch.equal(ds[0][-1], _items(1)[0]["target"])


@pytest.mark.parametrize("crop", [[9, 12], [8, 13], [8], [0, 4]])
def test_crop_larger_than_size_is_a_config_error(crop):
    from synboost.config import DissimilarityConfig
    from synboost.errors import ConfigError
    from synboost.training.dissimilarity import DissimilarityTask

    cfg = DissimilarityConfig(segmenter="s.safetensors", generator="g.safetensors")
    cfg.data.size, cfg.data.crop = [8, 12], crop
    with pytest.raises(ConfigError, match="data.crop"):
        DissimilarityTask(cfg)


def test_lr_decay_replaces_the_plateau_schedule():
    from synboost.config import DissimilarityConfig
    from synboost.errors import ConfigError
    from synboost.training.dissimilarity import DissimilarityTask

    def task(decay):
        return DissimilarityTask(DissimilarityConfig(segmenter="s.safetensors", generator="g.safetensors",
                                                     lr_decay=decay))

    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    # the default is the official schedule: halve on a stalled held-out loss, per epoch
    assert isinstance(task(0.0).build_scheduler(opt, 100), torch.optim.lr_scheduler.ReduceLROnPlateau)
    sched = task(0.25).build_scheduler(opt, 100)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # constant for the first 75 steps, then linear to 0 over the last quarter
    assert lrs[:76] == [1e-3] * 76
    assert lrs[88] == pytest.approx(1e-3 * 12 / 25) and lrs[99] < 1e-4
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    for bad in (-0.1, 1.5):  # refused when the task is made, before the anomaly data
        with pytest.raises(ConfigError, match="lr_decay"):
            task(bad)


def _class_items():
    """Two samples: road (0) inliers, a few person (11) inliers, an anomaly (1) and an ignored pixel."""
    items = []
    for k in range(2):
        labels = torch.zeros(4, 6, dtype=torch.long)
        labels[0, :2] = 11
        labels[3, 3] = 11  # a person-labelled anomaly pixel: the rare-class weight is for inliers only
        labels[1, 5] = 255  # an inlier pixel of unknown class
        target = torch.zeros(4, 6, dtype=torch.long)
        target[3, 3:] = 1
        target[3, 0] = 255
        items.append({"image": torch.zeros(3, 4, 6), "synthesis": torch.zeros(3, 4, 6), "labels": labels,
                      "priors": torch.zeros(0, 4, 6), "target": target})
    return items


def test_inlier_class_weights_favour_rare_classes_and_average_one():
    from synboost.training.dissimilarity import inlier_class_weights

    items = _class_items()
    w = inlier_class_weights(items)
    # inlier pixels of a known class: 2 x (2 person + 17 road), class shares 2/19 and 17/19
    f = torch.zeros(19, dtype=torch.float64)
    f[11], f[0] = 2 / 19, 17 / 19
    raw = 1 / torch.log(1.02 + f)
    assert w[11] / w[0] == pytest.approx(float(raw[11] / raw[0]), rel=1e-5) and w[11] > 3 * w[0]
    assert float(f[11] * w[11] + f[0] * w[0]) == pytest.approx(1.0, rel=1e-5)
    assert w[5] == 1.0  # a class with no inlier pixel


def test_inlier_class_weights_make_a_rare_class_false_alarm_cost_more():
    from synboost.config import DissimilarityConfig
    from synboost.training.dissimilarity import DissimilarityTask, enet_class_weights

    items = _class_items()

    class Fixed(torch.nn.Module):  # says "anomaly" on the person pixels, "inlier" elsewhere, whatever the input
        def forward(self, image, syn, onehot, priors):
            person = onehot[:, 11:12]
            return torch.cat([1 - 3 * person, 3 * person], 1)

    def loss(on):
        cfg = DissimilarityConfig(segmenter="s", generator="g", inlier_class_weights=on)
        cfg.model.priors = []
        task = DissimilarityTask(cfg, progress=False, samples={"train": items, "held": items, "priors": []})
        task._prepare(torch.device("cpu"))
        batch = [torch.stack([it[k] for it in items]) for k in ("image", "synthesis", "labels", "priors", "target")]
        return float(task.train_step(Fixed(), batch, torch.device("cpu"))[0]), task

    off, _ = loss(False)
    on, task = loss(True)
    assert on > 1.5 * off  # the person false alarms weigh more
    batch = [torch.stack([it[k] for it in items]) for k in ("image", "synthesis", "labels", "priors", "target")]
    labels, target = batch[2], batch[4]
    logits = Fixed()(None, None, task_onehot(labels), None)
    enet = enet_class_weights(items)
    # the per-pixel path reduces to the official weighted cross-entropy when every inlier class weight is 1
    task.inlier_weights = torch.ones(19)
    ref = torch.nn.functional.cross_entropy(logits, target, weight=enet, ignore_index=255)
    assert float(task.train_step(Fixed(), batch, torch.device("cpu"))[0]) == pytest.approx(float(ref), rel=1e-6)
    # by hand: the anomaly / inlier weight, times the class weight on inlier pixels of a known class only
    task.inlier_weights = torch.ones(19)
    task.inlier_weights[11] = 5.0
    ce = torch.nn.functional.cross_entropy(logits, target.clamp(max=1), reduction="none")
    w = enet[target.clamp(max=1)] * (target != 255)
    w = torch.where((target == 0) & (labels == 11), 5 * w, w)
    want = float((ce * w).sum() / w.sum())
    assert float(task.train_step(Fixed(), batch, torch.device("cpu"))[0]) == pytest.approx(want, rel=1e-6)


def task_onehot(labels):
    from synboost.models.generator import labels_to_onehot

    return labels_to_onehot(labels, 19)


def test_ensemble_grid_is_the_official_grid():
    import itertools

    from synboost.training.dissimilarity import ENSEMBLE_GRID, ENSEMBLE_MAPS, OFFICIAL_ENSEMBLE

    # {0..3}^4 without (0, 0, 0, 0), L1-normalised, one entry per distinct vector
    distinct = {tuple(round(x / sum(w), 6) for x in w) for w in itertools.product(range(4), repeat=4) if sum(w)}
    assert len(ENSEMBLE_MAPS) == 4 and len(ENSEMBLE_GRID) == len(distinct) < 255
    assert {tuple(round(x, 6) for x in w) for w in ENSEMBLE_GRID} == distinct
    assert all(abs(sum(w) - 1) < 1e-12 for w in ENSEMBLE_GRID)
    assert OFFICIAL_ENSEMBLE in ENSEMBLE_GRID and ENSEMBLE_GRID[0] == (1.0, 0.0, 0.0, 0.0)


def _maps(seed, informative):
    """Per-image labels (5 % anomalies, some ignored pixels) and the four maps: the one named ``informative``
    sees the anomalies, the others are noise."""
    import numpy as np

    from synboost.training.dissimilarity import ENSEMBLE_MAPS

    rng = np.random.default_rng(seed)
    labs, maps = [], {k: [] for k in ENSEMBLE_MAPS}
    for _ in range(4):
        lab = (rng.random((16, 24)) < 0.05).astype(np.uint8)
        lab[0, :3] = 255
        labs.append(lab)
        for k in ENSEMBLE_MAPS:
            noise = rng.random(lab.shape).astype(np.float32)
            maps[k].append(np.clip(0.5 * lab + 0.4 * noise, 0, 1) if k == informative else noise)
    return maps, labs


@pytest.mark.parametrize("informative", ["dissimilarity", "entropy", "distance", "perceptual"])
def test_ensemble_search_picks_the_map_that_sees_the_anomalies(informative):
    from synboost.metrics.pixel import pixel_metrics
    from synboost.training.dissimilarity import ENSEMBLE_MAPS, search_ensemble_weights

    maps, lab = _maps(1, informative)
    res = search_ensemble_weights(maps, lab)
    assert res["weights"] == [1.0 if k == informative else 0.0 for k in ENSEMBLE_MAPS]
    assert res["fpr95"] == min(r["fpr95"] for r in res["grid"]) and res["maps"] == list(ENSEMBLE_MAPS)
    m = pixel_metrics([sum(w * maps[k][i] for w, k in zip(res["weights"], ENSEMBLE_MAPS)) for i in range(4)], lab)
    assert res["ap"] == pytest.approx(m.ap) and res["fpr95"] == pytest.approx(m.fpr95)


def test_fusion_weights_are_chosen_on_held_out_training_images_and_cached(tiny_world, tiny_segmenter, stages,
                                                                         tmp_path, monkeypatch):
    """The weights come from the stage's held-out training images (void clutter as anomalies), are written to
    ensemble.json beside the network with its sha256, reused while the network is the same file, chosen again when
    it changes; a missing network is one clear error naming the file."""
    import shutil

    from synboost.config import DissimilarityConfig, load_config
    from synboost.errors import ConfigError
    from synboost.training import dissimilarity as D

    net = tmp_path / "dis" / "dissimilarity.safetensors"
    net.parent.mkdir()
    shutil.copyfile(stages / "dis.safetensors", net)
    cfg = load_config(DissimilarityConfig, None, [
        f"out={net.parent}", f"segmenter={tiny_segmenter['segmenter']}", f"generator={stages / 'gen.safetensors'}",
        "perceptual_vgg_pretrained=false", f"data.train=synthetic:{tiny_world}@train", "data.size=[32,64]",
        "data.heldout_fraction=0.2", "train.device=cpu"])
    res = D.select_ensemble_weights(cfg, progress=False)
    assert tuple(res["weights"]) in D.ENSEMBLE_GRID and res["anomaly_pixels"] > 0 and res["images"] >= 2
    assert res["official"]["weights"] == [0.75, 0.25, 0.0, 0.0] and res["fpr95"] <= res["official"]["fpr95"]
    saved = json.loads((net.parent / D.ENSEMBLE_FILE).read_text())
    assert saved["checkpoint_sha256"] == D.sha256_of(net) and saved["weights"] == res["weights"]
    fpc = res["false_positive_classes"]  # where the chosen fusion's held-out false alarms fall, by true class
    assert len(fpc["fp"]) == 19 and all(0 <= f <= n for f, n in zip(fpc["fp"], fpc["inliers"]))
    assert sum(fpc["inliers"]) > 0 and 0.0 <= fpc["on_misclassified"] <= 1.0

    def no_work(*a, **k):
        raise AssertionError("the cached weights should have been reused")

    monkeypatch.setattr(D, "make_samples", no_work)
    assert D.select_ensemble_weights(cfg, progress=False) == saved
    older = {k: v for k, v in saved.items() if k != "false_positive_classes"}  # written before the attribution
    (net.parent / D.ENSEMBLE_FILE).write_text(json.dumps(older))
    with pytest.raises(AssertionError, match="cached"):  # chosen again, to count its false alarms
        D.select_ensemble_weights(cfg, progress=False)
    (net.parent / D.ENSEMBLE_FILE).write_text(json.dumps(saved))
    net.write_bytes(net.read_bytes() + b" ")  # another file: the cache no longer applies
    with pytest.raises(AssertionError, match="cached"):
        D.select_ensemble_weights(cfg, progress=False)
    with pytest.raises(ConfigError, match="nothing.safetensors"):
        D.select_ensemble_weights(cfg, tmp_path / "nothing.safetensors", progress=False)


@pytest.mark.parametrize("switch_on", ["ground_truth", "prediction"])
def test_switched_instances_go_into_the_chosen_label_map(tiny_world, tiny_segmenter, stages, switch_on):
    """Variant 0 is the segmenter's prediction; the label-switch variants carry the ground truth (official) or the
    prediction (``switch_on: prediction``) outside the switched instances and the void, and the switched
    instances' new classes inside."""

    from synboost.config import DissimilarityConfig, load_config
    from synboost.data.kinds import open_dataset
    from synboost.detectors.components import load_generator, load_segmenter
    from synboost.training import dissimilarity as D

    cfg = load_config(DissimilarityConfig, None, [
        f"segmenter={tiny_segmenter['segmenter']}", f"generator={stages / 'gen.safetensors'}",
        "perceptual_vgg_pretrained=false", f"data.train=synthetic:{tiny_world}@train", "data.size=[32,64]",
        "data.variants=3", f"data.switch_on={switch_on}", "model.priors=[entropy]", "train.device=cpu"])
    seg, _ = load_segmenter(cfg.segmenter, "cpu")
    gen = load_generator(cfg.generator, "cpu")
    reader = open_dataset(cfg.data.train, with_instances=True)
    items = D.make_samples(cfg, "cpu", [0, 1, 2, 3], reader, seg, gen, None, progress=False)
    assert len(items) == 12
    differs = switched = unchanged = 0
    for k in range(0, 12, 3):
        pred, gt = items[k]["labels"].numpy(), items[k]["classes"].numpy()
        for it in items[k + 1:k + 3]:
            lab, target = it["labels"].numpy(), it["target"].numpy()
            keep = (target == 0) & (gt != 255)  # inlier pixels of a known class: neither switched nor void
            want = pred if switch_on == "prediction" else gt
            assert (lab[keep] == want[keep]).all()
            differs += int((pred[keep] != gt[keep]).sum())
            inside = (target == 1) & (gt != 255)  # switched instances (the void has no true class)
            switched += int(inside.sum())
            assert (lab[inside] != gt[inside]).all()  # a switch always gives another class
            if switch_on == "prediction":  # a switched anomaly pixel's label always differs from variant 0's
                assert (lab[inside] != pred[inside]).all()
                ignored = (target == 255) & (gt != 255) & (lab == pred)
                unchanged += int(ignored.sum())
    assert differs > 0 and switched > 0  # the tiny segmenter errs, and some instances were switched
    if switch_on == "prediction":
        assert unchanged > 0  # some switched pixels got the class the segmenter predicts there: ignored, not 1


def test_a_batch_of_variants_equals_each_variant_made_alone(tiny_world, tiny_segmenter, stages):
    """make_samples runs an image's variants through the generator and the VGG19 as one batch: each sample's
    resynthesis and perceptual difference are those of its own label map run alone (float32, to rounding)."""
    from synboost.config import DissimilarityConfig, load_config
    from synboost.data.kinds import open_dataset
    from synboost.detectors.components import load_generator, load_segmenter, perceptual_vgg
    from synboost.detectors.synboost import dissimilarity_inputs
    from synboost.tensors import imagenet_denormalize01
    from synboost.training import dissimilarity as D

    cfg = load_config(DissimilarityConfig, None, [
        f"segmenter={tiny_segmenter['segmenter']}", f"generator={stages / 'gen.safetensors'}",
        "perceptual_vgg_pretrained=false", f"data.train=synthetic:{tiny_world}@train", "data.size=[32,64]",
        "data.variants=3", "model.priors=[perceptual,entropy]", "train.device=cpu"])
    seg, _ = load_segmenter(cfg.segmenter, "cpu")
    gen = load_generator(cfg.generator, "cpu")
    torch.manual_seed(0)
    vgg = perceptual_vgg(False, "", "cpu")
    reader = open_dataset(cfg.data.train, with_instances=True)
    items = D.make_samples(cfg, "cpu", [0, 1], reader, seg, gen, vgg, progress=False)
    assert len(items) == 6
    for k in (0, 3):  # each image's three variants share its image and entropy, and differ in their label maps
        first = items[k]
        for it in items[k:k + 3]:
            assert torch.equal(it["image"], first["image"]) and torch.equal(it["priors"][1], first["priors"][1])
            img01, ent = imagenet_denormalize01(it["image"][None]), it["priors"][1][None]
            alone = dissimilarity_inputs(img01, it["labels"][None], gen, vgg, ent, None, ["perceptual", "entropy"])
            assert torch.allclose(alone["synthesis"][0], it["synthesis"], atol=1e-4)
            assert torch.allclose(alone["priors"][0, 0], it["priors"][0], atol=1e-4)
        assert not torch.allclose(items[k]["synthesis"], items[k + 1]["synthesis"])  # other label map, other redraw
    assert not torch.equal(items[0]["image"], items[3]["image"])  # two images


def test_a_bad_switch_on_is_a_config_error(tiny_segmenter, stages):
    from synboost.config import DissimilarityConfig, load_config
    from synboost.errors import ConfigError
    from synboost.training.dissimilarity import DissimilarityTask

    cfg = load_config(DissimilarityConfig, None, [
        f"segmenter={tiny_segmenter['segmenter']}", f"generator={stages / 'gen.safetensors'}",
        "data.switch_on=groundtruth"])
    with pytest.raises(ConfigError, match="switch_on must be ground_truth or prediction"):
        DissimilarityTask(cfg, progress=False)
    cfg = load_config(DissimilarityConfig, None, [
        f"segmenter={tiny_segmenter['segmenter']}", f"generator={stages / 'gen.safetensors'}", "data.variants=0"])
    with pytest.raises(ConfigError, match="data.variants must be at least 1"):
        DissimilarityTask(cfg, progress=False)


def test_heldout_false_positives_count_by_true_class_and_segmenter_mistakes():
    """At the best-F1 threshold of the fused map: a person pixel scored above every anomaly is a false positive of
    class person, counted as one the segmenter got wrong (its label map says road there)."""
    import numpy as np

    from synboost.training.dissimilarity import ENSEMBLE_MAPS, heldout_false_positives

    classes = torch.tensor([[11, 11, 0, 0, 0, 0, 0, 0]], dtype=torch.uint8)  # person, person, road x6
    labels = torch.tensor([[11, 0, 0, 0, 0, 0, 0, 0]])  # the segmenter's map: the second person read as road
    dis = np.array([[0.1, 0.99, 0.2, 0.95, 0.96, 0.97, 0.3, 0.2]])
    target = np.array([[0, 0, 0, 1, 1, 1, 0, 0]])
    maps = {k: [dis if k == "dissimilarity" else 5 * np.ones_like(dis)] for k in ENSEMBLE_MAPS}
    res = heldout_false_positives([{"classes": classes, "labels": labels}], maps, [target], [1, 0, 0, 0])
    assert 0.3 <= res["threshold"] < 0.95
    assert res["fp"][11] == 1 and sum(res["fp"]) == 1 and res["inliers"][11] == 2 and res["inliers"][0] == 3
    assert res["top"][0]["class"] == "person" and res["top"][0]["ratio"] == pytest.approx(1 / (2 / 5))
    assert res["on_misclassified"] == 1.0
    labels[0, 1] = 11  # the segmenter right there: the same false positive, not on a mistake
    res = heldout_false_positives([{"classes": classes, "labels": labels}], maps, [target], [1, 0, 0, 0])
    assert res["fp"][11] == 1 and res["on_misclassified"] == 0.0
