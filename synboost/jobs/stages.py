"""Train or reuse the stages a job needs: the demo, the comparison table and the ablation share this.

:func:`place_stages` derives every stage's folder and inputs from the job's output folder; :func:`stage_done`
says whether a stage's folder holds a finished run of exactly its config; :func:`prepare_stages` runs the
world and the training stages, each reused when already done with the same config; :func:`fusion_weights`
chooses SynBoost's fusion weights for a trained dissimilarity network by the job's rule.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

from synboost.config import DemoConfig


def world_is_current(cfg) -> bool:
    """The world folder holds a world of exactly this config (generator version, seed, size, splits)."""
    meta_path = Path(cfg.out) / "synthetic_world.json"
    if not meta_path.is_file():
        return False
    meta = json.loads(meta_path.read_text())
    from synboost.data.synthetic import GENERATOR_VERSION, split_sizes

    return (meta.get("version") == GENERATOR_VERSION and meta.get("seed") == cfg.seed
            and meta.get("height") == cfg.height and meta.get("width") == cfg.width
            and meta.get("splits") == split_sizes(cfg.n, cfg.val_fraction, cfg.test_fraction))


def stage_done(cfg, product: str) -> bool:
    """The stage's run folder holds a finished run of exactly this config and its product file."""
    out = Path(cfg.out)
    summary = out / "summary.json"
    if not ((out / product).is_file() and summary.is_file() and json.loads(summary.read_text()).get("finished")
            and (out / "config.yaml").is_file()):
        return False
    return same_config(cfg, out / "config.yaml")


def same_config(cfg, path: Path) -> bool:
    """The config saved at ``path`` is ``cfg``: compared as parsed by ``cfg``'s schema, so a field added to the
    schema since (at its default) does not make a finished run look different; a saved key the schema no longer
    has, or a file that does not parse, does. Paths compare by what they name
    (:func:`~synboost.config.loading.same_path`), so a run folder that was moved or renamed with its inputs, or
    reached by another spelling (absolute or relative), is still the same run."""
    from synboost.config.loading import saved_config_difference

    return saved_config_difference(cfg, path) is None


def resumable(cfg, resume: bool) -> bool:
    """Whether a stage that is not done may resume in its folder: ``resume``, unless the run there was started
    with another config (:func:`~synboost.training.snapshot.resume_difference`: bar epochs, device, workers,
    logging), which is then trained afresh, said in one line, rather than refused by the engine."""
    from synboost.training.snapshot import resume_difference

    diff = resume_difference(cfg.out, cfg) if resume else None
    if diff:
        print(f"      the run in {cfg.out} was started with another config ({diff}): trained afresh")
    return resume and not diff


def place_stages(cfg: DemoConfig) -> None:
    """Every output of the demo lives under ``cfg.out``; the stages' folders and inputs are derived from it, and
    their training seed from ``cfg.seed``."""
    out = Path(cfg.out)
    src = Path(getattr(cfg, "stages_from", "") or out)  # the upstream stages' folder (``stages_from``)
    for stage in (cfg.segmentation, cfg.synthesis, cfg.dissimilarity, cfg.pebal):
        stage.train.seed = cfg.seed
    cfg.world.out = str(src / "world")
    train, val = f"synthetic:{cfg.world.out}@train", f"synthetic:{cfg.world.out}@val"
    cfg.segmentation.out, cfg.synthesis.out = str(src / "segmentation"), str(src / "synthesis")
    cfg.dissimilarity.out, cfg.pebal.out = str(out / "dissimilarity"), str(src / "pebal")
    cfg.pebal.data.train, cfg.pebal.data.val = train, val
    cfg.pebal.segmenter = str(src / "segmentation" / "segmenter.safetensors")
    cfg.segmentation.data.train, cfg.segmentation.data.val = train, val
    cfg.synthesis.data.train, cfg.synthesis.data.val = train, val
    cfg.dissimilarity.data.train = train
    cfg.dissimilarity.segmenter = str(src / "segmentation" / "segmenter.safetensors")
    cfg.dissimilarity.generator = str(src / "synthesis" / "generator.safetensors")
    bb = getattr(cfg, "backbone", None)
    if bb is not None:
        bb.out = str(Path(getattr(cfg, "backbone_from", "") or src / "backbone"))
        bw = backbone_world(cfg)
        bb.data.train, bb.data.val = f"synthetic:{bw.out}@train", f"synthetic:{bw.out}@val"
        if cfg.pretrained_trunks:
            vgg16, vgg19 = trunk_files(bb)
            syn, dis = cfg.synthesis, cfg.dissimilarity
            if syn.lambda_vgg > 0:  # the generator's VGG loss; with none (the demo's 0) it trains as without trunks
                syn.vgg_pretrained, syn.vgg_path = True, vgg19
            dis.model.vgg_pretrained, dis.model.vgg_path, dis.model.encoder_width = True, vgg16, 1.0
            dis.perceptual_vgg_pretrained, dis.perceptual_vgg_path = True, vgg19


