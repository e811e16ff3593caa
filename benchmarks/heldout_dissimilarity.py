"""Model selection for the dissimilarity stage: score dissimilarity checkpoints on one fixed held-out set of
*training* anomalies (the held-out images of a reference run's config, with its variants and seed), never on the
anomaly test split. A run's own held-out AP is not comparable between configs that make their anomaly data
differently (another ``data.variants`` changes the held-out set too)
this puts them on the same set.

    python benchmarks/heldout_dissimilarity.py runs/demo/dissimilarity/config.yaml A/dissimilarity.safetensors ...
"""
import sys

import torch

from synboost.config import DissimilarityConfig
from synboost.config.loading import from_dict, load_config
from synboost.config.stages import DissimModelConfig
from synboost.data.kinds import open_dataset
from synboost.detectors.components import build_dissimilarity, load_generator, load_segmenter, perceptual_vgg
from synboost.hub.checkpoint import load_into, load_model
from synboost.training.dissimilarity import DissimilarityTask, make_samples

torch.manual_seed(0)
ref = sys.argv[1]
cfg = load_config(DissimilarityConfig, ref)
dev = torch.device("cpu")
seg, _ = load_segmenter(cfg.segmenter, dev)
gen = load_generator(cfg.generator, dev)
vgg = perceptual_vgg(cfg.perceptual_vgg_pretrained, cfg.perceptual_vgg_path, dev)
reader = open_dataset(cfg.data.train, with_instances=True)
n = len(reader)
nh = max(1, int(round(n * cfg.data.heldout_fraction)))
held = make_samples(cfg, dev, list(range(n - nh, n)), reader, seg, gen, vgg, progress=False)
for ck in sys.argv[2:]:
    sd, meta = load_model(ck, "dissimilarity")
    m = from_dict(DissimModelConfig, meta["model"])
    net = build_dissimilarity(m)
    load_into(net, sd, ck)
    net.eval()
    task = DissimilarityTask(load_config(DissimilarityConfig, ref), progress=False,
                             samples={"train": held, "held": held, "priors": list(cfg.model.priors)})
    task._prepare(dev)
    r = task.validate(net, dev)
    print(f"{ck}: held-out AP {100*r['heldout_ap']:.2f} FPR95 {100*r['heldout_fpr95']:.2f} loss {r['loss']:.4f}")
