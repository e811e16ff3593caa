"""Typed configs: dataclasses per stage, read from YAML, with dotted command-line overrides.

Every job takes a dataclass config. :func:`load_config` builds it from the dataclass defaults, merged with a YAML
file, merged with ``key.sub=value`` overrides (``--set train.lr=1e-4`` on the command line). Unknown keys and
wrong types are a :class:`ConfigError` naming the key. :func:`save_config` writes the resolved config beside a
run's outputs so that the run explains itself.

omegaconf does the merging and the type checks (structured configs); the dataclasses stay plain.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from synboost.errors import ConfigError

T = TypeVar("T")


def _one_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _explain(exc: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    if isinstance(exc, ConfigKeyError):
        return ConfigError(f"{source}: unknown config key '{key}'")
    if isinstance(exc, ValidationError):
        return ConfigError(f"{source}: bad value for '{key}': {_one_line(exc)}")
    return ConfigError(f"{source}: {_one_line(exc)}")


def load_config(schema: type[T], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> T:
    """Build a ``schema`` dataclass from its defaults, an optional YAML file and dotted overrides."""
    base = OmegaConf.structured(schema)
    OmegaConf.set_struct(base, True)
    merged: DictConfig = base
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found (see configs/ for examples)")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {_one_line(e)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping of config keys at the top level")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.create(data))
        except OmegaConfBaseException as e:
            raise _explain(e, str(p)) from None
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override '{ov}': expected key=value, e.g. train.lr=1e-4")
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([ov]))
        except OmegaConfBaseException as e:
            raise _explain(e, f"override '{ov}'") from None
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise _explain(e, str(path or schema.__name__)) from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config dataclass (nested)."""
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (atomically)."""
    from synboost.data.io import write_text

    path = Path(path)
    write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def from_dict(schema: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config dataclass from a dict (e.g. a checkpoint's metadata), with the same key checks."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(data))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise _explain(e, schema.__name__) from None


# ------------------------------------------------------------------------------------------------ the schemas


@dataclasses.dataclass
class SyntheticWorldConfig:
    """The procedural driving world (``synboost data synth``)."""

    out: str = "data/synthetic"
    n: int = 500  #: total number of scenes over all splits
    height: int = 256
    width: int = 512
    seed: int = 0
    val_fraction: float = 0.1  #: clean scenes held out for segmentation validation (mIoU)
    test_fraction: float = 0.2  #: scenes with out-of-distribution objects, written in the anomaly-folder layout
    ego_vehicle_prob: float = 0.3  #: scenes with the ego vehicle's bonnet (void) at the bottom
    max_ood_objects: int = 3  #: per test scene (at least one)
    workers: int = 0  #: processes (0 = one per core)


@dataclasses.dataclass
class LoopConfig:
    """The part of every stage's config that the engine reads."""

    epochs: int = 10
    batch_size: int = 8
    lr: float = 0.01
    weight_decay: float = 1e-4
    seed: int = 0
    amp: bool = True  #: bf16 autocast on CUDA (ignored on the CPU)
    device: str = "auto"  #: auto | cpu | cuda
    workers: int = 2  #: data-loader processes per rank
    log_every: int = 20  #: steps between log lines
    steps_per_epoch: int = 0  #: 0 = one pass over the training set
    stop_after: int = 0  #: end this run after so many epochs (pre-emptible job slots; resume continues)
    channels_last: bool = False


@dataclasses.dataclass
class SegModelConfig:
    backbone: str = "resnet50"  #: resnet50 | resnet101 | mobilenet_v3_large | tiny
    output_stride: int = 16  #: 8 or 16
    pretrained: bool = True  #: ImageNet trunk weights (from a local file, see pretrained_path)
    pretrained_path: str = ""  #: the torchvision file or its folder; default $TORCH_HOME/hub/checkpoints
    num_classes: int = 19
    aspp_dim: int = 256
    decoder_dim: int = 256
    head_dropout: float = 0.1
    width: int = 16  #: channels of the tiny backbone
    abstention: bool = False  #: + PEBAL's abstention output (set by `synboost train pebal`, not by hand)
    #: what `synboost train outlier` re-trained the segmenter for (set by it, not by hand): "" (none) | void (one
    #: more output, the outlier class) | outlier_head (a binary outlier head) | dirichlet (alpha = exp(logits));
    #: the pipeline offers that method for this segmenter and refuses the others
    outlier_training: str = ""