def backbone_world(cfg: DemoConfig):
    """The world the backbone stage trains on: the run's own, or with ``backbone_from`` a copy of the same world
    in that folder (``<backbone_from>/world``), so that trunks shared by several runs depend on no run's folder."""
    import dataclasses

    if not getattr(cfg, "backbone_from", ""):
        return cfg.world
    return dataclasses.replace(cfg.world, out=str(Path(cfg.backbone_from) / "world"))


def trunk_files(bb) -> tuple[str, str]:
    """The VGG16 and VGG19 files the backbone stage ``bb`` writes."""
    from synboost.training.backbone import trunk_path

    return str(trunk_path(bb.out, 16, bb.name)), str(trunk_path(bb.out, 19, bb.name))


def generator_lpips(syn, trunk: str) -> dict:
    """The trained generator of the synthesis stage ``syn`` scored on its held-out validation scenes by the stage's
    own validation, with LPIPS through the world-pretrained VGG16 ``trunk``: ``lpips`` and
    ``lpips_mean_colour_painting`` (with ``l1`` and the painting's, which repeat the stage's own). A measurement
    after training, so the generator's config, and with it the stage, stay those of a run without trunks."""
    import dataclasses
    import types

    import torch

    from synboost.detectors.components import load_generator
    from synboost.training.synthesis import SynthesisTask

    task = SynthesisTask(dataclasses.replace(syn, lpips_path=trunk))
    gen = load_generator(str(Path(syn.out) / "generator.safetensors"), "cpu")
    return task.validate(types.SimpleNamespace(generator=gen), torch.device("cpu"))


def backbone_done(bb) -> bool:
    """Every depth's run of the backbone stage is a finished run of exactly its config, with its trunk."""
    from synboost.training.backbone import depth_runs, trunk_path

    return all(stage_done(sub, os.path.relpath(trunk_path(bb.out, d, bb.name), sub.out)) for d, sub in depth_runs(bb))


def shared_guard(cfg, stage_out: str, product: str, name: str, resume: bool) -> None:
    """Refuse to train a stage again in another run's folder. With ``stages_from`` a run takes its upstream stages
    from that folder, and one whose config differs from the finished stage there (or whose inputs were retrained)
    would be trained in that folder, replacing the stage the other run, e.g. the default demo, is made of. Raises a
    :class:`~synboost.errors.ConfigError` naming the folder and the fix (a demo of its own); nothing happens when
    the run has no ``stages_from`` (or it is its own ``out``), when ``resume`` is off (``--fresh`` asks for
    everything anew), or when the stage there has no finished product yet (then training it there is what
    ``stages_from`` means)."""
    from synboost.errors import ConfigError

    src = getattr(cfg, "stages_from", "")
    if not (resume and src) or Path(src).resolve() == Path(cfg.out).resolve():
        return
    if (Path(stage_out) / product).is_file():
        raise ConfigError(
            f"{stage_out}: the {name} stage of {src} (stages_from) is finished with another config or other inputs, "
            f"and this run would train it again there, replacing what the runs on {src} are made of; run it as a "
            f"demo of its own in a new folder (--set out=DIR with the same --set keys, without --full / --trunks), "
            f"or set the changed keys back")


def run_step(title: str, done: bool, run: Callable[[], object], times: dict, key: str) -> bool:
    """Run one step unless it is done; returns whether it ran (then every later step runs too)."""
    print(title)
    t = time.time()
    if done:
        print("      already done with this config, reused")
    else:
        run()
    times[key] = time.time() - t
    return not done


