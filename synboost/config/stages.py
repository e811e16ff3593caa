"""The schemas of the training stages: the synthetic world, the shared loop, and each stage's model / data /
training blocks (segmentation, synthesis, dissimilarity, PEBAL, outlier re-training, embedding density)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class SyntheticWorldConfig:
    """The procedural driving world (``synboost data world``)."""

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
    amp: bool = True  #: bf16 autocast on CUDA (ignored on the CPU unless amp_cpu)
    amp_cpu: bool = False  #: bf16 autocast on a CPU with bf16 units too (detected, never assumed); off keeps fp32
    logger: str = ""  #: tensorboard: also log to <out>/tensorboard/ (pip install tensorboard); train_log.jsonl always
    device: str = "auto"  #: auto | cpu | cuda
    workers: int = 2  #: data-loader processes per rank
    log_every: int = 20  #: steps between log lines
    steps_per_epoch: int = 0  #: 0 = one pass over the training set
    stop_after: int = 0  #: end this run after so many epochs (pre-emptible job slots; resume continues)
    channels_last: bool = False
    #: > 0: also keep an exponential moving average of the weights (this decay per optimiser step, torch's
    #: ``AveragedModel``, buffers averaged too); validation, ``best`` and the stage's products use the average,
    #: ``last`` keeps the trained weights and the average's state for resume; 0 = off
    ema: float = 0.0


@dataclasses.dataclass
class SegModelConfig:
    """The segmentation network: DeepLabV3+ trunk, output stride, head widths, PEBAL / outlier outputs."""
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
    """The segmentation stage's data: dataset specs, crops and scale jitter."""
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
class SynthesisModelConfig:
    """The synthesis model: the SPADE generator (width, upsamplings, VAE style encoder) and its discriminator."""
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
class SynthesisDataConfig:
    """The synthesis stage's data: dataset specs and the generator's resolution."""
    train: str = "cityscapes:data/cityscapes@train"
    val: str = "cityscapes:data/cityscapes@val"
    size: list[int] = dataclasses.field(default_factory=lambda: [256, 512])  #: (H, W) of the generator
    flip: bool = True


@dataclasses.dataclass
class SynthesisConfig:
    """``synboost train synthesis``: a SPADE generator that redraws the scene from the label map."""

    out: str = "runs/synthesis"
    model: SynthesisModelConfig = dataclasses.field(default_factory=SynthesisModelConfig)
    data: SynthesisDataConfig = dataclasses.field(default_factory=SynthesisDataConfig)
    train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(lr=2e-4, batch_size=4, weight_decay=0.0))
    beta1: float = 0.0
    beta2: float = 0.9
    ttur: bool = True  #: generator lr/2, discriminator lr*2 (SPADE's two time-scale update rule)
    #: SPADE's schedule: constant learning rates, then a linear decay to 0 over the last ``lr_decay`` fraction of
    #: the steps (SPADE trains niter epochs constant and niter_decay decaying, 50 + 50 on Cityscapes: 0.5); 0 = constant
    lr_decay: float = 0.0
    lambda_feat: float = 10.0
    lambda_vgg: float = 10.0
    lambda_kld: float = 0.05
    lambda_l1: float = 0.0  #: pixel L1 to the real image (not in SPADE; speeds up short CPU runs)
    vgg_pretrained: bool = True  #: ImageNet VGG19 for the perceptual loss (vgg19-dcbb9e9d.pth, local file)
    vgg_path: str = ""
    #: also score validation by LPIPS (of the generator and of the mean-colour painting) with this VGG16 trunk
    #: file: torchvision's ImageNet file, or vgg16-<name>.safetensors of `synboost train backbone`; "" = L1 only
    lpips_path: str = ""
    sample_every: int = 200  #: steps between sample grids (label | real | redrawn) in <out>/samples
    val_images: int = 32


@dataclasses.dataclass
class DissimModelConfig:
    """The dissimilarity network, with every ablation switch (priors, semantic encoder, correlation, SPADE)."""
    priors: list[str] = dataclasses.field(default_factory=lambda: ["entropy", "perceptual", "distance"])
    semantic: bool = True  #: semantic encoder on the label map
    correlation: bool = True
    spade: str = "decoder"  #: decoder | encoder | both | none
    width: float = 1.0  #: 1.0 = the official network; smaller for CPU training from scratch
    #: the VGG16 encoder's own width (0 = ``width``); 1.0 takes a full-width pretrained VGG16 under a narrow network
    encoder_width: float = 0.0
    vgg_pretrained: bool = True  #: ImageNet VGG16 initialisation of the encoder (vgg16-397923af.pth, local file)
    vgg_path: str = ""