@dataclasses.dataclass
class SegDataConfig:
    train: str = "cityscapes:data/cityscapes@train"  #: dataset spec (see synboost.data.kinds.open_dataset)
    val: str = "cityscapes:data/cityscapes@val"
    crop: list[int] = dataclasses.field(default_factory=lambda: [512, 1024])  #: training crop (H, W)
    scale_min: float = 0.5
    scale_max: float = 2.0
    flip: bool = True
    val_size: list[int] = dataclasses.field(default_factory=list)  #: resize validation images to (H, W); [] = native


@dataclasses.dataclass
class SegmentationConfig:
    """``synboost train segmentation``: DeepLabV3+ on Cityscapes or the synthetic world."""

    out: str = "runs/segmentation"
    model: SegModelConfig = dataclasses.field(default_factory=SegModelConfig)
    data: SegDataConfig = dataclasses.field(default_factory=SegDataConfig)
    train: LoopConfig = dataclasses.field(default_factory=LoopConfig)
    momentum: float = 0.9
    poly_power: float = 0.9
    sml_stats: bool = True  #: fit the standardized-max-logit class statistics on the training set at the end


@dataclasses.dataclass
class PipelineConfig:
    """A pipeline file (``pipelines/*.yaml``): how trained stages compose into one anomaly detector."""

    method: str = "entropy"  #: msp | maxlogit | entropy | energy | sml | mcdropout | pebal | void | outlier_head |
    #: dirichlet | synboost | dissimilarity (void, outlier_head, dirichlet: a segmenter of `synboost train outlier`)
    segmenter: str = ""  #: our segmenter checkpoint (.safetensors); relative paths are relative to the file
    pebal: str = ""  #: a PEBAL fine-tune of that segmenter (pebal.safetensors), scored as method 'pebal' beside it
    density: str = ""  #: embedding-density fit of that segmenter (density.safetensors of `synboost fit density`):
    #: methods knn, nll_single, nll_min, density_logreg from the same forward pass
    input_size: list[int] = dataclasses.field(default_factory=list)  #: segmenter input (H, W); [] = native
    batch_size: int = 4
    device: str = "auto"
    mc_samples: int = 8  #: passes for mcdropout
    amp: bool = True  #: bf16 autocast on CUDA (ignored on the CPU)
    generator: str = ""  #: SynBoost: generator checkpoint (generator.safetensors)
    dissimilarity: str = ""  #: SynBoost: dissimilarity checkpoint (dissimilarity.safetensors)
    ensemble: bool = True  #: SynBoost's final fusion: w0 * dissimilarity softmax + w1 * normalised entropy
    ensemble_weights: list[float] = dataclasses.field(default_factory=lambda: [0.75, 0.25])
    perceptual_vgg_pretrained: bool = True  #: ImageNet VGG19 for the perceptual difference (local file)
    perceptual_vgg_path: str = ""


@dataclasses.dataclass
class SynModelConfig:
    ngf: int = 64
    num_upsampling: int = 5  #: coarse grid = size / 2**n (SPADE: 5 "normal", 6 "more" as the official 256x512)
    z_dim: int = 256
    use_vae: bool = True  #: style encoder on the real image (as the official CC-FPSE model); z = mu at inference
    edge_channel: bool = False  #: + a boundary channel (the official model: 35 label ids + instance edges)
    nef: int = 64
    encoder_size: int = 256
    ndf: int = 64
    num_d: int = 2
    n_layers_d: int = 4
    spectral: bool = True
    spade_hidden: int = 128  #: channels of SPADE's shared conv (128 in the paper; smaller for CPU runs)


@dataclasses.dataclass
class SynDataConfig:
    train: str = "cityscapes:data/cityscapes@train"
    val: str = "cityscapes:data/cityscapes@val"
    size: list[int] = dataclasses.field(default_factory=lambda: [256, 512])  #: (H, W) of the generator
    flip: bool = True


