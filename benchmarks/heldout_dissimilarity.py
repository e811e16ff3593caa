"""Model selection for the dissimilarity stage: score dissimilarity checkpoints on one fixed held-out set of
*training* anomalies (the held-out images of a reference run's config, with its variants and seed), never on the
anomaly test split. A run's own held-out AP is not comparable between configs that make their anomaly data
differently (another ``data.variants`` changes the held-out set too); this puts them on the same set.

    python benchmarks/heldout_dissimilarity.py runs/demo/dissimilarity/config.yaml A/dissimilarity.safetensors ...
"""
import sys

import torch

from synboost.config import DissimilarityConfig
from synboost.config.loading import load_config
from synboost.data.kinds import open_dataset
from synboost.detectors.components import load_dissimilarity, load_generator, load_segmenter, perceptual_vgg
from synboost.training.dissimilarity import DissimilarityTask, make_samples

torch.manual_seed(0)
cfg = load_config(DissimilarityConfig, sys.argv[1])
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
for ck in sys.argv[2:]:
    net, _ = load_dissimilarity(ck, dev)
    r = task.validate(net, dev)
    print(f"{ck}: held-out AP {100 * r['heldout_ap']:.2f} FPR95 {100 * r['heldout_fpr95']:.2f} loss {r['loss']:.4f}")