@dataclasses.dataclass
class DissimDataConfig:
    """The dissimilarity stage's data: the training split, its resolution and the training anomalies."""
    train: str = "cityscapes:data/cityscapes@train"  #: needs instance ids (label switching)
    size: list[int] = dataclasses.field(default_factory=lambda: [256, 512])  #: (H, W) of the dissimilarity stage
    #: (H, W) random crop of each training sample, taken after the samples are made at ``size`` (inputs, maps and
    #: target cropped alike); [] = whole samples. The network is fully convolutional and is validated and run at
    #: ``size``: training on crops buys a finer map at the cost of fewer pixels per step
    crop: list[int] = dataclasses.field(default_factory=list)
    heldout_fraction: float = 0.1  #: training images held out for model selection (never the evaluation set)
    variants: int = 2  #: anomaly variants made per training image (the first uses the predicted label map)
    switch_instances: bool = True  #: SynBoost / Lis et al. label switching
    #: the label map the switched instances go into (variants 1..): ``ground_truth`` (the official recipe, void
    #: regions filled with the prediction) or ``prediction`` (the segmenter's predicted map, as at test time, so
    #: that its mistakes on inlier objects are inliers in every variant, not only in variant 0)
    switch_on: str = "ground_truth"
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
    #: also weight each inlier pixel by its label-map class, 1 / ln(1.02 + f_c) with f_c the class's share of the
    #: training inlier pixels, scaled to mean 1 over them: a rare class's pixel (people, two-wheelers, which the
    #: generator redraws worst) weighs about 10x a road pixel, so its false alarms count for more than their area;
    #: not in the official recipe
    inlier_class_weights: bool = False
    #: the official schedule: the learning rate halves when the held-out loss has not fallen for 10 epochs
    plateau_patience: int = 10
    plateau_factor: float = 0.5
    #: > 0: instead of the plateau schedule, the learning rate stays constant and then falls linearly to 0 over the
    #: last ``lr_decay`` fraction of the steps (the synthesis stage's SPADE schedule); 0 = the official plateau one
    lr_decay: float = 0.0


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
    """PEBAL's data: training and validation splits, the outlier objects and AnomalyMix's settings."""
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
    """The embedding-density fit's data: the segmenter's training split, input size and pixel sampling."""
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


@dataclasses.dataclass
class BackboneNetConfig:
    """The trunks `synboost train backbone` pretrains: torchvision's VGG16 / VGG19 ``features`` (full width, no BN)
    and the light multi-scale head that supervises them (dropped at export)."""

    depth: list[int] = dataclasses.field(default_factory=lambda: [16, 19])  #: trunks to train, one run each
    head_dim: int = 64  #: channels of the head's per-level projections
    edges: bool = True  #: + a boundary output trained on the instance-id edges (needs the dataset's instance maps)
    edge_weight: float = 1.0  #: weight of the boundary BCE beside the 19-class cross-entropy


@dataclasses.dataclass
class BackboneDataConfig:
    """The backbone stage's data: dataset specs (with labels and instance ids), resolution and augmentation."""

    train: str = "cityscapes:data/cityscapes@train"
    val: str = "cityscapes:data/cityscapes@val"  #: the head's mIoU on it selects the best epoch
    size: list[int] = dataclasses.field(default_factory=list)  #: resize train and val images to (H, W); [] = native
    crop: list[int] = dataclasses.field(default_factory=lambda: [512, 1024])  #: training crop (H, W); [] = none
    scale_min: float = 0.5
    scale_max: float = 2.0
    flip: bool = True
    val_images: int = 0  #: validation images (0 = all)


@dataclasses.dataclass
class BackboneConfig:
    """``synboost train backbone``: pretrain VGG16 / VGG19 trunks with dense supervision (the 19 classes and the
    instance edges) where no ImageNet weights are available; writes ``vgg{depth}-{name}.safetensors`` in
    torchvision's ``features.N.*`` layout, which every VGG path of the package takes."""

    out: str = "runs/backbone"
    name: str = "world"  #: the exported files are <out>/vgg16-<name>.safetensors and vgg19-<name>.safetensors
    backbone: BackboneNetConfig = dataclasses.field(default_factory=BackboneNetConfig)
    data: BackboneDataConfig = dataclasses.field(default_factory=BackboneDataConfig)
    train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(lr=2e-4, batch_size=8, weight_decay=1e-4,
                                                                              epochs=10))
    optimizer: str = "adamw"  #: adamw | sgd (momentum below); a poly learning rate either way
    momentum: float = 0.9
    poly_power: float = 0.9
