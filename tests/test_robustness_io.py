"""Robustness of folder runs: every entry of an awkward folder is done, skipped or ignored with a reason; what the
image decoders print never reaches the console; one run per output folder; a generator without its style encoder
is said once when the detector is built."""
import json
import os
import re
import socket
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest

from synboost.data.io import read_image, scan_images
from synboost.errors import ImageReadError, SynboostError
from synboost.jobs.infer import run_folder

UNICODE = "straße_ü"


class FakeDetector:
    """anomaly = channel mean / 255, segmentation = zeros."""

    method = "fake"
    batch_size = 2

    def __call__(self, images):
        return [{"anomaly": im.astype(np.float32).mean(axis=2) / 255.0,
                 "segmentation": np.zeros(im.shape[:2], np.uint8)} for im in images]


def png(arr) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def decoder_says(data: bytes, tmp_path) -> str:
    """What OpenCV's decoders print to fd 2 for these bytes, read in a separate process (so that nothing of ours
    catches it). OpenCV 4.x's libpng says "incomplete" of a truncated PNG; 5.x says nothing; both say "IDAT" of a
    bad checksum."""
    f = tmp_path / ".probe.png"
    f.write_bytes(data)
    code = f"import cv2, numpy as np; cv2.imdecode(np.fromfile({str(f)!r}, np.uint8), cv2.IMREAD_UNCHANGED)"
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    f.unlink()
    return err