@dataclasses.dataclass
class SynthesisConfig:
    """``synboost train synthesis``: a SPADE generator that redraws the scene from the label map."""

    out: str = "runs/synthesis"
    model: SynModelConfig = dataclasses.field(default_factory=SynModelConfig)
    data: SynDataConfig = dataclasses.field(default_factory=SynDataConfig)
    train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(lr=2e-4, batch_size=4, weight_decay=0.0))
    beta1: float = 0.0
    beta2: float = 0.9
    ttur: bool = True  #: generator lr/2, discriminator lr*2 (SPADE's two time-scale update rule)
    lambda_feat: float = 10.0
    lambda_vgg: float = 10.0
    lambda_kld: float = 0.05
    lambda_l1: float = 0.0  #: pixel L1 to the real image (not in SPADE; speeds up short CPU runs)
    vgg_pretrained: bool = True  #: ImageNet VGG19 for the perceptual loss (vgg19-dcbb9e9d.pth, local file)
    vgg_path: str = ""
    sample_every: int = 200  #: steps between sample grids (label | real | redrawn) in <out>/samples
    val_images: int = 32


@dataclasses.dataclass
class DissimModelConfig:
    priors: list[str] = dataclasses.field(default_factory=lambda: ["entropy", "perceptual", "distance"])
    semantic: bool = True  #: semantic encoder on the label map
    correlation: bool = True
    spade: str = "decoder"  #: decoder | encoder | both | none
    width: float = 1.0  #: 1.0 = the official network; smaller for CPU training from scratch
    vgg_pretrained: bool = True  #: ImageNet VGG16 initialisation of the encoder (vgg16-397923af.pth, local file)
    vgg_path: str = ""


@dataclasses.dataclass
class DissimDataConfig:
    train: str = "cityscapes:data/cityscapes@train"  #: needs instance ids (label switching)
    size: list[int] = dataclasses.field(default_factory=lambda: [256, 512])  #: (H, W) of the dissimilarity stage
    heldout_fraction: float = 0.1  #: training images held out for model selection (never the evaluation set)
    variants: int = 2  #: anomaly variants made per training image (the first uses the predicted label map)
    switch_instances: bool = True  #: SynBoost / Lis et al. label switching
    void_anomalies: bool = True  #: void regions as anomalies (the paper's data generator)
    flip: bool = True
    max_images: int = 0  #: 0 = all


@dataclasses.dataclass
class DissimilarityConfig:
    """``synboost train dissimilarity``: the dissimilarity network on anomalies made from the training set."""

    out: str = "runs/dissimilarity"
    segmenter: str = ""  #: segmenter checkpoint (segmenter.safetensors)
    generator: str = ""  #: generator checkpoint (generator.safetensors)
    seg_size: list[int] = dataclasses.field(default_factory=list)  #: segmenter input (H, W); [] = native
    perceptual_vgg_pretrained: bool = True  #: ImageNet VGG19 for the perceptual difference (vgg19-dcbb9e9d.pth)
    perceptual_vgg_path: str = ""
    model: DissimModelConfig = dataclasses.field(default_factory=DissimModelConfig)
    data: DissimDataConfig = dataclasses.field(default_factory=DissimDataConfig)
    train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(lr=1e-4, batch_size=4, weight_decay=0.0,
                                                                              epochs=50))
    beta1: float = 0.5
    beta2: float = 0.999
    class_weights: bool = True  #: w_c = 1 / ln(1.02 + f_c) from the training labels (the official ENet weights)
    plateau_patience: int = 10
    plateau_factor: float = 0.5


@dataclasses.dataclass
class PebalLossConfig:
    """PEBAL's loss constants; defaults are the official code's (see :mod:`synboost.losses.pebal`)."""

    m_in: float = -12.0  #: inlier energies are pushed below it; pick near the base model's inlier energies
    m_out: float = -6.0  #: outlier energies are pushed above it
    ood_reg: float = 0.1
    energy_weight: float = 0.1
    smooth_weight: float = 3e-6
    sparsity_weight: float = 5e-4
    form: str = "code"  #: code | paper (regulariser weights and sparsity norm as the paper states them)


