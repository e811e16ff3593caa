"""The weights manifest: download with resume and checksum (against a local HTTP server), archive members,
verify, import through the manifest, and pipelines naming components by manifest name."""
import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml

from synboost.errors import CheckpointError, ConfigError
from synboost.hub import registry
from synboost.importers import IMPORTERS

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class RangeHandler(BaseHTTPRequestHandler):
    """Serves ``files`` (path -> bytes) with HTTP Range support; records every request's Range header."""

    files: dict = {}
    log: list = []

    def do_GET(self):  # noqa: N802
        data = self.files.get(self.path)
        self.log.append((self.path, self.headers.get("Range")))
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    RangeHandler.files, RangeHandler.log = {}, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", RangeHandler
    httpd.shutdown()


def _manifest(tmp_path, weights, archives=None):
    p = tmp_path / "manifest.yaml"
    p.write_text(yaml.safe_dump({"weights": weights, "archives": archives or {}}))
    return registry.load_manifest(p)


def test_download_resumes_and_checks_the_checksum(server, tmp_path, monkeypatch):
    url, handler = server
    monkeypatch.setenv("SYNBOOST_WEIGHTS", str(tmp_path / "w"))
    handler.files["/model.pth"] = PAYLOAD
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    m = _manifest(tmp_path, {"m": {"file": "model.pth", "url": f"{url}/model.pth", "sha256": sha}})
    part = tmp_path / "w" / "model.pth.part"
    part.parent.mkdir()
    part.write_bytes(PAYLOAD[:300_000])  # an interrupted earlier download
    out = registry.download(m, "m", progress=False)
    assert out.read_bytes() == PAYLOAD and not part.exists()
    assert handler.log[-1] == ("/model.pth", "bytes=300000-")  # only the rest was asked for
    assert registry.verify(m)[0]["state"] == "ok"
    # a wrong checksum: the download is refused, nothing lands at the final path
    bad = _manifest(tmp_path, {"b": {"file": "b.pth", "url": f"{url}/model.pth", "sha256": "0" * 64}})
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        registry.download(bad, "b", progress=False)
    assert not (tmp_path / "w" / "b.pth").exists() and (tmp_path / "w" / "b.pth.corrupt").exists()


def test_download_errors_are_one_clear_line(server, tmp_path, monkeypatch):
    url, handler = server
    monkeypatch.setenv("SYNBOOST_WEIGHTS", str(tmp_path / "w"))
    m = _manifest(tmp_path, {"gone": {"file": "g.pth", "url": f"{url}/nothing.pth"},
                             "off": {"file": "o.pth", "url": "http://127.0.0.1:9/x.pth"},
                             "nourl": {"file": "n.pth"}})
    with pytest.raises(CheckpointError, match="HTTP 404"):
        registry.download(m, "gone", progress=False)
    with pytest.raises(CheckpointError, match="cannot be reached"):
        registry.download(m, "off", progress=False)
    with pytest.raises(CheckpointError, match="no download URL; put n.pth at"):
        registry.download(m, "nourl", progress=False)
    with pytest.raises(ConfigError, match="unknown weights 'x'"):
        m.get("x")


