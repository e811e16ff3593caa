"""The Cityscapes label table: 34 label ids (+ license plate), 19 train ids, colours, id <-> trainId maps.

Values follow the official ``cityscapesScripts/helpers/labels.py``. Train id 255 is "ignore".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE = 255


@dataclass(frozen=True)
class Label:
    name: str
    id: int
    train_id: int
    category: str
    has_instances: bool
    color: tuple[int, int, int]


LABELS: tuple[Label, ...] = (
    Label("unlabeled", 0, 255, "void", False, (0, 0, 0)),
    Label("ego vehicle", 1, 255, "void", False, (0, 0, 0)),
    Label("rectification border", 2, 255, "void", False, (0, 0, 0)),
    Label("out of roi", 3, 255, "void", False, (0, 0, 0)),
    Label("static", 4, 255, "void", False, (0, 0, 0)),
    Label("dynamic", 5, 255, "void", False, (111, 74, 0)),
    Label("ground", 6, 255, "void", False, (81, 0, 81)),
    Label("road", 7, 0, "flat", False, (128, 64, 128)),
    Label("sidewalk", 8, 1, "flat", False, (244, 35, 232)),
    Label("parking", 9, 255, "flat", False, (250, 170, 160)),
    Label("rail track", 10, 255, "flat", False, (230, 150, 140)),
    Label("building", 11, 2, "construction", False, (70, 70, 70)),
    Label("wall", 12, 3, "construction", False, (102, 102, 156)),
    Label("fence", 13, 4, "construction", False, (190, 153, 153)),
    Label("guard rail", 14, 255, "construction", False, (180, 165, 180)),
    Label("bridge", 15, 255, "construction", False, (150, 100, 100)),
    Label("tunnel", 16, 255, "construction", False, (150, 120, 90)),
    Label("pole", 17, 5, "object", False, (153, 153, 153)),
    Label("polegroup", 18, 255, "object", False, (153, 153, 153)),
    Label("traffic light", 19, 6, "object", False, (250, 170, 30)),
    Label("traffic sign", 20, 7, "object", False, (220, 220, 0)),
    Label("vegetation", 21, 8, "nature", False, (107, 142, 35)),
    Label("terrain", 22, 9, "nature", False, (152, 251, 152)),
    Label("sky", 23, 10, "sky", False, (70, 130, 180)),
    Label("person", 24, 11, "human", True, (220, 20, 60)),
    Label("rider", 25, 12, "human", True, (255, 0, 0)),
    Label("car", 26, 13, "vehicle", True, (0, 0, 142)),
    Label("truck", 27, 14, "vehicle", True, (0, 0, 70)),
    Label("bus", 28, 15, "vehicle", True, (0, 60, 100)),
    Label("caravan", 29, 255, "vehicle", True, (0, 0, 90)),
    Label("trailer", 30, 255, "vehicle", True, (0, 0, 110)),
    Label("train", 31, 16, "vehicle", True, (0, 80, 100)),
    Label("motorcycle", 32, 17, "vehicle", True, (0, 0, 230)),
    Label("bicycle", 33, 18, "vehicle", True, (119, 11, 32)),
    Label("license plate", -1, -1, "vehicle", False, (0, 0, 142)),
)

NUM_CLASSES = 19
NUM_LABEL_IDS = 34  # ids 0..33; the official synthesis model one-hot encodes 35 (0..34)

#: the 19 train classes, in train-id order
CLASS_NAMES: tuple[str, ...] = tuple(
    lab.name for lab in sorted((lab for lab in LABELS if 0 <= lab.train_id < 255), key=lambda lab: lab.train_id)
)
TRAIN_ID_TO_NAME = dict(enumerate(CLASS_NAMES))
NAME_TO_ID = {lab.name: lab.id for lab in LABELS if lab.id >= 0}
NAME_TO_TRAIN_ID = {name: i for i, name in enumerate(CLASS_NAMES)}


def _id_to_train_id_lut() -> np.ndarray:
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for lab in LABELS:
        if lab.id >= 0:
            lut[lab.id] = lab.train_id if lab.train_id >= 0 else IGNORE
    return lut


def _train_id_to_id_lut() -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)  # 255 (ignore) -> 0 "unlabeled"
    for lab in LABELS:
        if 0 <= lab.train_id < 255:
            lut[lab.train_id] = lab.id
    return lut


#: uint8 look-up table: label id (0..255) -> train id (0..18 or 255)
ID_TO_TRAIN_ID = _id_to_train_id_lut()
#: uint8 look-up table: train id -> label id (255 -> 0, "unlabeled")
TRAIN_ID_TO_ID = _train_id_to_id_lut()
#: the label id of each train id 0..18 (road 7, ..., bicycle 33): what a label-id model (CC-FPSE) is given
TRAIN_ID_LABEL_IDS = tuple(int(TRAIN_ID_TO_ID[t]) for t in range(NUM_CLASSES))

#: (20, 3) uint8 palette: rows 0..18 the train-class colours, row 19 black for ignore
TRAIN_PALETTE = np.array(
    [next(lab.color for lab in LABELS if lab.train_id == t) for t in range(NUM_CLASSES)] + [(0, 0, 0)], dtype=np.uint8
)

#: label ids of classes that have instances in Cityscapes (24..33)
INSTANCE_LABEL_IDS = tuple(lab.id for lab in LABELS if lab.has_instances)


def ids_to_train_ids(ids: np.ndarray) -> np.ndarray:
    """Map a Cityscapes labelIds map to train ids (0..18, 255 = ignore). Ids above 33 map to 255."""
    ids = np.asarray(ids)
    if ids.dtype != np.uint8:
        ids = np.where((ids >= 0) & (ids < 256), ids, 0).astype(np.uint8)
    return ID_TO_TRAIN_ID[ids]


def train_ids_to_ids(train_ids: np.ndarray) -> np.ndarray:
    """Map train ids back to label ids (255 -> 0 "unlabeled")."""
    return TRAIN_ID_TO_ID[np.asarray(train_ids, dtype=np.uint8)]


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """RGB image (H, W, 3) of a train-id map with the Cityscapes palette (ignore and unknown ids black)."""
    t = np.asarray(train_ids)
    idx = np.where(t < NUM_CLASSES, t, NUM_CLASSES).astype(np.intp)
    return TRAIN_PALETTE[idx]