def awkward_folder(root):
    """Every kind of entry a real images folder holds; returns (images that must be done, files that must be
    skipped, entries that must be ignored: name -> a word of the reason)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    good = png(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    (root / "good.png").write_bytes(good)
    (root / "gray.png").write_bytes(png(rng.integers(0, 256, (24, 32), dtype=np.uint8)))
    (root / "rgba.png").write_bytes(png(rng.integers(0, 256, (24, 32, 4), dtype=np.uint8)))
    (root / "deep16.png").write_bytes(png(rng.integers(0, 65536, (24, 32, 3)).astype(np.uint16)))
    wide = np.tile(np.arange(8192, dtype=np.uint16)[None, :, None] % 256, (16, 1, 3)).astype(np.uint8)
    (root / "wide.png").write_bytes(png(wide))  # 8192 x 16, a few kB
    (root / f"{UNICODE}.png").write_bytes(good)
    (root / "zero.png").write_bytes(b"")
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "text.png").write_text("this is not an image\n")
    os.symlink(root / "gone.png", root / "dangling.png")
    (root / "x.png").mkdir()
    (root / "notes.txt").write_text("camera 3, rainy\n")
    (root / ".DS_Store").write_bytes(b"\0")
    done = ["deep16", "good", "gray", "rgba", UNICODE, "wide"]
    skipped = ["text", "truncated", "zero"]
    ignored = {"dangling.png": "dangling symlink -> ", "x.png": "a folder, not an image",
               "notes.txt": "not an image suffix (.txt)"}
    return done, skipped, ignored


def test_every_entry_is_done_skipped_or_ignored_and_no_decoder_noise(tmp_path, capfd):
    src = tmp_path / "in"
    done, skipped, ignored = awkward_folder(src)
    out = tmp_path / "out"
    rep = run_folder(FakeDetector(), src, out, progress=False)
    err = capfd.readouterr().err
    assert "libpng" not in err and "WARN" not in err and "ERROR" not in err, err
    assert rep["done"] == sorted(done) and rep["finished"]
    reasons = {s["name"]: s for s in rep["skipped"]}
    assert sorted(reasons) == skipped
    for name, s in reasons.items():
        assert s["file"] == str(src / f"{name}.png") and s["reason"].startswith(s["file"] + ": ")
        assert "\n" not in s["reason"]
    assert "empty" in reasons["zero"]["reason"]
    assert "not a readable image" in reasons["text"]["reason"]
    # libpng's words, caught from fd 2, when it says any (this OpenCV's own decoder, probed in another process)
    said = decoder_says((src / "truncated.png").read_bytes(), tmp_path)
    assert ("the decoder said: " in reasons["truncated"]["reason"]) == bool(said.strip()), (said, reasons)
    assert {os.path.basename(i["path"]): i["reason"] for i in rep["ignored"]}.keys() == ignored.keys()
    for entry in rep["ignored"]:
        assert entry["reason"].startswith(ignored[os.path.basename(entry["path"])])
    assert any(i["reason"] == f"dangling symlink -> {src / 'gone.png'}" for i in rep["ignored"])
    assert rep["counts"] == {"images": 9, "done": 6, "skipped": 3, "done_earlier": 0, "ignored": 3, "hidden": 1}
    # none vanishes: every entry but the hidden one is accounted for
    accounted = {f"{n}.png" for n in rep["done"]} | {os.path.basename(s["file"]) for s in rep["skipped"]} \
        | {os.path.basename(i["path"]) for i in rep["ignored"]}
    assert accounted == {n for n in os.listdir(src) if not n.startswith(".")}
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["ignored"] == rep["ignored"]
    assert np.load(out / "maps" / "wide.npy").shape == (16, 8192)
    assert np.load(out / "maps" / f"{UNICODE}.npy").shape == (24, 32)
    assert not (out / ".synboost.lock").exists()


def test_outputs_inside_the_images_folder_are_not_reported(tmp_path):
    src = tmp_path / "in"
    awkward_folder(src)
    for _ in range(2):  # the second run sees maps/, heatmaps/, overlays/ and report.json in the images folder
        rep = run_folder(FakeDetector(), src, src, progress=False)
        assert sorted(os.path.basename(i["path"]) for i in rep["ignored"]) == ["dangling.png", "notes.txt", "x.png"]
    assert rep["counts"]["done_earlier"] == 6


def test_truncated_png_reason_holds_what_the_decoder_said_and_nothing_reaches_fd2(tmp_path, capfd):
    good = png(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    bad, crc = tmp_path / "bad.png", tmp_path / "crc.png"
    bad.write_bytes(good[: len(good) // 3])
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    crc.write_bytes(bytes(flipped))
    (tmp_path / "ok.png").write_bytes(good)
    errors, stop = [], threading.Event()

    def reader(name):
        for _ in range(15):
            for path in (tmp_path / "ok.png", tmp_path / name):
                try:
                    read_image(path)
                except ImageReadError as e:
                    errors.append((path.name, str(e)))

    def chatter():  # another thread's stderr output while decoders run: it must still get through
        k = 0
        while not stop.is_set() or k < 5:
            os.write(2, f"other thread line {k}\n".encode())
            k += 1
            stop.wait(0.002)

    threads = [threading.Thread(target=reader, args=(n,)) for n in ("bad.png", "crc.png")]
    talker = threading.Thread(target=chatter)
    talker.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    talker.join()
    lines = [ln for ln in capfd.readouterr().err.splitlines() if ln]
    # no decoder line of its own (one is only let through when another thread's line landed inside it, not to lose
    # that), and every line of the other thread there, once
    assert all("other thread line " in ln for ln in lines), lines
    numbers = sorted(int(n) for ln in lines for n in re.findall(r"other thread line (\d+)", ln))
    assert numbers == list(range(len(numbers))) and len(numbers) >= 5
    assert len(errors) == 30 and {n for n, _ in errors} == {"bad.png", "crc.png"}
    says = {n: decoder_says((tmp_path / n).read_bytes(), tmp_path) for n in ("bad.png", "crc.png")}
    assert "IDAT" in says["crc.png"]  # a bad checksum is reported by every libpng
    for name, msg in errors:
        assert msg.startswith(str(tmp_path / name) + ": not a readable image") and "\n" not in msg
        assert ("the decoder said: " in msg) == bool(says[name].strip()), (name, says[name], msg)
        # what the decoder said is this file's own, though the two files were decoded side by side (OpenCV 5 says
        # nothing of the truncated file, 4.x says "incomplete")
        if name == "crc.png":
            assert "IDAT" in msg, msg
        else:
            assert "IDAT" not in msg and ("incomplete" in msg or not says[name].strip()), msg


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_child_forked_during_a_decode_writes_to_the_real_stderr(capfd):
    from synboost.data.io import _CATCHER

    go_r, go_w = os.pipe()
    with _CATCHER.catch():  # as if a reader thread were decoding while a data loader forks its workers
        pid = os.fork()
        if pid == 0:  # the child writes after the parent's redirection has ended
            os.read(go_r, 1)
            os.write(2, b"child line\n")
            os._exit(0)
    os.write(go_w, b"x")
    os.waitpid(pid, 0)
    assert "child line" in capfd.readouterr().err


def test_scan_accounts_for_every_entry(tmp_path):
    awkward_folder(tmp_path / "d")
    (tmp_path / "d" / "sub").mkdir()
    (tmp_path / "d" / "sub" / "deeper.png").write_bytes(png(np.zeros((4, 4), np.uint8)))
    flat = scan_images(tmp_path / "d")
    kinds = {i.path.name: i.kind for i in flat.ignored}
    assert kinds == {"dangling.png": "link", "notes.txt": "suffix", "sub": "subfolder", "x.png": "folder"}
    assert flat.hidden == 1 and len(flat.images) == 9
    deep = scan_images(tmp_path / "d", recursive=True)
    assert tmp_path / "d" / "sub" / "deeper.png" in deep.images
    assert {i.path.name for i in deep.ignored} == {"dangling.png", "notes.txt"}  # folders are searched


# ------------------------------------------------------------------------------------------------ the lock


def test_a_second_run_into_a_folder_in_use_refuses_with_one_line(tmp_path):
    src = tmp_path / "in"
    awkward_folder(src)
    out = tmp_path / "out"
    entered, release = threading.Event(), threading.Event()

    class Slow(FakeDetector):
        def __call__(self, images):
            entered.set()
            assert release.wait(30)
            return super().__call__(images)

    first: dict = {}
    t = threading.Thread(target=lambda: first.update(run_folder(Slow(), src, out, progress=False)))
    t.start()
    try:
        assert entered.wait(30)
        with pytest.raises(SynboostError) as e:
            run_folder(FakeDetector(), src, out, progress=False)
        msg = str(e.value)
        assert "\n" not in msg and str(out) in msg and f"pid {os.getpid()}" in msg and "another run" in msg
        listing = scan_images(out)  # the lock is never an input or an ignored entry
        assert (out / ".synboost.lock").exists() and listing.hidden >= 1
        assert ".synboost.lock" not in {i.path.name for i in listing.ignored}
    finally:
        release.set()
        t.join()
    assert first["finished"] and len(first["done"]) == 6 and not (out / ".synboost.lock").exists()
    assert not any(".synboost.lock" in json.dumps(v) for v in first.values())


def test_a_dead_runs_lock_is_taken_over_with_a_note(tmp_path, capfd):
    src = tmp_path / "in"
    awkward_folder(src)
    out = tmp_path / "out"
    out.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (out / ".synboost.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": gone.pid, "verb": "infer"}))
    rep = run_folder(FakeDetector(), src, out, progress=False)
    assert rep["finished"] and len(rep["done"]) == 6
    err = capfd.readouterr().err
    assert "taking over the lock" in err and f"pid {gone.pid}" in err
    assert not (out / ".synboost.lock").exists()


# ------------------------------------------------------------------------------------------------ the CLI


@pytest.fixture
def tiny_pipeline(tmp_path):
    from synboost.config import SegModelConfig
    from synboost.detectors.components import save_component
    from synboost.detectors.detector import write_pipeline_file
    from synboost.models import create_model

    kw = dict(backbone="tiny", aspp_dim=8, decoder_dim=8, width=4)
    ckpt = save_component(tmp_path / "seg.safetensors", create_model("deeplabv3plus", **kw), "segmenter",
                          SegModelConfig(pretrained=False, **kw))
    return write_pipeline_file(tmp_path / "p.yaml", segmenter=str(ckpt), method="energy", device="cpu")


def test_cli_infer_clean_folder_exits_0(tmp_path, tiny_pipeline, capfd):
    from synboost.cli import main

    src = tmp_path / "clean"
    src.mkdir()
    for i in range(2):
        (src / f"f{i}.png").write_bytes(png(np.full((32, 64, 3), 40 * i, np.uint8)))
    assert main(["infer", "--pipeline", str(tiny_pipeline), "--images", str(src), "--out", str(tmp_path / "o")]) == 0
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["counts"]["done"] == 2 and rep["ignored"] == [] and rep["skipped"] == []


def test_cli_infer_exits_3_when_something_was_skipped_or_ignored(tmp_path, tiny_pipeline, capfd):
    from synboost.cli import main

    src = tmp_path / "in"
    awkward_folder(src)
    out = tmp_path / "o"
    code = main(["infer", "--pipeline", str(tiny_pipeline), "--images", str(src), "--out", str(out)])
    assert "libpng" not in capfd.readouterr().err
    rep = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert rep["counts"]["skipped"] == 3 and rep["counts"]["ignored"] == 3 and np.load(out / "maps/wide.npy").shape \
        == (16, 8192)
    assert code == 3


# ------------------------------------------------------------------------------------ the style encoder


def _synboost_with(stages, generator):
    from synboost.detectors.components import load_dissimilarity, load_segmenter, perceptual_vgg
    from synboost.detectors.synboost import SynBoostDetector

    seg, sml = load_segmenter(stages / "seg.safetensors")
    dis, meta = load_dissimilarity(stages / "dis.safetensors")
    return SynBoostDetector(seg, generator, dis, perceptual_vgg(False), meta["size"], sml, device="cpu")


def test_a_generator_without_its_style_encoder_is_said_once_at_build_time(stages, capfd):
    from synboost.detectors.components import build_ccfpse, load_generator
    from synboost.models.generator import SPADEGenerator

    image = np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    capfd.readouterr()
    _synboost_with(stages, load_generator(stages / "gen.safetensors"))  # with its encoder: nothing to say
    assert capfd.readouterr().err == ""

    bare = build_ccfpse(ngf=8, num_upsampling=5, out_size=(32, 64), with_encoder=False).eval()
    assert bare.use_vae and bare.encoder is None
    det = _synboost_with(stages, bare)
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: ") and "latest_net_E.pth" in err and "z = 0" in err
    det([image, image])
    det([image])
    assert capfd.readouterr().err == ""  # once, at build time: not per batch

    label_only = SPADEGenerator(ngf=8, num_upsampling=4, use_vae=False, out_size=(32, 64), spade_hidden=16).eval()
    _synboost_with(stages, label_only)
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "use_vae=False" in err


# ------------------------------------------------------------------------------------------------ evaluate


class GreyDetector:
    """An ``evaluate`` stand-in: the anomaly score is the grey level."""

    method = "grey"
    batch_size = 2

    def run(self, images, methods):
        return [{"grey": im.astype(np.float32).mean(axis=2) / 255.0, "segmentation": np.zeros(im.shape[:2], np.uint8)}
                for im in images]


def test_evaluate_reports_skipped_files_with_sizes_and_ignored_entries(tmp_path):
    from synboost.jobs.evaluate import evaluate

    root = tmp_path / "set"
    (root / "original").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(2)
    for i in range(4):
        lab = np.zeros((24, 32), np.uint8)
        lab[4:12, 8:20] = 1
        img = rng.integers(0, 100, (24, 32, 3), dtype=np.uint8)
        img[lab == 1] = 220
        (root / "original" / f"f{i}.png").write_bytes(png(img))
        (root / "labels" / f"f{i}.png").write_bytes(png(lab if i != 2 else lab[:20]))  # f2: a wrong-size label
    (root / "original" / "notes.txt").write_text("x")
    os.symlink(root / "nowhere.png", root / "original" / "lost.png")
    rep = evaluate(GreyDetector(), f"anomaly_folder:{root}", out_dir=tmp_path / "ev", progress=False)
    assert rep["images"] == 3 and len(rep["skipped"]) == 1
    s = rep["skipped"][0]
    assert s["name"] == "f2" and s["index"] == 2 and s["file"] == str(root / "labels" / "f2.png")
    assert s["reason"].startswith(s["file"] + ": ") and "20x32 but its image is 24x32" in s["reason"]
    assert rep["ignored"] == [
        {"path": str(root / "original" / "lost.png"), "reason": f"dangling symlink -> {root / 'nowhere.png'}"},
        {"path": str(root / "original" / "notes.txt"), "reason": "not an image suffix (.txt)"}]
    assert rep["counts"] == {"done": 3, "skipped": 1, "ignored": 2, "hidden": 0, "unlabelled": 0}
    on_disk = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert on_disk["skipped"] == rep["skipped"] and on_disk["ignored"] == rep["ignored"]
    md = (tmp_path / "ev" / "metrics.md").read_text()
    assert f"- {s['reason']}" in md and f"- {root / 'original' / 'notes.txt'}: not an image suffix (.txt)" in md
