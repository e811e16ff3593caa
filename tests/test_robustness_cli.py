"""The command line under misuse and bad inputs: overrides that are bad YAML or carry tags, the CC-FPSE encoder
never silently dropped, crafted manifests and archives, unverified downloads, Ctrl-C messages that tell the
truth per verb, exit status 3 for runs that skipped inputs, `pipeline upgrade / show`, and the old names."""
from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from synboost.cli import EXIT_INTERRUPTED, EXIT_SKIPS, main
from synboost.hub import registry

REPO = Path(__file__).resolve().parents[1]


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if not ln.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    """A tiny segmenter's pipeline file (energy, CPU)."""
    from synboost.config import SegModelConfig
    from synboost.detectors.components import save_component
    from synboost.detectors.detector import write_pipeline_file
    from synboost.models import create_model

    d = tmp_path_factory.mktemp("pipe")
    kw = dict(backbone="tiny", aspp_dim=8, decoder_dim=8, width=4)
    ckpt = save_component(d / "seg.safetensors", create_model("deeplabv3plus", **kw), "segmenter",
                          SegModelConfig(pretrained=False, **kw))
    return write_pipeline_file(d / "p.yaml", segmenter=str(ckpt), method="energy", device="cpu", batch_size=2)


def images(folder: Path, n: int = 2, size=(32, 64)) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"img{i:02d}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return folder


# ------------------------------------------------------------------------------------------ --set overrides

@pytest.mark.parametrize("value,needle", [
    ("[1,", "not valid YAML"),
    ("{a: 1", "not valid YAML"),
    ("!!python/object:os.system", "YAML tags (!!python/object:os.system) are not allowed"),
    ("!!python/object/apply:os.system [touch {marker}]", "YAML tags (!!python/object/apply:os.system)"),
    ("[!!python/name:os.system x]", "YAML tags (!!python/name:os.system)"),
])
def test_set_values_that_are_bad_yaml_or_tags_are_one_line_exit_2(value, needle, tmp_path, capsys, pipe):
    marker = tmp_path / "ran"
    value = value.replace("{marker}", str(marker))
    assert main(["data", "world", "--out", str(tmp_path / "w"), "--set", f"n={value}"]) == 2
    one_line_error(capsys, f"override 'n={value}'", needle)
    # a pipeline value goes the same way (eval --set edits the pipeline file's config)
    assert main(["eval", "--pipeline", str(pipe), "--data", "synthetic:/x", "--set", f"score.method={value}"]) == 2
    one_line_error(capsys, needle)
    assert not marker.exists() and not (tmp_path / "w").exists()


def test_tags_in_a_config_file_are_refused(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"n: !!python/object/apply:os.system ['touch {tmp_path / 'ran'}']\n")
    assert main(["data", "world", "--config", str(cfg)]) == 2
    one_line_error(capsys, str(cfg), "YAML tags are not allowed")
    assert not (tmp_path / "ran").exists()


# ------------------------------------------------------------------------------------------ CC-FPSE encoder