def test_archive_member_and_prefix_checksum(server, tmp_path, monkeypatch):
    url, handler = server
    monkeypatch.setenv("SYNBOOST_WEIGHTS", str(tmp_path / "w"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("models/image-x/net.pth")
        info.size = len(PAYLOAD)
        tar.addfile(info, io.BytesIO(PAYLOAD))
    handler.files["/models.tar"] = buf.getvalue()
    prefix = hashlib.sha256(PAYLOAD).hexdigest()[:8]
    m = _manifest(tmp_path, {"net": {"file": "net.pth", "archive": "all", "member": "models/image-x/net.pth",
                                     "sha256_prefix": prefix}},
                  {"all": {"file": "models.tar", "url": f"{url}/models.tar"}})
    out = registry.download(m, "net", progress=False)
    assert out.read_bytes() == PAYLOAD
    assert registry.verify(m, ["net"])[0]["state"] == "ok"
    out.write_bytes(PAYLOAD[:-1] + b"x")
    assert registry.verify(m, ["net"])[0]["state"] == "MISMATCH"


def test_import_through_the_manifest_and_pipelines_name_it(tmp_path, monkeypatch):
    """An official-format dissimilarity file imported by manifest name and used by a pipeline by that name."""
    from synboost.config import DissimModelConfig
    from synboost.detectors.components import build_dissimilarity
    from synboost.detectors.detector import _checkpoint

    monkeypatch.setenv("SYNBOOST_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setenv("SYNBOOST_MANIFEST", str(Path(__file__).resolve().parents[1] / "weights" / "manifest.yaml"))
    m = registry.load_manifest()
    e = m.get("synboost-dissim-baseline")
    torch.manual_seed(0)
    net = build_dissimilarity(DissimModelConfig(priors=[], spade="none", vgg_pretrained=False))
    (tmp_path / "w").mkdir()
    torch.save(net.state_dict(), tmp_path / "w" / e.file)  # the official file is a bare state_dict
    with pytest.raises(CheckpointError,
                       match="not imported yet: run `synboost weights import synboost-dissim-baseline`"):
        _checkpoint("synboost-dissim-baseline", "dissimilarity", "dissimilarity", None)
    out = registry.import_weights(m, "synboost-dissim-baseline", IMPORTERS)
    assert out == tmp_path / "w" / "synboost-dissim-baseline.safetensors"
    assert _checkpoint("synboost-dissim-baseline", "dissimilarity", "dissimilarity", None) == str(out)
    rows = {r["name"]: r for r in registry.status(m)}
    assert rows["synboost-dissim-baseline"]["present"] and rows["synboost-dissim-baseline"]["imported"]
    assert not rows["synboost-segmenter"]["present"]
    with pytest.raises(CheckpointError, match="cityscapes_best.pth there, or run `synboost weights download"):
        registry.import_weights(m, "synboost-segmenter", IMPORTERS)


def test_the_shipped_manifest_is_consistent():
    m = registry.load_manifest(Path(__file__).resolve().parents[1] / "weights" / "manifest.yaml")
    importers = IMPORTERS
    for e in m.weights.values():
        assert e.url or e.archive, e.name
        if e.importer:
            assert e.importer in importers, e.name
        if e.location == "torch_hub":
            assert e.sha256_prefix and e.sha256_prefix in e.file and e.url.endswith(e.file), e.name
    assert {"synboost-segmenter", "synboost-generator", "synboost-dissim-main", "pebal",
            "vgg16-imagenet", "vgg19-imagenet"} <= set(m.weights)
    gen = m.get("synboost-generator")
    assert gen.importer == "ccfpse" and m.get(gen.companion).file == "latest_net_E.pth"
    for e in [*m.weights.values(), *m.archives.values()]:
        assert not Path(e.file).is_absolute() and ".." not in Path(e.file).parts, e.name
    assert registry.repository_manifest() == m.path


def test_verify_names_files_without_a_checksum_unverified(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNBOOST_WEIGHTS", str(tmp_path / "w"))
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "a.pth").write_bytes(PAYLOAD)
    (tmp_path / "w" / "b.pth").write_bytes(PAYLOAD)
    m = _manifest(tmp_path, {"a": {"file": "a.pth"}, "b": {"file": "b.pth", "sha256_prefix": "0000"},
                             "c": {"file": "c.pth"}})
    rows = {r["name"]: r for r in registry.verify(m)}
    assert [rows[k]["state"] for k in "abc"] == ["unverified", "MISMATCH", "missing"]
    assert rows["a"]["sha256"] == hashlib.sha256(PAYLOAD).hexdigest() and rows["a"]["bytes"] == len(PAYLOAD)