@dataclasses.dataclass
class PebalDataConfig:
    train: str = "cityscapes:data/cityscapes@train"
    val: str = "cityscapes:data/cityscapes@val"  #: validation: val images with pasted outliers (AP) and mIoU
    outliers: str = "coco:data/coco"  #: dataset spec of outlier objects, or "synthetic" (the world's own objects)
    mix_ratio: float = 0.1  #: outlier-mixed samples per training image and epoch (official: 297 per 2975)
    object_scale: float = 1.0  #: resize factor of pasted objects (official: 1, native size)
    object_size: list[float] = dataclasses.field(default_factory=lambda: [0.08, 0.4])  #: "synthetic" objects, x height
    object_shapes: list[str] = dataclasses.field(default_factory=list)  #: "synthetic": shapes used ([] = all)
    object_fills: list[str] = dataclasses.field(default_factory=list)  #: "synthetic": fills used ([] = all)
    blend: float = 0.0  #: feathering of the pasted edge in pixels (official: 0, a hard paste)
    crop: list[int] = dataclasses.field(default_factory=lambda: [900, 900])
    scale_min: float = 0.5
    scale_max: float = 2.0
    flip: bool = True
    val_images: int = 100  #: validation images (0 = all)
    val_objects: int = 2  #: outliers pasted per validation image
    val_size: list[int] = dataclasses.field(default_factory=list)  #: resize validation images to (H, W); [] = native


@dataclasses.dataclass
class PebalConfig:
    """``synboost train pebal``: fine-tune a trained segmenter's head with PEBAL's abstention and energy losses
    on AnomalyMix data."""

    out: str = "runs/pebal"
    segmenter: str = ""  #: the segmenter to fine-tune (segmenter.safetensors of `synboost train segmentation`)
    freeze_bn: bool = True  #: keep the frozen trunk's BatchNorm statistics (the official code lets them drift)
    loss: PebalLossConfig = dataclasses.field(default_factory=PebalLossConfig)
    data: PebalDataConfig = dataclasses.field(default_factory=PebalDataConfig)
    train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(lr=1e-5, batch_size=8, weight_decay=0.0,
                                                                              epochs=40))
    poly_power: float = 0.9


@dataclasses.dataclass
class OutlierDataConfig(PebalDataConfig):
    """AnomalyMix data as PEBAL's (the same fields and readers), plus the Cityscapes void pixels as outliers."""

    #: also train the void pixels (label ids unlabeled, static, dynamic, ground; never the ego vehicle) as
    #: outliers, as the Fishyscapes void classifier does; reads the instance-id maps for the label ids
    void_outliers: bool = False


@dataclasses.dataclass
class OutlierLossConfig:
    """The losses of `synboost train outlier` (see :mod:`synboost.losses.outlier`)."""

    head_weight: float = 1.0  #: outlier_head: weight of the outlier BCE beside the segmentation cross-entropy
    precision: float = 100.0  #: dirichlet: target precision alpha_0 on inlier pixels
    smoothing: float = 0.01  #: dirichlet: target mean of each other class (the labelled one: 1 - (K-1) x this)
    outlier_weight: float = 1.0  #: dirichlet: weight of the mean KL of outlier pixels (flat target alpha = 1)


@dataclasses.dataclass
class OutlierTrainingConfig:
    """``synboost train outlier``: re-train the WHOLE segmenter with outlier data (AnomalyMix pastes, optionally
    the void pixels) for one of the comparison tables' methods: ``void`` (OoD training with a void class),
    ``outlier_head`` (discriminative outlier detection head, Bevandic et al. 2019) or ``dirichlet`` (Dirichlet
    DeepLab, a prior network, Malinin & Gales 2018)."""

    out: str = "runs/outlier"
    method: str = "void"  #: void | outlier_head | dirichlet
    segmenter: str = ""  #: start from this segmenter.safetensors; "" = from scratch with `model` (trunk from ImageNet
    #: if model.pretrained)
    model: SegModelConfig = dataclasses.field(default_factory=SegModelConfig)  #: used when `segmenter` is ""
    loss: OutlierLossConfig = dataclasses.field(default_factory=OutlierLossConfig)
    data: OutlierDataConfig = dataclasses.field(default_factory=OutlierDataConfig)
    train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(lr=1e-5, batch_size=8, weight_decay=0.0,
                                                                              epochs=10))
    optimizer: str = "adam"  #: adam | sgd (momentum below); a poly learning rate either way
    momentum: float = 0.9
    poly_power: float = 0.9
    select: str = "mean"  #: best epoch by: ap (validation outliers) | miou (clean val) | mean (of the two)


