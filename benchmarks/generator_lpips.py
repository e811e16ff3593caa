"""A trained generator's L1 and LPIPS against the per-class mean-colour painting on the held-out validation scenes,
with the synthesis stage's own validation code, LPIPS through a world-pretrained VGG16 trunk.

    synboost train backbone --config configs/backbone/synthetic.yaml --set out=runs/backbone \
        --set data.train=synthetic:runs/demo/world@train --set data.val=synthetic:runs/demo/world@val \
        "--set" "backbone.depth=[16]"
    python benchmarks/generator_lpips.py runs/demo/synthesis runs/backbone/vgg16-world.safetensors
"""
import sys
import types

import torch

from synboost.config import SynthesisConfig
from synboost.config.loading import load_config
from synboost.detectors.components import load_generator
from synboost.training.synthesis import SynthesisTask

run, trunk = sys.argv[1], sys.argv[2]
cfg = load_config(SynthesisConfig, f"{run}/config.yaml", [f"lpips_path={trunk}"])
task = SynthesisTask(cfg)
gen = load_generator(f"{run}/generator.safetensors", "cpu")
r = task.validate(types.SimpleNamespace(generator=gen), torch.device("cpu"))
print({k: round(v, 4) for k, v in r.items()})
gain_l1 = 100 * (1 - r["l1"] / r["l1_mean_colour_painting"])
gain_lpips = 100 * (1 - r["lpips"] / r["lpips_mean_colour_painting"])
print(f"better than the painting: L1 by {gain_l1:.1f} %, LPIPS by {gain_lpips:.1f} %")
