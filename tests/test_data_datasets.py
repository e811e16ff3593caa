"""Dataset readers on tiny fake copies of the real layouts (8x16 images written with OpenCV)."""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from synboost.data.benchmarks import (
    AnomalyFolderDataset,
    FishyscapesDataset,
    LostAndFoundDataset,
    RoadAnomalyDataset,
    SMIYCDataset,
)
from synboost.data.datasets import CityscapesDataset, CocoOutliers, ImageFolder
from synboost.data.kinds import KINDS, detect_kind, open_dataset
from synboost.errors import DataError, ImageReadError

H, W = 8, 16


def write_image(path: Path, value: int = 0, size: tuple[int, int] = (H, W)) -> Path:
    """An RGB image whose red channel is ``value`` (so a sample can be traced back to its file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros((*size, 3), np.uint8)
    img[..., 2] = value  # BGR on disk: red
    assert cv2.imwrite(str(path), img)
    return path


def write_label(path: Path, ids: np.ndarray | int, dtype: type = np.uint8, size: tuple[int, int] = (H, W)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lab = np.broadcast_to(np.asarray(ids, dtype), size)
    assert cv2.imwrite(str(path), np.ascontiguousarray(lab))
    return path


def stripes(*values: int) -> np.ndarray:
    """An H x W label whose columns cycle through ``values``."""
    return np.tile(np.resize(np.array(values), W), (H, 1))


def one_line_error(exc: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, (part, msg)
    return msg


# ------------------------------------------------------------------------------------------- Cityscapes


def make_cityscapes(root: Path, split: str = "val") -> Path:
    for value, (city, stem, ids) in enumerate(
        [("aachen", "aachen_000000_000019", stripes(7, 26, 0, 33)), ("bochum", "bochum_000001_000002", 26)], start=1
    ):
        write_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", value)
        write_label(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)
        write_label(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png", 26001, np.uint16)
    return root


def test_cityscapes_maps_ids_with_the_official_table(tmp_path):
    ds = CityscapesDataset(make_cityscapes(tmp_path), split="val")
    assert ds.names == ["aachen_000000_000019", "bochum_000001_000002"] and len(ds) == 2
    s = ds[0]
    assert s["image"].shape == (H, W, 3) and s["image"].dtype == np.uint8 and s["image"][0, 0, 0] == 1
    assert s["label"].dtype == np.uint8 and s["label"][0, :4].tolist() == [0, 13, 255, 18]  # road car unlabeled bicycle
    assert "instances" not in s
    assert ds[-1]["name"] == "bochum_000001_000002" and ds.image_path(1).name == "bochum_000001_000002_leftImg8bit.png"
    with pytest.raises(IndexError):
        ds[2]


def test_cityscapes_pairs_by_name_not_by_sorted_order(tmp_path):
    root = make_cityscapes(tmp_path)
    # a label without an image, sorting between the two real ones: sorted pairing would shift the second pair
    write_label(root / "gtFine/val/aachen/aachen_000000_000020_gtFine_labelIds.png", 11)
    ds = CityscapesDataset(root, "val")
    assert [ds[i]["label"][0, 0] for i in range(2)] == [0, 13]
    assert ds[1]["image"][0, 0, 0] == 2


def test_cityscapes_missing_label_names_image_and_expected_file(tmp_path):
    root = make_cityscapes(tmp_path)
    write_image(root / "leftImg8bit/val/aachen/aachen_000000_000099_leftImg8bit.png")
    with pytest.raises(DataError) as exc:
        CityscapesDataset(root, "val")
    one_line_error(exc, "aachen_000000_000099_leftImg8bit.png", "aachen_000000_000099_gtFine_labelIds.png")


def test_cityscapes_train_ids_fallback_instances_and_test_split(tmp_path):
    root = make_cityscapes(tmp_path)
    (root / "gtFine/val/bochum/bochum_000001_000002_gtFine_labelIds.png").unlink()
    write_label(root / "gtFine/val/bochum/bochum_000001_000002_gtFine_labelTrainIds.png", stripes(13, 255))
    ds = CityscapesDataset(root, "val", with_instances=True)
    assert ds[1]["label"][0, :2].tolist() == [13, 255]
    inst = ds[0]["instances"]
    assert inst.dtype == np.int32 and inst[0, 0] == 26001
    # the test split: no labels read, even though Cityscapes ships placeholder ones
    make_cityscapes(root, split="test")
    assert "label" not in CityscapesDataset(root, "test")[0]


def test_cityscapes_bad_label_files_raise_image_read_errors_naming_the_file(tmp_path):
    root = make_cityscapes(tmp_path)
    wrong = write_label(root / "gtFine/val/aachen/aachen_000000_000019_gtFine_labelIds.png", 7, size=(4, 8))
    ds = CityscapesDataset(root, "val")
    with pytest.raises(ImageReadError) as exc:
        ds[0]
    one_line_error(exc, str(wrong), "4x8", "8x16")
    (root / "gtFine/val/bochum/bochum_000001_000002_gtFine_labelIds.png").unlink()
    # an id where a train id belongs
    bad = write_label(root / "gtFine/val/bochum/bochum_000001_000002_gtFine_labelTrainIds.png", 26)
    with pytest.raises(ImageReadError) as exc:
        CityscapesDataset(root, "val")[1]
    one_line_error(exc, str(bad), "26")


def test_cityscapes_missing_folders_are_one_line_errors(tmp_path):
    with pytest.raises(DataError) as exc:
        CityscapesDataset(tmp_path / "nowhere", "val")
    one_line_error(exc, str(tmp_path / "nowhere"), "leftImg8bit/val/<city>/*_leftImg8bit.png", "found no such folder")
    root = make_cityscapes(tmp_path / "cs")
    with pytest.raises(DataError) as exc:
        CityscapesDataset(root, "train")
    one_line_error(exc, str(root), "leftImg8bit/train/<city>/*_leftImg8bit.png", "Cityscapes images")
    (root / "leftImg8bit/train/aachen").mkdir(parents=True)
    with pytest.raises(DataError) as exc:
        CityscapesDataset(root, "train")
    one_line_error(exc, "gtFine/train/<city>/*_gtFine_labelIds.png")
    (root / "gtFine/train").mkdir(parents=True)
    with pytest.raises(DataError) as exc:  # folders there, but no images: an empty dataset
        CityscapesDataset(root, "train")
    one_line_error(exc, "found no such files")


# ------------------------------------------------------------------------------------ SynBoost's layout


def make_anomaly_folder(root: Path) -> Path:
    write_image(root / "original/b.jpg", 2)
    write_image(root / "original/a.png", 1)
    write_label(root / "labels/a.png", stripes(0, 1, 255))
    write_label(root / "labels/b.png", 1)
    write_label(root / "labels/0_orphan.png", 0)  # no image: not read, and pairs do not shift
    return root


def test_anomaly_folder_pairs_by_stem(tmp_path):
    ds = AnomalyFolderDataset(make_anomaly_folder(tmp_path))
    assert ds.names == ["a", "b"]
    assert ds[0]["anomaly"][0, :3].tolist() == [0, 1, 255] and ds[0]["anomaly"].dtype == np.uint8
    assert ds[1]["anomaly"].min() == 1 and "label" not in ds[0]


def test_anomaly_folder_roi_semantic_and_errors(tmp_path):
    root = make_anomaly_folder(tmp_path)
    write_label(root / "labels_with_ROI/a.png", 255)
    write_label(root / "labels_with_ROI/b.png", 255)
    assert AnomalyFolderDataset(root)[0]["anomaly"][0, 1] == 1
    assert (AnomalyFolderDataset(root, roi=True)[0]["anomaly"] == 255).all()
    (root / "semantic").mkdir()
    write_label(root / "semantic/a.png", 13)
    with pytest.raises(DataError) as exc:
        AnomalyFolderDataset(root)
    one_line_error(exc, str(root / "original/b.jpg"), str(root / "semantic/b.png"))
    write_label(root / "semantic/b.png", 255)
    assert AnomalyFolderDataset(root)[0]["label"][0, 0] == 13
    write_label(root / "labels/b.png", 2)
    with pytest.raises(ImageReadError) as exc:
        AnomalyFolderDataset(root)[1]
    one_line_error(exc, str(root / "labels/b.png"), "[2]")
    write_image(root / "original/a.jpg")
    with pytest.raises(DataError) as exc:
        AnomalyFolderDataset(root)
    one_line_error(exc, "same sample name 'a'", "a.jpg", "a.png")


def test_anomaly_folder_missing_labels_folder(tmp_path):
    write_image(tmp_path / "original/a.png")
    with pytest.raises(DataError) as exc:
        AnomalyFolderDataset(tmp_path)
    one_line_error(exc, str(tmp_path), "labels/<name>.png", "found no such folder")


def test_fishyscapes_accepts_every_root_level(tmp_path):
    laf = make_anomaly_folder(tmp_path / "fishyscapes/LostAndFound")
    make_anomaly_folder(tmp_path / "fishyscapes/Static")
    for root in (tmp_path, tmp_path / "fishyscapes", laf):
        ds = FishyscapesDataset(root, "laf")
        assert ds.root == laf and ds.names == ["a", "b"]
    assert FishyscapesDataset(tmp_path, "static").root == tmp_path / "fishyscapes/Static"
    with pytest.raises(DataError):  # the Static folder is not taken for Lost & Found
        FishyscapesDataset(tmp_path / "fishyscapes/Static", "laf")
    with pytest.raises(DataError) as exc:
        FishyscapesDataset(tmp_path / "elsewhere", "laf")
    one_line_error(exc, str(tmp_path / "elsewhere"), "LostAndFound/original/*.png")
    with pytest.raises(DataError):
        FishyscapesDataset(tmp_path, "web")


# ------------------------------------------------------------------------------------------- Road Anomaly


def test_road_anomaly_release_layout_maps_2_to_1(tmp_path):
    frames = tmp_path / "frames"
    write_image(frames / "animals01.jpg", 1)
    write_image(frames / "cones02.jpg", 2)
    write_label(frames / "animals01.labels/labels_semantic.png", stripes(0, 2))
    write_label(frames / "cones02.labels/labels_semantic.png", 0)
    ds = RoadAnomalyDataset(tmp_path)
    assert ds.names == ["animals01", "cones02"]
    assert ds[0]["anomaly"][0, :2].tolist() == [0, 1] and ds[1]["anomaly"].max() == 0
    write_label(frames / "cones02.labels/labels_semantic.png", 7)
    with pytest.raises(ImageReadError):
        ds[1]
    write_image(frames / "dog03.jpg")
    with pytest.raises(DataError) as exc:
        RoadAnomalyDataset(tmp_path)
    one_line_error(exc, "dog03.jpg", str(frames / "dog03.labels/labels_semantic.png"))


def test_road_anomaly_synboost_layout_and_missing_root(tmp_path):
    ds = RoadAnomalyDataset(make_anomaly_folder(tmp_path / "road_anomaly"))
    assert ds.names == ["a", "b"] and ds[1]["anomaly"].max() == 1
    with pytest.raises(DataError) as exc:
        RoadAnomalyDataset(tmp_path / "missing")
    one_line_error(exc, str(tmp_path / "missing"), "frames/<name>.jpg")


# ------------------------------------------------------------------------------------- SegmentMeIfYouCan


def make_smiyc(root: Path) -> Path:
    track = root / "dataset_AnomalyTrack"
    write_image(track / "images/validation0000.jpg", 1)
    write_image(track / "images/sample01.jpg", 2)
    write_label(track / "labels_masks/validation0000_labels_semantic.png", stripes(0, 1, 255))
    write_label(track / "labels_masks/validation0000_labels_semantic_color.png", 0)
    obstacle = root / "dataset_ObstacleTrack"
    write_image(obstacle / "images/validation_1.webp", 3)
    write_label(obstacle / "labels_masks/validation_1_labels_semantic.png", 1)
    return root


def test_smiyc_labels_where_present(tmp_path):
    root = make_smiyc(tmp_path)
    ds = SMIYCDataset(root, "anomaly")
    assert ds.names == ["sample01", "validation0000"]
    assert "anomaly" not in ds[0] and ds[1]["anomaly"][0, :3].tolist() == [0, 1, 255]
    assert SMIYCDataset(root / "dataset_AnomalyTrack", labelled_only=True).names == ["validation0000"]
    obstacle = SMIYCDataset(root, "obstacle")
    assert obstacle.names == ["validation_1"] and obstacle[0]["image"][0, 0, 0] == 3  # webp decodes
    (root / "dataset_ObstacleTrack/labels_masks/validation_1_labels_semantic.png").unlink()
    with pytest.raises(DataError) as exc:
        SMIYCDataset(root, "obstacle", labelled_only=True)
    one_line_error(exc, "labels_masks/<fid>_labels_semantic.png")
    with pytest.raises(DataError) as exc:
        SMIYCDataset(tmp_path / "x", "anomaly")
    one_line_error(exc, str(tmp_path / "x"), "dataset_AnomalyTrack/images/")


# ------------------------------------------------------------------------------------------ LostAndFound


def make_laf(root: Path) -> Path:
    frames = {
        "02_Hanns_Klemm_Str_44": [("02_Hanns_Klemm_Str_44_000000_000080", stripes(0, 1, 5))],
        "04_Maurener_Weg_8": [
            ("04_Maurener_Weg_8_000000_000030", 1),
            ("04_Maurener_Weg_8_000001_000010", 0),  # empty label: no road, no obstacle
        ],
        "07_Festplatz_Flugfeld": [("07_Festplatz_Flugfeld_000000_000020", 2)],
    }
    for scene, items in frames.items():
        for stem, ids in items:
            write_image(root / "leftImg8bit/test" / scene / f"{stem}_leftImg8bit.png")
            write_label(root / "gtCoarse/test" / scene / f"{stem}_gtCoarse_labelIds.png", ids)
    return root


def test_lostandfound_maps_ids_and_drops_empty_frames(tmp_path):
    ds = LostAndFoundDataset(make_laf(tmp_path))
    assert ds.names == [
        "02_Hanns_Klemm_Str_44_000000_000080",
        "04_Maurener_Weg_8_000000_000030",
        "07_Festplatz_Flugfeld_000000_000020",
    ]
    assert ds.dropped == ["04_Maurener_Weg_8_000001_000010"]
    assert ds[0]["anomaly"][0, :3].tolist() == [255, 0, 1]  # 0 void, 1 road, 5 obstacle
    assert len(LostAndFoundDataset(tmp_path, drop_empty=False)) == 4


def test_lostandfound_train_ids_fallback_and_unreadable_labels(tmp_path):
    root = make_laf(tmp_path)
    gt = root / "gtCoarse/test/02_Hanns_Klemm_Str_44/02_Hanns_Klemm_Str_44_000000_000080_gtCoarse"
    Path(f"{gt}_labelIds.png").unlink()
    write_label(Path(f"{gt}_labelTrainIds.png"), stripes(0, 1, 2, 255))
    assert LostAndFoundDataset(root)[0]["anomaly"][0, :4].tolist() == [255, 0, 1, 255]
    write_label(Path(f"{gt}_labelTrainIds.png"), 255)  # nothing in the ROI: empty
    assert LostAndFoundDataset(root).dropped == [
        "02_Hanns_Klemm_Str_44_000000_000080",
        "04_Maurener_Weg_8_000001_000010",
    ]
    Path(f"{gt}_labelTrainIds.png").write_bytes(b"not a png")  # kept when opening, reported when read
    ds = LostAndFoundDataset(root)
    assert ds.names[0] == "02_Hanns_Klemm_Str_44_000000_000080"
    with pytest.raises(ImageReadError) as exc:
        ds[0]
    one_line_error(exc, "02_Hanns_Klemm_Str_44_000000_000080_gtCoarse_labelTrainIds.png")


def test_lostandfound_no_known_filter(tmp_path):
    root = make_laf(tmp_path)
    listing = tmp_path / "no_known.txt"
    listing.write_text(
        "# scenes and frames to leave out\n"
        "04_Maurener_Weg_8\n"
        "\n"
        "07_Festplatz_Flugfeld/07_Festplatz_Flugfeld_000000_000020  # one frame\n"
    )
    ds = LostAndFoundDataset(root, no_known=listing)
    assert ds.names == ["02_Hanns_Klemm_Str_44_000000_000080"]
    assert sorted(ds.excluded) == [
        "04_Maurener_Weg_8_000000_000030",
        "04_Maurener_Weg_8_000001_000010",
        "07_Festplatz_Flugfeld_000000_000020",
    ]
    assert LostAndFoundDataset(root, no_known={"02_Hanns_Klemm_Str_44_000000_000080"}).names[0].startswith("04_")
    with pytest.raises(DataError) as exc:
        LostAndFoundDataset(root, no_known=tmp_path / "missing.txt")
    one_line_error(exc, "missing.txt", "one per line")


def test_lostandfound_missing_label_and_folders(tmp_path):
    root = make_laf(tmp_path)
    image = write_image(root / "leftImg8bit/test/04_Maurener_Weg_8/04_Maurener_Weg_8_000002_000010_leftImg8bit.png")
    with pytest.raises(DataError) as exc:
        LostAndFoundDataset(root)
    one_line_error(exc, str(image), "04_Maurener_Weg_8_000002_000010_gtCoarse_labelIds.png")
    with pytest.raises(DataError) as exc:
        LostAndFoundDataset(root, split="train")
    one_line_error(exc, str(root), "leftImg8bit/train/<scene>/*_leftImg8bit.png")


# ---------------------------------------------------------------------------------- plain folders, COCO


def test_image_folder_names_and_errors(tmp_path):
    write_image(tmp_path / "x.png", 1)
    write_image(tmp_path / "sub/y.jpg", 2)
    (tmp_path / "notes.txt").write_text("not an image")
    assert ImageFolder(tmp_path).names == ["x"]
    ds = ImageFolder(tmp_path, recursive=True)
    assert ds.names == ["sub/y", "x"] and set(ds[0]) == {"name", "image"}
    with pytest.raises(DataError) as exc:
        ImageFolder(tmp_path / "sub" / "none")
    one_line_error(exc, "none", "found no such folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as exc:
        ImageFolder(tmp_path / "empty")
    one_line_error(exc, "empty", "found no such files")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError) as exc:
        ImageFolder(tmp_path)[0]
    one_line_error(exc, "broken.png")


def make_coco(root: Path) -> Path:
    coco = root / "coco"
    for i, value in ((139, 254), (285, 0)):
        write_image(coco / f"train2017/{i:012d}.jpg")
        write_label(coco / f"annotations/ood_seg_train2017/{i:012d}.png", stripes(value, 0))
    return coco


def test_coco_outliers(tmp_path):
    coco = make_coco(tmp_path)
    for root in (tmp_path, coco):
        ds = CocoOutliers(root)
        assert ds.names == ["000000000139", "000000000285"]
    mask = ds[0]["mask"]
    assert mask.dtype == bool and mask[0, :2].tolist() == [True, False] and not ds[1]["mask"].any()
    write_label(coco / "annotations/ood_seg_train2017/000000000999.png", 0)
    with pytest.raises(DataError) as exc:
        CocoOutliers(coco)
    one_line_error(exc, "000000000999.png", str(coco / "train2017/000000000999.jpg"))
    with pytest.raises(DataError) as exc:
        CocoOutliers(tmp_path / "none")
    one_line_error(exc, "annotations/ood_seg_train2017/<id>.png")


# ----------------------------------------------------------------------------------------------- factory


def test_open_dataset_by_kind(tmp_path):
    cs = make_cityscapes(tmp_path / "cs")
    assert isinstance(open_dataset(f"cityscapes:{cs}", split="val"), CityscapesDataset)
    assert open_dataset(f"cityscapes:{cs}@val", with_instances=True)[0]["instances"].dtype == np.int32
    make_anomaly_folder(tmp_path / "fs/fishyscapes/LostAndFound")
    make_anomaly_folder(tmp_path / "fs/fishyscapes/Static")
    assert open_dataset(f"fishyscapes_static:{tmp_path / 'fs'}").root.name == "Static"
    assert open_dataset(f"fishyscapes_laf:{tmp_path / 'fs'}").variant == "laf"
    assert open_dataset(f"anomaly_folder:{tmp_path / 'fs/fishyscapes/Static'}", roi=True).names == ["a", "b"]
    make_smiyc(tmp_path / "smiyc")
    assert open_dataset(f"smiyc_obstacle:{tmp_path / 'smiyc'}").track == "obstacle"
    assert isinstance(open_dataset(f"lostandfound:{make_laf(tmp_path / 'laf')}@test"), LostAndFoundDataset)
    assert isinstance(open_dataset(f"coco_outliers:{make_coco(tmp_path / 'c')}"), CocoOutliers)
    write_image(tmp_path / "imgs/p.png")
    assert isinstance(open_dataset(f"folder:{tmp_path / 'imgs'}"), ImageFolder)


def test_open_dataset_synthetic_world(tmp_path):
    world = make_cityscapes(tmp_path / "world", split="train")
    make_cityscapes(world, split="val")
    make_anomaly_folder(world / "anomaly/test")
    (world / "anomaly/test/semantic").mkdir()
    for name in ("a", "b"):
        write_label(world / f"anomaly/test/semantic/{name}.png", 0)
    test = open_dataset(f"synthetic:{world}")
    assert isinstance(test, AnomalyFolderDataset) and set(test[0]) == {"name", "image", "anomaly", "label"}
    train = open_dataset(f"synthetic:{world}@train")
    assert isinstance(train, CityscapesDataset) and train.split == "train"
    assert open_dataset(f"synthetic:{world}@val").split == "val"
    assert detect_kind(world) == "synthetic" and isinstance(open_dataset(world), AnomalyFolderDataset)


def test_auto_detection(tmp_path):
    cases = {
        "cityscapes": make_cityscapes(tmp_path / "cs"),
        "lostandfound": make_laf(tmp_path / "laf"),
        "anomaly_folder": make_anomaly_folder(tmp_path / "folder"),
        "coco_outliers": make_coco(tmp_path / "coco_parent").parent,
        "smiyc_anomaly": make_smiyc(tmp_path / "smiyc") / "dataset_AnomalyTrack",
        "smiyc_obstacle": make_smiyc(tmp_path / "smiyc") / "dataset_ObstacleTrack",
        "fishyscapes_laf": make_anomaly_folder(tmp_path / "fs1/fishyscapes/LostAndFound").parent.parent,
        "fishyscapes_static": make_anomaly_folder(tmp_path / "fs2/Static"),
        "road_anomaly": tmp_path / "ra",
        "folder": write_image(tmp_path / "plain/x.jpg").parent,
    }
    write_image(tmp_path / "ra/frames/a.jpg")
    write_label(tmp_path / "ra/frames/a.labels/labels_semantic.png", 2)
    for kind, root in cases.items():
        assert detect_kind(root) == kind, root
    assert type(open_dataset(str(cases["road_anomaly"]))) is RoadAnomalyDataset
    assert open_dataset(cases["fishyscapes_laf"]).names == ["a", "b"]
    # both tracks side by side is ambiguous: the user must name the kind
    make_anomaly_folder(tmp_path / "fs1/fishyscapes/Static")
    for ambiguous in (tmp_path / "smiyc", tmp_path / "fs1"):
        with pytest.raises(DataError) as exc:
            open_dataset(str(ambiguous))
        msg = one_line_error(exc, str(ambiguous), "<kind>:<path>")
        assert all(kind in msg for kind in KINDS)


def test_open_dataset_spec_errors(tmp_path):
    with pytest.raises(DataError) as exc:
        open_dataset(f"cityscape:{tmp_path}")
    one_line_error(exc, "unknown dataset kind 'cityscape'", "cityscapes")
    with pytest.raises(DataError) as exc:
        open_dataset(str(tmp_path / "absent"))
    one_line_error(exc, str(tmp_path / "absent"), "found no such folder")
    with pytest.raises(DataError) as exc:
        open_dataset(f"road_anomaly:{tmp_path}@test")
    one_line_error(exc, "road_anomaly", "has no splits")
    at_folder = write_image(tmp_path / "shots@night/x.png").parent  # an '@' in a real folder name is not a split
    assert open_dataset(f"folder:{at_folder}").names == ["x"]


def test_datasets_pickle_for_loader_workers(tmp_path):
    ds = LostAndFoundDataset(make_laf(tmp_path))
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.names == ds.names and np.array_equal(clone[0]["anomaly"], ds[0]["anomaly"])


def test_data_readers_do_not_import_torch():
    code = "import sys, synboost.data.datasets, synboost.data.benchmarks; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