@dataclasses.dataclass
class DemoConfig:
    """``synboost demo``: the whole job on the embedded synthetic world, on the CPU, in minutes. The three stages
    are small versions of the real ones (a tiny DeepLabV3+, a narrow SPADE generator, a dissimilarity network at
    a quarter of the official width), trained from scratch since no ImageNet weights can be assumed offline;
    synthesis and dissimilarity run at half the segmentation resolution per side (the official ratio is 1/4).
    PEBAL fine-tunes the same segmenter's head and is scored in the same table."""

    out: str = "runs/demo"
    world: SyntheticWorldConfig = dataclasses.field(
        default_factory=lambda: SyntheticWorldConfig(out="runs/demo/world", n=360, height=128, width=256))
    segmentation: SegmentationConfig = dataclasses.field(default_factory=lambda: SegmentationConfig(
        out="runs/demo/segmentation",
        model=SegModelConfig(backbone="tiny", pretrained=False, aspp_dim=64, decoder_dim=64, width=24),
        data=SegDataConfig(train="synthetic:runs/demo/world@train", val="synthetic:runs/demo/world@val",
                           crop=[128, 256], scale_min=0.75, scale_max=1.5),
        train=LoopConfig(epochs=12, batch_size=8, lr=0.05, workers=0, log_every=10),
    ))
    synthesis: SynthesisConfig = dataclasses.field(default_factory=lambda: SynthesisConfig(
        out="runs/demo/synthesis",
        model=SynModelConfig(ngf=16, num_upsampling=4, z_dim=64, nef=16, encoder_size=128, ndf=32, n_layers_d=3,
                             spade_hidden=32),
        data=SynDataConfig(size=[64, 128]),
        train=LoopConfig(epochs=4, batch_size=4, lr=4e-4, weight_decay=0.0, workers=0, log_every=10),
        lambda_vgg=0.0, lambda_l1=30.0, lambda_kld=0.005, vgg_pretrained=False, sample_every=100, val_images=16,
    ))
    dissimilarity: DissimilarityConfig = dataclasses.field(default_factory=lambda: DissimilarityConfig(
        out="runs/demo/dissimilarity", perceptual_vgg_pretrained=False,
        model=DissimModelConfig(width=0.25, vgg_pretrained=False),
        data=DissimDataConfig(size=[64, 128], variants=2),
        train=LoopConfig(epochs=8, batch_size=4, lr=5e-4, weight_decay=0.0, workers=0, log_every=20),
    ))
    pebal: PebalConfig = dataclasses.field(default_factory=lambda: PebalConfig(
        out="runs/demo/pebal",
        loss=PebalLossConfig(m_in=-9.0, m_out=-4.0),
        # outlier exposure with some of the world's object families only: the test scenes also hold shapes
        # (stars, rings) and fills (checkerboards, stripes) that PEBAL never saw, as COCO objects differ from
        # real road anomalies
        data=PebalDataConfig(outliers="synthetic", mix_ratio=0.5, object_shapes=["blob", "poly", "box"],
                             object_fills=["solid", "noise", "gradient"], crop=[128, 256], scale_min=0.75,
                             scale_max=1.5, val_images=0),
        train=LoopConfig(epochs=6, batch_size=8, lr=1e-3, weight_decay=0.0, workers=0, log_every=10),
    ))
    methods: list[str] = dataclasses.field(default_factory=lambda: ["msp", "maxlogit", "entropy", "energy", "sml",
                                                                    "pebal", "dissimilarity", "synboost"])


@dataclasses.dataclass
class AblationConfig:
    """``synboost ablate``: the paper's ablation table on the synthetic world. The world, segmenter and generator
    are those of the base demo config (trained, or reused from its folder); one dissimilarity network is trained
    per variant on shared anomaly data, and each variant is scored on the held-out anomaly test scenes."""

    out: str = "runs/ablation"
    base: DemoConfig = dataclasses.field(default_factory=DemoConfig)  #: where world and stages come from
    variants: list[str] = dataclasses.field(default_factory=lambda: [
        "full", "no_ensemble", "no_entropy", "no_perceptual", "no_distance", "no_uncertainty_maps",
        "no_correlation", "no_semantic_encoder", "no_spade", "no_data_generator"])


@dataclasses.dataclass
class ReproduceData:
    """Where each benchmark lives (``--set data.<kind>=PATH``); None / empty = not part of this run. A value is a
    folder for that reader kind (``@<split>`` allowed where the kind has splits) or a full ``kind:PATH`` spec."""

    fishyscapes_laf: str | None = None  #: holds fishyscapes/LostAndFound/{original,labels} (SynBoost's layout)
    fishyscapes_static: str | None = None  #: holds fishyscapes/Static/{original,labels}
    road_anomaly: str | None = None  #: frames/ (the original release) or original/ + labels/
    lostandfound: str | None = None  #: leftImg8bit/test + gtCoarse/test (the test split unless @train)
    smiyc_anomaly: str | None = None  #: holds dataset_AnomalyTrack/images (+ labels_masks for the public frames)
    smiyc_obstacle: str | None = None  #: holds dataset_ObstacleTrack/images


