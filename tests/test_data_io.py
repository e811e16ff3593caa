import cv2
import numpy as np
import pytest

from synboost.data.io import atomic_path, read_image, read_label, write_image, write_json
from synboost.data.labels import CLASS_NAMES, ID_TO_TRAIN_ID, TRAIN_ID_TO_ID, colorize, ids_to_train_ids
from synboost.errors import ImageReadError


def test_odd_images_become_rgb_uint8(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 255, (5, 7), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    assert read_image(tmp_path / "g.png").shape == (5, 7, 3)
    assert (read_image(tmp_path / "g.png")[..., 1] == gray).all()
    rgba = rng.integers(0, 255, (5, 7, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    out = read_image(tmp_path / "a.png")
    assert out.shape == (5, 7, 3) and (out == rgba[..., [2, 1, 0]]).all()  # BGRA on disk -> RGB
    deep = (rng.integers(0, 65535, (5, 7, 3))).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.uint8 and (out == (deep[..., ::-1] >> 8)).all()


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00"])
def test_bad_files_one_clear_line(tmp_path, content):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageReadError) as e:
        read_image(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "missing.png")


def test_label_checks(tmp_path):
    lab = np.zeros((4, 6), np.uint8)
    lab[0, 0] = 40
    write_image(tmp_path / "l.png", lab)
    with pytest.raises(ImageReadError, match="4x6 but its image is 5x6"):
        read_label(tmp_path / "l.png", shape=(5, 6))
    valid = np.zeros(256, bool)
    valid[:34] = True
    with pytest.raises(ImageReadError, match=r"unknown label ids \[40\]"):
        read_label(tmp_path / "l.png", valid_ids=valid)
    color = np.zeros((4, 6, 3), np.uint8)
    color[..., 0] = 200
    write_image(tmp_path / "c.png", color)
    with pytest.raises(ImageReadError, match="colour"):
        read_label(tmp_path / "c.png")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    write_json(target, {"a": np.float32(1.5), "b": np.arange(2)})
    assert target.read_text().count("1.5") == 1


def test_cityscapes_table():
    assert len(CLASS_NAMES) == 19 and CLASS_NAMES[0] == "road" and CLASS_NAMES[18] == "bicycle"
    ids = np.array([0, 1, 6, 7, 8, 11, 17, 21, 23, 24, 26, 29, 33, 34, 250])
    want = np.array([255, 255, 255, 0, 1, 2, 5, 8, 10, 11, 13, 255, 18, 255, 255])
    assert (ids_to_train_ids(ids) == want).all()
    # the round trip through label ids is the identity on the 19 classes
    t = np.arange(19, dtype=np.uint8)
    assert (ID_TO_TRAIN_ID[TRAIN_ID_TO_ID[t]] == t).all()
    assert tuple(colorize(np.array([[0, 255]]))[0, 0]) == (128, 64, 128)
    assert tuple(colorize(np.array([[0, 255]]))[0, 1]) == (0, 0, 0)