@pytest.fixture
def release(tmp_path, monkeypatch):
    """Random CC-FPSE files in the official layout (latest_net_G.pth + latest_net_E.pth, released 256x512 grid)."""
    import torch
    from test_models_ccfpse import random_official_files

    monkeypatch.setenv("SYNBOOST_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.delenv("SYNBOOST_MANIFEST", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    src = tmp_path / "release"
    src.mkdir()
    random_official_files(src, ngf=8, size=(256, 512))
    yield src
    torch.set_num_threads(threads)


def _imported(path: Path) -> tuple[list[str], bool]:
    from synboost.hub.checkpoint import read_meta

    meta = read_meta(path)
    return meta["imported_from"], meta["model"]["with_encoder"]


def test_generator_import_takes_the_encoder_beside_src(release, tmp_path, capsys):
    out = tmp_path / "g.safetensors"
    assert main(["weights", "import", "synboost-generator", "--src", str(release / "latest_net_G.pth"),
                 "--out", str(out)]) == 0
    assert _imported(out) == (["latest_net_G.pth", "latest_net_E.pth"], True)


def test_generator_import_stops_without_the_encoder_unless_told(release, tmp_path, capsys):
    enc = release / "latest_net_E.pth"
    kept = tmp_path / "elsewhere" / "enc.pth"
    kept.parent.mkdir()
    enc.replace(kept)
    out = tmp_path / "g.safetensors"
    argv = ["weights", "import", "synboost-generator", "--src", str(release / "latest_net_G.pth"), "--out", str(out)]
    assert main(argv) == 2
    one_line_error(capsys, "latest_net_E.pth", str(enc), str(tmp_path / "w" / "latest_net_E.pth"), "--encoder PATH",
                   "--no-encoder")
    assert not out.exists()
    assert main([*argv, "--no-encoder"]) == 0
    assert _imported(out) == (["latest_net_G.pth"], False)
    assert main([*argv, "--encoder", str(kept)]) == 0
    assert _imported(out) == (["latest_net_G.pth", "enc.pth"], True)
    assert main([*argv, "--encoder", str(tmp_path / "nope.pth")]) == 2
    one_line_error(capsys, "nope.pth: encoder file not found")
    assert main([*argv, "--encoder", str(kept), "--no-encoder"]) == 2
    one_line_error(capsys, "contradict")
    # the encoder in the weights folder is found too (the generator given with --src elsewhere)
    (tmp_path / "w").mkdir()
    kept.replace(tmp_path / "w" / "latest_net_E.pth")
    assert main(argv) == 0
    assert _imported(out) == (["latest_net_G.pth", "latest_net_E.pth"], True)
    # the encoder entry alone is not imported: it says which entry carries it
    assert main(["weights", "import", "synboost-generator-encoder"]) == 2
    one_line_error(capsys, "imported together with 'synboost-generator'")


# ------------------------------------------------------------------------------------------ manifests

def _write_manifest(tmp_path, weights, archives=None) -> Path:
    p = tmp_path / "manifest.yaml"
    p.write_text(yaml.safe_dump({"weights": weights, "archives": archives or {}}))
    return p


@pytest.mark.parametrize("file", ["/etc/passwd", "../outside.pth", "sub/../../outside.pth", "~/x.pth",
                                  "C:\\x.pth", "..\\x.pth", ""])
def test_manifest_files_stay_inside_the_weights_folder(file, tmp_path, capsys):
    p = _write_manifest(tmp_path, {"ok": {"file": "ok.pth"}, "evil": {"file": file, "url": "http://x/y"}})
    assert main(["weights", "list", "--manifest", str(p)]) == 2
    one_line_error(capsys, str(p), "'evil'", "inside the weights folder")
    p = _write_manifest(tmp_path, {"ok": {"file": "ok.pth", "archive": "a", "member": "ok.pth"}},
                        {"a": {"file": file, "url": "http://x/a.tar"}})
    assert main(["weights", "list", "--manifest", str(p)]) == 2
    one_line_error(capsys, "archives entry 'a'")


def test_manifest_entries_with_unknown_fields_name_the_entry(tmp_path, capsys):
    p = _write_manifest(tmp_path, {"m": {"file": "m.pth", "checksum": "abc"}})
    assert main(["weights", "list", "--manifest", str(p)]) == 2
    one_line_error(capsys, "entry 'm'", "checksum")


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_archive_members_that_are_links_are_refused(link, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SYNBOOST_WEIGHTS", str(tmp_path / "w"))
    (tmp_path / "w").mkdir()
    with tarfile.open(tmp_path / "w" / "models.tar", "w") as tar:
        info = tarfile.TarInfo("models/net.pth")
        info.type = tarfile.SYMTYPE if link == "symlink" else tarfile.LNKTYPE
        info.linkname = "../../../etc/passwd" if link == "symlink" else "models/absent.pth"
        tar.addfile(info)
    p = _write_manifest(tmp_path, {"net": {"file": "net.pth", "archive": "all", "member": "models/net.pth"}},
                        {"all": {"file": "models.tar", "url": "http://127.0.0.1:9/models.tar"}})
    assert main(["weights", "download", "net", "--manifest", str(p)]) == 2
    kind = "a symbolic link" if link == "symlink" else "a hard link"
    one_line_error(capsys, "models.tar: member models/net.pth is " + kind, "not a file")
    assert not (tmp_path / "w" / "net.pth").exists()


def test_a_manifest_in_the_working_directory_is_read_only_when_named(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SYNBOOST_MANIFEST", raising=False)
    monkeypatch.setenv("SYNBOOST_WEIGHTS", str(tmp_path / "w"))
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "manifest.yaml").write_text(yaml.safe_dump({"weights": {"decoy": {"file": "d.pth"}}}))
    monkeypatch.chdir(tmp_path)
    assert registry.default_manifest_path() == REPO / "weights" / "manifest.yaml"
    assert "decoy" not in registry.load_manifest().weights and registry.resolve("decoy") == "decoy"
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "decoy" not in out and "synboost-segmenter" in out
    assert main(["weights", "list", "--manifest", "weights/manifest.yaml"]) == 0
    assert "decoy" in capsys.readouterr().out


@pytest.fixture
def served():
    from test_hub_registry import RangeHandler

    RangeHandler.files, RangeHandler.log = {}, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", RangeHandler
    httpd.shutdown()


def test_downloads_without_a_checksum_say_unverified(served, tmp_path, monkeypatch, capsys):
    url, handler = served
    monkeypatch.setenv("SYNBOOST_WEIGHTS", str(tmp_path / "w"))
    payload = bytes(range(256)) * 64
    handler.files["/m.pth"] = payload
    sha = hashlib.sha256(payload).hexdigest()
    p = _write_manifest(tmp_path, {"loose": {"file": "m.pth", "url": f"{url}/m.pth"},
                                   "pinned": {"file": "p.pth", "url": f"{url}/m.pth", "sha256": sha}})
    assert main(["weights", "download", "loose", "pinned", "--manifest", str(p)]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"loose: .*m\.pth \(unverified: .* no checksum for 'loose'; its sha256 is {sha}\)", out)
    assert re.search(r"pinned: .*p\.pth \(checksum ok\)", out)
    assert main(["weights", "verify", "--manifest", str(p)]) == 0
    rows = {ln.split()[0]: ln.split()[1] for ln in capsys.readouterr().out.splitlines() if ln.startswith("  ")}
    assert rows == {"loose": "unverified", "pinned": "ok"}


# ------------------------------------------------------------------------------------------ Ctrl-C

def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("verb,argv,target,resumes", [
    ("infer", ["infer", "--pipeline", "{pipe}", "--images", "{tmp}", "--out", "{tmp}/o"],
     "synboost.jobs.infer.run_folder_distributed", True),
    ("train", ["train", "segmentation", "--config", str(REPO / "configs/segmentation/synthetic.yaml")],
     "synboost.training.segmentation.train_segmentation", True),
    ("demo", ["demo", "--quick"], "synboost.jobs.demo.run_demo", True),
    ("eval", ["eval", "--pipeline", "{pipe}", "--data", "synthetic:{tmp}"], "synboost.jobs.evaluate.evaluate_many",
     False),
    ("compare", ["compare", "--pipelines", "{pipe}", "--data", "synthetic:{tmp}"], "synboost.jobs.compare.compare",
     False),
    ("bench", ["bench", "metrics"], "synboost.bench.metrics.run_metrics_benchmark", False),
    ("weights", ["weights", "verify"], "synboost.hub.registry.verify", False),
])
def test_ctrl_c_names_what_the_verb_really_does(verb, argv, target, resumes, pipe, tmp_path, monkeypatch, capsys):
    import importlib

    module, _, attr = target.rpartition(".")
    monkeypatch.setattr(importlib.import_module(module), attr, _interrupt)
    assert main([a.format(pipe=pipe, tmp=tmp_path) for a in argv]) == EXIT_INTERRUPTED
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted") and "\n" not in err
    if resumes:
        assert err == "interrupted; run the same command again to continue where it stopped (--fresh starts over)"
    else:
        assert "--fresh" not in err and "continue" not in err and "--resume" not in err
        assert "does not resume" in err and f"synboost {verb}" in err


def test_ctrl_c_during_a_download_says_it_continues(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(registry, "download_checked", _interrupt)
    assert main(["weights", "download", "pebal"]) == EXIT_INTERRUPTED
    assert "continue the download" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ exit status 3

def test_infer_over_a_folder_with_a_corrupt_image_exits_3(pipe, tmp_path, capsys):
    src = images(tmp_path / "in", n=2)
    (src / "bad.png").write_bytes(b"")
    out = tmp_path / "out"
    argv = ["infer", "--pipeline", str(pipe), "--images", str(src), "--out", str(out)]
    assert main(argv) == EXIT_SKIPS
    text = capsys.readouterr().out
    assert "2 done, 0 done earlier, 1 skipped" in text and "finished, with skips: 1 skipped (exit status 3)" in text
    assert re.search(r"  skipped: .*bad\.png", text)
    assert sorted(p.name for p in (out / "maps").iterdir()) == ["img00.npy", "img01.npy"]
    assert main(argv) == EXIT_SKIPS  # resumed: the bad file is still not processed
    assert "0 done, 2 done earlier, 1 skipped" in capsys.readouterr().out
    (src / "bad.png").unlink()
    assert main(argv) == 0


def test_the_console_lists_ten_skips_and_points_at_the_report(pipe, tmp_path, capsys):
    src = images(tmp_path / "in", n=1)
    for i in range(12):
        (src / f"bad{i:02d}.png").write_bytes(b"")
    out = tmp_path / "out"
    assert main(["infer", "--pipeline", str(pipe), "--images", str(src), "--out", str(out)]) == EXIT_SKIPS
    lines = capsys.readouterr().out.splitlines()
    listed = [ln for ln in lines if ln.startswith("  skipped: ")]
    assert len(listed) == 10 and all(f"bad{i:02d}.png" in ln for i, ln in enumerate(listed))
    assert lines[-1] == f"  (+2 more, see {out / 'report.json'})"
    assert len(json.loads((out / "report.json").read_text())["skipped"]) == 12


def test_ignored_inputs_are_listed_too(pipe, tmp_path, monkeypatch, capsys):
    """The infer report's ``ignored`` list (dangling links, folders named *.png, ...) counts like skips."""
    import synboost.jobs.infer as infer

    def fake(*args, **kwargs):
        return {"counts": {"done": 1, "done_earlier": 0, "skipped": 0, "images": 1}, "skipped": [],
                "ignored": [{"path": "/data/x/dangling.png", "reason": "a link to a missing file"}]}

    monkeypatch.setattr(infer, "run_folder_distributed", fake)
    assert main(["infer", "--pipeline", str(pipe), "--images", str(tmp_path), "--out", str(tmp_path)]) == EXIT_SKIPS
    text = capsys.readouterr().out
    assert "1 done, 0 done earlier, 0 skipped, 1 ignored" in text
    assert "  ignored: /data/x/dangling.png: a link to a missing file" in text


def _anomaly_folder(root: Path, n: int = 3, size=(32, 64)) -> Path:
    rng = np.random.default_rng(1)
    test = root / "anomaly" / "test"
    for sub in ("original", "labels"):
        (test / sub).mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(test / "original" / f"s{i}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        lab = np.zeros(size, np.uint8)
        lab[8:16, 8:24] = 1
        cv2.imwrite(str(test / "labels" / f"s{i}.png"), lab)
    return root


def test_eval_with_a_wrong_size_label_exits_3_and_names_it(pipe, tmp_path, capsys):
    data = _anomaly_folder(tmp_path / "d")
    bad = data / "anomaly" / "test" / "labels" / "s1.png"
    cv2.imwrite(str(bad), np.zeros((16, 16), np.uint8))
    out = tmp_path / "ev"
    assert main(["eval", "--pipeline", str(pipe), "--data", f"synthetic:{data}", "--out", str(out)]) == EXIT_SKIPS
    text = capsys.readouterr().out
    assert "finished, with skips: 1 skipped (exit status 3)" in text
    assert re.search(rf"  skipped: {re.escape(str(bad))}: label map is 16x16 but its image is 32x64", text)
    assert len(json.loads((out / "synthetic" / "metrics.json").read_text())["skipped"]) == 1
    cv2.imwrite(str(bad), np.zeros((32, 64), np.uint8))
    assert main(["eval", "--pipeline", str(pipe), "--data", f"synthetic:{data}"]) == 0


# ------------------------------------------------------------------------------------------ pipeline verbs

def test_pipeline_upgrade_keeps_the_detector_and_show_resolves_it(pipe, tmp_path, capsys):
    from synboost.detectors.detector import load_pipeline, read_pipeline

    run = tmp_path / "run"
    run.mkdir()
    (run / "seg.safetensors").write_bytes(Path(pipe).with_name("seg.safetensors").read_bytes())
    flat = run / "flat.yaml"
    flat.write_text("segmenter: seg.safetensors\nmethod: maxlogit\nbatch_size: 3\ndevice: cpu\ninput_size: [32, 64]\n")
    before = read_pipeline(flat)
    assert main(["pipeline", "upgrade", str(flat), "--out", str(run / "new.yaml")]) == 0
    assert f"wrote {run / 'new.yaml'}" in capsys.readouterr().out
    written = yaml.safe_load((run / "new.yaml").read_text())
    assert set(written) == {"detector", "components", "score", "defaults"} and written["detector"] == "posthoc"
    assert read_pipeline(run / "new.yaml") == before
    det = load_pipeline(run / "new.yaml")
    assert det.method == "maxlogit" and det.batch_size == 3
    assert main(["pipeline", "upgrade", str(flat)]) == 0  # in place
    assert f"wrote {flat}" in capsys.readouterr().out
    assert read_pipeline(flat) == before and "detector" in yaml.safe_load(flat.read_text())

    assert main(["pipeline", "show", str(flat), "--set", "pebal=nope.safetensors"]) == 0
    text = capsys.readouterr().out
    assert yaml.safe_load(text)["score"]["method"] == "maxlogit"  # the whole output is YAML
    assert re.search(rf"#   segmenter +{re.escape(str(run / 'seg.safetensors'))}$", text, re.M)
    assert re.search(rf"#   pebal +{re.escape(str(run / 'nope.safetensors'))}  \(missing\)$", text, re.M)
    assert main(["pipeline", "show", str(tmp_path / "none.yaml")]) == 2
    one_line_error(capsys, "none.yaml: pipeline file not found")


# ------------------------------------------------------------------------------------------ old names

def test_old_flags_and_verbs_still_work_with_a_note(pipe, tmp_path, monkeypatch, capsys):
    import synboost.jobs.infer as infer
    import synboost.training.segmentation as seg

    seen = {}

    def train(cfg, resume=False):
        seen["resume"] = resume
        return {"last": "last.safetensors", "val": {"miou": 0.5}}

    monkeypatch.setattr(seg, "train_segmentation", train)
    cfg = str(REPO / "configs/segmentation/synthetic.yaml")
    for extra, resume, note in (([], True, False), (["--resume"], True, True), (["--fresh"], False, False)):
        assert main(["train", "segmentation", "--config", cfg, *extra]) == 0
        err = capsys.readouterr().err
        assert seen.pop("resume") is resume
        assert ("note: --resume is now the default for `synboost train` (--fresh starts over)" in err) is note

    def run_folder(det, images_dir, out_dir, resume=True, **kw):
        seen["resume"] = resume
        return {"counts": {"done": 0, "done_earlier": 0, "skipped": 0}, "skipped": []}

    monkeypatch.setattr(infer, "run_folder_distributed", run_folder)
    base = ["infer", "--pipeline", str(pipe), "--images", str(tmp_path), "--out", str(tmp_path / "o")]
    for extra, resume in (([], True), (["--no-resume"], False), (["--fresh"], False)):
        assert main([*base, *extra]) == 0
        assert seen.pop("resume") is resume
    assert "--no-resume is deprecated for `synboost infer`: use --fresh" in capsys.readouterr().err

    monkeypatch.setattr("synboost.jobs.resynthesize.synthesize_folder", lambda *a, **k: {"done": ["x"], "skipped": []})
    monkeypatch.setattr("synboost.detectors.components.load_generator", lambda *a, **k: None)
    for verb in ("resynthesize", "synthesize"):
        assert main([verb, "--generator", "g", "--labels", "l", "--out", str(tmp_path)]) == 0
        r = capsys.readouterr()
        assert "1 redrawn, 0 skipped" in r.out
        assert ("note: `synboost synthesize` is now `synboost resynthesize`" in r.err) is (verb == "synthesize")


def test_hidden_aliases_are_not_listed_and_exit_codes_are(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "resynthesize" in text and not re.search(r"\bsynthesize\b", text)
    for code in ("0 ", "2 ", "3 ", "130 "):
        assert re.search(rf"^  {code}", text, re.M), code
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    text = capsys.readouterr().out
    assert "world" in text and "synth" not in text


def test_data_synth_is_data_world(tmp_path, capsys):
    out = tmp_path / "w"
    argv = ["--out", str(out), "--n", "10", "--size", "32x64", "--seed", "2", "--set", "workers=1"]
    assert main(["data", "synth", *argv]) == 0
    assert "`synboost data synth` is now `synboost data world`" in capsys.readouterr().err
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.png")}
    assert main(["data", "world", *argv]) == 0
    assert first == {p.relative_to(out): p.read_bytes() for p in out.rglob("*.png")} and first


def test_skip_listing_without_a_report_says_how_to_keep_one(capsys):
    from synboost.cli.common import print_skips

    items = [("skipped", {"index": i, "reason": f"/d/{i}.png: broken"}, None) for i in range(11)]
    assert print_skips(items) == EXIT_SKIPS
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "finished, with skips: 11 skipped (exit status 3)" and lines[1] == "  skipped: /d/0.png: broken"
    assert lines[-1] == "  (+1 more, pass --out to keep the full list)"
    assert print_skips([]) == 0 and capsys.readouterr().out == ""


def test_tar_members_stream_into_place(tmp_path, monkeypatch):
    """The member is still copied by name when it is a plain file (the link checks do not refuse files)."""
    monkeypatch.setenv("SYNBOOST_WEIGHTS", str(tmp_path / "w"))
    (tmp_path / "w").mkdir()
    payload = b"weights" * 100
    with tarfile.open(tmp_path / "w" / "models.tar", "w") as tar:
        info = tarfile.TarInfo("models/net.pth")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    m = registry.load_manifest(_write_manifest(
        tmp_path, {"net": {"file": "net.pth", "archive": "all", "member": "models/net.pth"}},
        {"all": {"file": "models.tar", "url": "http://127.0.0.1:9/models.tar"}}))
    r = registry.download_checked(m, "net", progress=False)
    assert r["file"].read_bytes() == payload and r["state"] == "unverified"