@dataclasses.dataclass
class ExpectedResult:
    """One published number set: a method on one dataset (a key of ``data``); metrics in percent."""

    method: str = ""
    dataset: str = ""
    ap: float | None = None
    fpr95: float | None = None
    auroc: float | None = None
    siou: float | None = None
    ppv: float | None = None
    f1_mean: float | None = None
    source: str = ""  #: where the number comes from (paper table, leaderboard, issue)
    verified: bool = True  #: False: quoted from memory or second-hand ([M] in the design notes); check before use
    hidden: bool = False  #: a hidden test set: ours are on the public frames, so no difference is computed
    note: str = ""


@dataclasses.dataclass
class ReproduceConfig:
    """``synboost eval --config configs/reproduce/<table>.yaml``: a paper table re-run with our code: the pipeline,
    the datasets, the methods, the protocol, and the published numbers printed beside ours."""

    title: str = ""
    source: str = ""  #: the paper / table reproduced
    pipeline: str = ""  #: pipeline file (relative to the working directory or the repository)
    pipeline_overrides: list[str] = dataclasses.field(default_factory=list)  #: e.g. ["device=cpu"]
    methods: list[str] = dataclasses.field(default_factory=list)  #: [] = the pipeline's method
    data_root: str = "DIR"  #: placeholder: the folder holding your copies of the benchmarks
    data: ReproduceData = dataclasses.field(default_factory=ReproduceData)
    fpr_rule: str = "first_ge"  #: first_ge | first_gt | closest | interp (see synboost.metrics.pixel.FPR_RULES)
    eval_size: list[int] = dataclasses.field(default_factory=list)  #: (H, W) to score at; [] = the labels' size
    components: str = ""  #: "" = SMIYC-style datasets only | auto | anomaly | obstacle | off
    submission: str = ""  #: folder for benchmark submission files ("" = none)
    formats: list[str] = dataclasses.field(default_factory=list)  #: smiyc / fishyscapes; [] = each dataset's own
    max_images: int = 0  #: 0 = all
    out: str = "runs/reproduce"
    expected: list[ExpectedResult] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class DensityModelConfig:
    """Which features the embedding-density baselines read and how (see :mod:`synboost.models.density`)."""

    #: named modules of the segmenter, one per depth and present in every trunk: bot_fine (the low-level skip,
    #: stride 4), trunk (its high-level output, stride 8/16), final (the decoder features, stride 4); nested
    #: names as "trunk.layer3"
    layers: list[str] = dataclasses.field(default_factory=lambda: ["bot_fine", "trunk", "final"])
    single_layer: str = "final"  #: method nll_single (default: the decoder features)
    knn_layer: str = "final"  #: method knn
    k: int = 5
    knn_reduce: str = "mean"  #: mean | kth (of the k nearest distances)
    knn_index: str = "Flat"  #: faiss index factory string; Flat = exact IndexFlatL2 (e.g. "HNSW32" approximate)
    knn_backend: str = "auto"  #: auto (torch on CUDA with Flat, else faiss) | faiss | torch
    bank_per_image: int = 64  #: kNN: pixels sampled per training image (non-void)
    bank_size: int = 100000  #: kNN: rows kept at most (reservoir sampling over the per-image samples)
    ridge: float = 1.0e-4  #: covariance + ridge x mean variance on the diagonal
    stats_stride: int = 1  #: Gaussian statistics from every n-th feature pixel per side (1 = all)
    logreg_c: float = 1.0  #: inverse L2 strength of the logistic regression (scikit-learn's C)


