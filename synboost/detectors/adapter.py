"""Any segmentation network as the segmentation stage: :class:`SegmenterAdapter` gives a foreign network the call
and the attributes of our DeepLabV3+ (:mod:`synboost.models.segmenter`), so every detector, score and training
stage that reads a segmenter's logits takes it unchanged.

``adapter(x)`` takes the package's batch (RGB, ImageNet-normalised, B x 3 x H x W) and returns the 19 Cityscapes
train-id logits at H x W:

1. the batch is re-normalised to what the network expects (``mean`` / ``std`` of [0, 1] RGB; ImageNet's by
   default, then nothing is done) and, for a network of a fixed input size, resized to ``input_size``;
2. the network's output is picked by ``output_key`` (a dict's key, a tuple's index, an attribute), and must be
   per-pixel logits B x C x h x w;
3. with a ``class_map`` (network class -> train id or Cityscapes class name, many-to-one), the logits of the classes
   that map to one train id are combined by ``logsumexp``: the softmax over the 19 train ids is then the network's
   softmax restricted to its mapped classes (the probabilities of the classes of one train id add up). Classes
   left out of the map, or mapped to ``void`` / 255, are dropped: their probability mass goes to no train id. A
   train id that no class maps to gets the logit :data:`ABSENT_LOGIT` (probability 0, finite, so entropies stay
   finite). Without a class map the network must return exactly 19 channels, in train-id order;
4. the logits are resized (bilinear) to H x W.

Nothing falls back silently: an output of another shape, a missing key, a class map that names a class the
network does not have, are each one :class:`~synboost.errors.ConfigError` naming the network (``source``) and the
fix. An adapter is not fine-tuned by the stages that grow our DeepLabV3+'s head (PEBAL, outlier re-training).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from synboost.data.labels import CLASS_NAMES, IGNORE, NAME_TO_TRAIN_ID, NUM_CLASSES
from synboost.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from synboost.errors import ConfigError

#: the logit of a train id that no class of the network maps to
ABSENT_LOGIT = -1.0e4
#: the words a class map may use for "no train id" (besides 255 and null)
VOID_WORDS = ("void", "ignore", "unlabeled", "none", "")


def train_id_of(value: Any, where: str) -> int:
    """A class map's target -> train id (0..18) or :data:`IGNORE`: an integer, a Cityscapes train class name
    (``traffic light`` or ``traffic_light``, any case), or ``void`` / 255 / null for "no train id"."""
    if value is None or value == IGNORE:
        return IGNORE
    if isinstance(value, bool):
        raise ConfigError(f"{where}: class_map target {value!r} is not a train id or a Cityscapes class name")
    if isinstance(value, int):
        if 0 <= value < NUM_CLASSES:
            return value
        raise ConfigError(f"{where}: class_map target {value} is not a train id (0..{NUM_CLASSES - 1}, or 255 / "
                          "void for none)")
    if isinstance(value, str):
        name = value.strip().lower().replace("_", " ")
        if name in VOID_WORDS:
            return IGNORE
        if name.isdigit():
            return train_id_of(int(name), where)
        if name in NAME_TO_TRAIN_ID:
            return NAME_TO_TRAIN_ID[name]
        raise ConfigError(f"{where}: class_map target '{value}' is not a Cityscapes train class; names: "
                          f"{', '.join(CLASS_NAMES)} (or void)")
    raise ConfigError(f"{where}: class_map target {value!r} is not a train id or a Cityscapes class name")


def parse_class_map(class_map: Mapping[Any, Any] | Sequence[Any], where: str = "class_map"
                    ) -> tuple[dict[int, int], int | None]:
    """(network class -> train id or IGNORE, the number of network classes a list form fixes, else None).

    ``class_map``: a mapping ``{network class index: target}`` (unlisted classes are void), or a list whose
    i-th entry is the target of network class i (it names every class). Targets: see :func:`train_id_of`."""
    if isinstance(class_map, Mapping):
        out = {}
        for k, v in class_map.items():
            try:
                idx = int(k)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: class_map key {k!r} is not a network class index (0, 1, ...)") from None
            if idx < 0 or isinstance(k, bool):
                raise ConfigError(f"{where}: class_map key {k!r} is not a network class index (0, 1, ...)")
            out[idx] = train_id_of(v, f"{where} (class {idx})")
        n = None
    elif isinstance(class_map, Sequence) and not isinstance(class_map, (str, bytes)):
        out = {i: train_id_of(v, f"{where} (class {i})") for i, v in enumerate(class_map)}
        n = len(class_map)
    else:
        raise ConfigError(f"{where}: class_map must be a mapping {{network class: train id or name}} or a list of "
                          f"train ids / names, got {type(class_map).__name__}")
    if not any(t != IGNORE for t in out.values()):
        raise ConfigError(f"{where}: class_map maps no network class to a train id")
    return out, n


def class_groups(mapping: Mapping[int, int]) -> list[list[int]]:
    """For each of the 19 train ids, the network classes that map to it (ascending)."""
    groups: list[list[int]] = [[] for _ in range(NUM_CLASSES)]
    for src in sorted(mapping):
        if mapping[src] != IGNORE:
            groups[mapping[src]].append(src)
    return groups


def combine_classes(logits: torch.Tensor, groups: Sequence[Sequence[int]]) -> torch.Tensor:
    """(B, C, h, w) network logits -> (B, 19, h, w) train-id logits (float32): each train id's logit is the
    logsumexp of its classes' logits (one class: its logit as is), :data:`ABSENT_LOGIT` where it has none."""
    z = logits.float()
    out = z.new_full((z.shape[0], len(groups), *z.shape[2:]), ABSENT_LOGIT)
    for t, idx in enumerate(groups):
        if len(idx) == 1:
            out[:, t] = z[:, idx[0]]
        elif idx:
            out[:, t] = torch.logsumexp(z[:, list(idx)], 1)
    return out