def prepare_stages(cfg: DemoConfig, resume: bool = True, dissimilarity: bool = True,
                   pebal: bool = True) -> tuple[dict, bool]:
    """Steps 1-5 of the demo (world, segmentation, PEBAL, synthesis, dissimilarity), each reused when already
    done with the same config; returns (seconds per step, whether anything upstream of the dissimilarity stage
    ran)."""
    from synboost.data.synthetic import write_world
    from synboost.training.dissimilarity import train_dissimilarity
    from synboost.training.pebal import train_pebal
    from synboost.training.segmentation import train_segmentation
    from synboost.training.synthesis import train_synthesis

    times: dict[str, float] = {}
    w, seg, syn, dis, peb = cfg.world, cfg.segmentation, cfg.synthesis, cfg.dissimilarity, cfg.pebal

    def guarded(stage_out: str, product: str, name: str, train: Callable[[], object]) -> Callable[[], None]:
        """``train`` for a stage that may live in ``stages_from``: :func:`shared_guard` first."""
        def run() -> None:
            shared_guard(cfg, stage_out, product, name, resume)
            train()
        return run

    ran = run_step(f"[1/6] synthetic world: {w.n} scenes of {w.height}x{w.width} -> {w.out}",
                resume and world_is_current(w),
                guarded(w.out, "synthetic_world.json", "world", lambda: write_world(w)), times, "world")
    ran_bb = False
    if getattr(cfg, "pretrained_trunks", False):
        from synboost.training.backbone import train_backbone

        bb, bw = cfg.backbone, backbone_world(cfg)
        ran_bw = ran
        if bw.out != w.out:  # the trunks' own copy of the world (shared trunks, ``backbone_from``)
            ran_bw = run_step(f"[1a]  the same world for the shared trunks -> {bw.out}",
                              resume and world_is_current(bw), lambda: write_world(bw), times, "backbone world")
        ran_bb = run_step(f"[1b]  backbone: VGG16 and VGG19 pretrained on the world (dense supervision), "
                        f"{bb.train.epochs} epochs each -> {bb.out}", resume and not ran_bw and backbone_done(bb),
                        lambda: train_backbone(bb, resume=resume and not ran_bw), times, "backbone")
    ran |= run_step(f"[2/6] segmentation: DeepLabV3+ ({seg.model.backbone} trunk), {seg.train.epochs} epochs",
                 resume and not ran and stage_done(seg, "segmenter.safetensors"),
                 guarded(seg.out, "segmenter.safetensors", "segmentation",
                         lambda: train_segmentation(seg, resume=resumable(seg, resume and not ran))),
                 times, "segmentation")
    if pebal:
        run_step(f"[3/6] PEBAL: the segmenter's head with abstention and energy losses on AnomalyMix, "
              f"{peb.train.epochs} epochs", resume and not ran and stage_done(peb, "pebal.safetensors"),
              guarded(peb.out, "pebal.safetensors", "PEBAL",
                      lambda: train_pebal(peb, resume=resumable(peb, resume and not ran))), times, "pebal")
    syn_done = not (ran_bb and syn.vgg_path) and stage_done(syn, "generator.safetensors")  # trunks: VGG loss only
    ran_syn = run_step(f"[4/6] synthesis: SPADE generator at {syn.data.size[0]}x{syn.data.size[1]}, {syn.train.epochs} "
                    "epochs", resume and not ran and syn_done,
                    guarded(syn.out, "generator.safetensors", "synthesis",
                            lambda: train_synthesis(syn, resume=resumable(syn, resume and not ran))),
                    times, "synthesis")
    ran |= ran_syn | ran_bb
    if dissimilarity:
        run_step(f"[5/6] dissimilarity: anomaly data (label switching + void) and {dis.train.epochs} epochs",
              resume and not ran and stage_done(dis, "dissimilarity.safetensors"),
              lambda: train_dissimilarity(dis, resume=resumable(dis, resume and not ran)), times, "dissimilarity")
    return times, ran


def fusion_weights(cfg: DemoConfig, dis, checkpoint=None) -> dict:
    """SynBoost's fusion weights for the dissimilarity network of ``dis`` (a stage config; ``checkpoint``: its
    network, default the stage's own) by the job's
    ``ensemble_weights`` rule: ``heldout`` (the official grid on held-out training images,
    :func:`~synboost.training.dissimilarity.select_ensemble_weights`) or ``official`` (0.75 / 0.25)."""
    from synboost.errors import ConfigError
    from synboost.training.dissimilarity import OFFICIAL_ENSEMBLE, select_ensemble_weights

    rule = getattr(cfg, "ensemble_weights", "official")
    if rule == "official":
        return {"weights": list(OFFICIAL_ENSEMBLE), "rule": "official (0.75 / 0.25)"}
    if rule != "heldout":
        raise ConfigError(f"ensemble_weights: '{rule}' is not a rule; use heldout or official")
    return select_ensemble_weights(dis, checkpoint)


def fusion_line(ensemble: dict) -> str:
    """One line of report.md on the fusion weights and where they were chosen."""
    from synboost.training.dissimilarity import ENSEMBLE_MAPS

    text = "SynBoost's fusion: " + " + ".join(f"{w:.3g} * {k}" for w, k in zip(ensemble["weights"], ENSEMBLE_MAPS)
                                             if w)
    if "official" not in ensemble:
        return text + " (the official weights)"
    o = ensemble["official"]
    text += (f", chosen on {ensemble['images']} held-out training images with void clutter as anomalies: "
             f"FPR95 {100 * ensemble['fpr95']:.1f}, AP {100 * ensemble['ap']:.1f} there (official 0.75 / 0.25: "
             f"{100 * o['fpr95']:.1f}, {100 * o['ap']:.1f})")
    fpc = ensemble.get("false_positive_classes") or {}
    if fpc.get("top"):  # older ensemble.json files lack it
        text += ("; there, its false alarms at the best-F1 threshold fall most on "
                 + ", ".join(f"{t['class']} ({100 * t['fp_share']:.1f} % of them, {t['ratio']:.1f}x its share)"
                             for t in fpc["top"])
                 + f", {100 * fpc['on_misclassified']:.0f} % of them where the segmenter's label is wrong")
    return text