@dataclasses.dataclass
class DensityDataConfig:
    train: str = "cityscapes:data/cityscapes@train"  #: the segmenter's training split (labels: void excluded)
    size: list[int] = dataclasses.field(default_factory=list)  #: segmenter input (H, W); [] = native
    max_images: int = 0  #: images of the statistics pass (0 = all)
    outliers: str = "coco:data/coco"  #: AnomalyMix objects for the regression: a dataset spec or "synthetic"
    object_scale: float = 1.0
    object_size: list[float] = dataclasses.field(default_factory=lambda: [0.08, 0.4])  #: "synthetic", x height
    object_shapes: list[str] = dataclasses.field(default_factory=list)  #: "synthetic": shapes used ([] = all)
    object_fills: list[str] = dataclasses.field(default_factory=list)  #: "synthetic": fills used ([] = all)
    blend: float = 0.0
    mix_images: int = 500  #: AnomalyMix images (training images, one seed each) for the regression; 0 = all
    objects_per_image: int = 1
    mix_pixels: int = 256  #: pixels sampled per mixed image and class (inlier / outlier) for the regression


@dataclasses.dataclass
class DensityConfig:
    """``synboost fit density``: the Fishyscapes embedding-density baselines of a trained segmenter: per-layer
    Gaussians and a kNN bank from one pass over its training split, then the NLL standardisation and a logistic
    regression from a pass over AnomalyMix images."""

    out: str = "runs/density"
    segmenter: str = ""  #: segmenter.safetensors of `synboost train segmentation`
    model: DensityModelConfig = dataclasses.field(default_factory=DensityModelConfig)
    data: DensityDataConfig = dataclasses.field(default_factory=DensityDataConfig)
    batch_size: int = 4
    workers: int = 2  #: image-reading processes
    device: str = "auto"
    amp: bool = True  #: bf16 autocast of the segmenter on CUDA (statistics in float64 regardless)
    seed: int = 0
    method: str = "nll_single"  #: the method of the written pipeline file


def _demo_outlier(method: str, lr: float) -> OutlierTrainingConfig:
    """A re-training method on the demo's world: the whole tiny segmenter, 6 epochs, on the same outlier families
    as the demo's PEBAL (Dirichlet at a lower rate: its first KL steps cost a third of the mIoU at 1e-3)."""
    return OutlierTrainingConfig(
        out=f"runs/compare/outlier-{method}", method=method,
        data=OutlierDataConfig(outliers="synthetic", mix_ratio=0.5, object_shapes=["blob", "poly", "box"],
                               object_fills=["solid", "noise", "gradient"], crop=[128, 256], scale_min=0.75,
                               scale_max=1.5, val_images=0),
        train=LoopConfig(epochs=6, batch_size=8, lr=lr, weight_decay=0.0, workers=0, log_every=10))


@dataclasses.dataclass
class CompareConfig:
    """``synboost compare --config``: every method of the comparison tables on the synthetic world, in one table.
    The world and the demo's stages come from ``base`` (trained, or reused from its folder); the Image Resynthesis
    network and the density fit are made here."""

    out: str = "runs/compare"
    base: DemoConfig = dataclasses.field(default_factory=DemoConfig)
    density: DensityConfig = dataclasses.field(default_factory=lambda: DensityConfig(
        model=DensityModelConfig(single_layer="bot_fine", knn_layer="bot_fine", bank_size=20000),
        data=DensityDataConfig(outliers="synthetic", object_shapes=["blob", "poly", "box"],
                               object_fills=["solid", "noise", "gradient"], mix_images=200),
        batch_size=8, workers=0))
    #: the re-training methods' configs (OoD training with a void class, outlier head, Dirichlet DeepLab), each
    #: from the demo's segmenter on the demo's world (segmenter, data and out paths are set by the command)
    outlier: dict[str, OutlierTrainingConfig] = dataclasses.field(default_factory=lambda: {
        m: _demo_outlier(m, lr) for m, lr in (("void", 1e-3), ("outlier_head", 1e-3), ("dirichlet", 3e-4))})
    outlier_methods: list[str] = dataclasses.field(default_factory=lambda: ["void", "outlier_head", "dirichlet"])
    #: methods scored from the SynBoost pipeline's segmenter pass (post-hoc, MC dropout, density)
    main_methods: list[str] = dataclasses.field(default_factory=lambda: [
        "msp", "maxlogit", "entropy", "energy", "sml", "mcdropout", "knn", "nll_single", "nll_min",
        "density_logreg"])
    rows: list[str] = dataclasses.field(default_factory=list)  #: more rows, [LABEL=]PIPELINE[:METHOD,...]
    data: list[str] = dataclasses.field(default_factory=list)  #: dataset specs; [] = the world's anomaly test