class SegmenterAdapter(nn.Module):
    """A segmentation network with our segmenter's interface (see the module docstring).

    ``model``: any module taking a B x 3 x H x W float batch; ``class_map``: network class -> train id / name
    (mapping or list), or None for a network of 19 train-id channels; ``output_key``: what to take of a dict,
    tuple or object output (``'out'`` for torchvision's segmentation models, ``'logits'`` for Hugging Face's); None
    when the network returns the logits tensor itself; ``mean`` / ``std``: the normalisation the network expects of
    [0, 1] RGB (default ImageNet's); ``input_size``: (H, W) the network must see (fixed-shape files), or None;
    ``source``: how errors name it (a spec file's path)."""

    #: what our DeepLabV3+ exposes and the detectors read: the train classes, no PEBAL or outlier outputs, no head
    #: shared with a PEBAL fine-tune
    num_classes = NUM_CLASSES
    abstention = False
    outlier_training = ""
    HEAD: tuple[str, ...] = ()

    def __init__(self, model: nn.Module, class_map: Mapping[Any, Any] | Sequence[Any] | None = None,
                 output_key: str | int | None = None, mean: Sequence[float] = tuple(IMAGENET_MEAN.tolist()),
                 std: Sequence[float] = tuple(IMAGENET_STD.tolist()), input_size: Sequence[int] | None = None,
                 source: str = ""):
        super().__init__()
        self.net = model
        self.source = source or f"SegmenterAdapter({type(model).__name__})"
        self.output_key = output_key if output_key not in ("",) else None
        if class_map is not None:
            self.class_map, self._list_classes = parse_class_map(class_map, self.source)
            self.groups: list[list[int]] | None = class_groups(self.class_map)
        else:
            self.class_map, self._list_classes, self.groups = None, None, None
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ConfigError(f"{self.source}: mean and std must be 3 numbers each (std > 0), for [0, 1] RGB; got "
                              f"mean {mean}, std {std}")
        self.mean, self.std = mean, std
        m_in, s_in = IMAGENET_MEAN.tolist(), IMAGENET_STD.tolist()
        self._renorm = not (torch.allclose(torch.tensor(mean), torch.tensor(m_in))
                            and torch.allclose(torch.tensor(std), torch.tensor(s_in)))
        # ImageNet-normalised x -> (x01 - mean) / std = x * s_in / std + (m_in - mean) / std
        self.register_buffer("_scale", torch.tensor([a / b for a, b in zip(s_in, std)]).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("_shift", torch.tensor([(a - m) / b for a, m, b in zip(m_in, mean, std)]).view(1, 3, 1, 1),
                             persistent=False)
        if input_size is not None and len(input_size) not in (0, 2):
            raise ConfigError(f"{self.source}: input_size must be [H, W] (or empty), got {list(input_size)}")
        self.input_size = tuple(int(v) for v in input_size) if input_size else None

    @property
    def absent_train_ids(self) -> tuple[int, ...]:
        """The train ids that no class of the network maps to (their logit is :data:`ABSENT_LOGIT`)."""
        return tuple(t for t, g in enumerate(self.groups) if not g) if self.groups is not None else ()

    def network_input(self, x: torch.Tensor) -> torch.Tensor:
        """The package's ImageNet-normalised batch as the network takes it (re-normalised, resized)."""
        if self._renorm:
            x = x * self._scale.to(x.dtype) + self._shift.to(x.dtype)
        if self.input_size and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False)
        return x

    def raw_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The network's own per-pixel logits (B, C, h, w) for the package's batch ``x``."""
        out = self.pick(self.net(self.network_input(x)))
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            what = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(f"{self.source}: the network's output{self._key_words()} is {what}, not per-pixel "
                              "logits (B, C, h, w); set output_key to the logits (or wrap the network so it returns "
                              "them)")
        return out

    def _key_words(self) -> str:
        return f" '{self.output_key}'" if self.output_key is not None else ""

    def pick(self, out: Any) -> Any:
        """The logits of the network's output ``out``: by ``output_key`` (a key, an index, an attribute)."""
        key = self.output_key
        if key is None:
            if isinstance(out, Mapping):
                raise ConfigError(f"{self.source}: the network returns a dict (keys: {', '.join(map(str, out))}); "
                                  "set output_key to the one that holds the logits")
            if isinstance(out, (tuple, list)):
                raise ConfigError(f"{self.source}: the network returns a {type(out).__name__} of {len(out)}; set "
                                  "output_key to the index of the logits (0, 1, ...)")
            return out
        if isinstance(out, Mapping):
            if key in out:
                return out[key]
            raise ConfigError(f"{self.source}: output_key '{key}' is not in the network's output (keys: "
                              f"{', '.join(map(str, out))})")
        if isinstance(out, (tuple, list)):
            try:
                return out[int(key)]
            except (ValueError, IndexError):
                raise ConfigError(f"{self.source}: output_key '{key}' is not an index of the network's "
                                  f"{type(out).__name__} of {len(out)}") from None
        if isinstance(key, str) and hasattr(out, key):
            return getattr(out, key)
        raise ConfigError(f"{self.source}: the network returns a {type(out).__name__}, which has no '{key}'; "
                          "set output_key to match its output (or leave it empty for a plain tensor)")

    def to_train_ids(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) network logits -> (B, 19, h, w) train-id logits (the class map, or a check of C)."""
        c = z.shape[1]
        if self.groups is None:
            if c != NUM_CLASSES:
                raise ConfigError(f"{self.source}: the network returns {c} channels, not the {NUM_CLASSES} "
                                  "Cityscapes train ids; give a class_map from its classes to the train ids")
            return z
        beyond = [k for k in self.class_map if k >= c]
        if beyond or (self._list_classes is not None and self._list_classes != c):
            said = (f"lists {self._list_classes} classes" if self._list_classes is not None
                    else f"names class {max(beyond)}")
            raise ConfigError(f"{self.source}: the class_map {said}, but the network returns {c} channels; fix the "
                              "class_map (network class index -> train id)")
        return combine_classes(z, self.groups)

    def forward(self, x: torch.Tensor, all_outputs: bool = False) -> torch.Tensor:
        """Train-id logits (B, 19, H, W) at the size of ``x``; ``all_outputs`` is accepted for the detectors
        (an adapter has no outputs beyond the classes)."""
        z = self.to_train_ids(self.raw_logits(x))
        if tuple(z.shape[-2:]) != tuple(x.shape[-2:]):
            z = F.interpolate(z, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
        return z

    def forward_features(self, x: torch.Tensor):
        """Not available: the density baselines read our DeepLabV3+'s named layers."""
        raise ConfigError(f"{self.source}: a segmenter adapter has no decoder features for the density baselines; "
                          "fit density on a segmenter.safetensors of `synboost train segmentation`")

    def _not_ours(self, what: str):
        raise ConfigError(f"{self.source}: a segmenter adapter cannot be {what} (that grows the head of our "
                          "DeepLabV3+); give a segmenter.safetensors of `synboost train segmentation`, or use the "
                          "adapter in posthoc / synboost pipelines and as the dissimilarity stage's segmenter")

    def add_abstention(self):
        """Refused: PEBAL fine-tunes our DeepLabV3+'s head."""
        self._not_ours("fine-tuned by PEBAL")

    def set_outlier_training(self, kind: str):
        """Refused: outlier re-training grows our DeepLabV3+'s head."""
        self._not_ours("re-trained with outlier data")

    def freeze_below_head(self, freeze_bn: bool = True):
        """Refused: an adapter has no head of ours to train."""
        self._not_ours("fine-tuned head-only")

    def extra_repr(self) -> str:
        cm = f"class_map of {len(self.class_map)} classes" if self.class_map is not None else "19 train-id channels"
        return f"source={self.source!r}, output_key={self.output_key!r}, {cm}, input_size={self.input_size}"
