"""Model selection for the dissimilarity stage: score dissimilarity checkpoints on one fixed held-out set of
*training* anomalies (the held-out images of a reference run's config, with its variants and seed), never on the
anomaly test split. A run's own held-out AP is not comparable between configs that make their anomaly data
differently (another ``data.variants`` changes the held-out set too); this puts them on the same set.

    python benchmarks/heldout_dissimilarity.py runs/demo/dissimilarity/config.yaml A/dissimilarity.safetensors ...
    python benchmarks/heldout_dissimilarity.py --size 128 256 REF_CONFIG A/dissimilarity.safetensors ...

``--size H W`` makes the held-out set at that resolution (its label switches, void and targets drawn there) and
runs each checkpoint as inference does: at its own ``size`` (label map nearest, entropy, distance and image
resized, resynthesis and perceptual difference computed at that size), its anomaly probability upsampled
bilinearly to the set's size and scored there. So networks of different resolutions are compared on the same
pixels. Without ``--size`` the set has the reference config's size and every checkpoint must have it too.
"""
import argparse

import torch
import torch.nn.functional as F

from synboost.config import DissimilarityConfig
from synboost.config.loading import load_config
from synboost.data.kinds import open_dataset
from synboost.detectors.components import load_dissimilarity, load_generator, load_segmenter, perceptual_vgg
from synboost.detectors.synboost import dissimilarity_inputs
from synboost.metrics.pixel import pixel_metrics
from synboost.tensors import imagenet_denormalize01, resize_maps
from synboost.training.dissimilarity import DissimilarityTask, make_samples

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("config", help="the reference dissimilarity config (its segmenter, generator, data and seed)")
ap.add_argument("checkpoints", nargs="+")
ap.add_argument("--size", nargs=2, type=int, default=None, metavar=("H", "W"),
                help="make the held-out set at this size and score every checkpoint there")
args = ap.parse_args()

torch.manual_seed(0)
cfg = load_config(DissimilarityConfig, args.config)
if args.size:
    cfg.data.size = list(args.size)
dev = torch.device("cpu")
seg, _ = load_segmenter(cfg.segmenter, dev)
gen = load_generator(cfg.generator, dev)
vgg = perceptual_vgg(cfg.perceptual_vgg_pretrained, cfg.perceptual_vgg_path, dev)
reader = open_dataset(cfg.data.train, with_instances=True)
n = len(reader)
n_held = max(1, int(round(n * cfg.data.heldout_fraction)))
held = make_samples(cfg, dev, list(range(n - n_held, n)), reader, seg, gen, vgg, progress=False)
# the class weights of the loss come from this same set, so every checkpoint's loss is on equal terms
task = DissimilarityTask(cfg, progress=False, samples={"train": held, "held": held, "priors": list(cfg.model.priors)})
task._prepare(dev)
pri = list(cfg.model.priors)


@torch.no_grad()
def score_resized(net, size) -> tuple[float, float]:
    """AP / FPR95 of ``net`` run at ``size`` on the held-out set, scored at the set's size."""
    sc, lab = [], []
    for it in held:
        img01 = imagenet_denormalize01(it["image"][None])
        ent, dist = (it["priors"][pri.index(k)][None] for k in ("entropy", "distance"))
        labels, ent_s, dist_s, img_s = resize_maps(size, it["labels"][None], (ent, dist), img01)
        inp = dissimilarity_inputs(img_s, labels, gen, vgg, ent_s, dist_s, net.priors)
        p = F.softmax(net(inp["image"], inp["synthesis"], inp["onehot"], inp["priors"]).float(), 1)[:, 1:]
        sc.append(F.interpolate(p, size=tuple(cfg.data.size), mode="bilinear", align_corners=False)[:, 0].numpy())
        lab.append(it["target"][None].numpy())
    r = pixel_metrics(sc, lab)
    return r.ap, r.fpr95


for ck in args.checkpoints:
    net, meta = load_dissimilarity(ck, dev)
    size = list(meta.get("size") or cfg.data.size)
    if size == list(cfg.data.size) and list(net.priors) == pri:
        r = task.validate(net, dev)
        ap_, fpr, extra = r["heldout_ap"], r["heldout_fpr95"], f" loss {r['loss']:.4f}"
    elif args.size:
        (ap_, fpr), extra = score_resized(net, size), f" (run at {size[0]}x{size[1]}, scored at the set's size)"
    else:
        raise SystemExit(f"{ck}: size {size} differs from the reference config's {cfg.data.size}: pass --size")
    print(f"{ck}: held-out AP {100 * ap_:.2f} FPR95 {100 * fpr:.2f}{extra}")
