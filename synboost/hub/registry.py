"""The manifest of known checkpoints (``weights/manifest.yaml``): where each file is expected, its checksum, how
to get it (resumable, checksummed download; a member of an archive) and the importer that converts it.

``synboost weights list | verify | download NAME | import NAME`` are thin calls into this module. Downloads are
never made at run time by anything else: pipelines and training read local files only.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from synboost.errors import CheckpointError, ConfigError

CHUNK = 1 << 20


@dataclass
class Entry:
    name: str
    file: str
    description: str = ""
    url: str = ""
    sha256: str | None = None
    sha256_prefix: str | None = None
    archive: str = ""  #: name of an archive entry holding the file
    member: str = ""  #: the file's path inside that archive
    kind: str = ""
    importer: str = ""
    companion: str = ""  #: another entry imported together with this one (the generator's encoder)
    location: str = "weights"  #: weights | torch_hub


@dataclass
class Manifest:
    path: Path
    weights: dict[str, Entry] = field(default_factory=dict)
    archives: dict[str, Entry] = field(default_factory=dict)

    def get(self, name: str) -> Entry:
        if name not in self.weights:
            raise ConfigError(f"unknown weights '{name}' (known: {', '.join(self.weights)}; see {self.path})")
        return self.weights[name]


def default_manifest_path() -> Path:
    """``$SYNBOOST_MANIFEST``, else ``weights/manifest.yaml`` in the working directory, else the repository's."""
    env = os.environ.get("SYNBOOST_MANIFEST")
    if env:
        return Path(env)
    here = Path("weights/manifest.yaml")
    return here if here.is_file() else Path(__file__).resolve().parents[2] / "weights" / "manifest.yaml"


def load_manifest(path: str | os.PathLike | None = None) -> Manifest:
    p = Path(path) if path else default_manifest_path()
    if not p.is_file():
        raise ConfigError(f"{p}: weights manifest not found (set SYNBOOST_MANIFEST or run from the repository)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
        weights = {k: Entry(name=k, **v) for k, v in (data.get("weights") or {}).items()}
        archives = {k: Entry(name=k, **v) for k, v in (data.get("archives") or {}).items()}
    except (yaml.YAMLError, TypeError) as e:
        raise ConfigError(f"{p}: not a valid weights manifest ({str(e).splitlines()[0]})") from None
    for e in weights.values():
        if e.archive and e.archive not in archives:
            raise ConfigError(f"{p}: '{e.name}' names the unknown archive '{e.archive}'")
    return Manifest(p, weights, archives)


def weights_dir() -> Path:
    """Where raw and imported checkpoints live: ``$SYNBOOST_WEIGHTS``, default ``./weights``."""
    return Path(os.environ.get("SYNBOOST_WEIGHTS", "weights"))


def raw_path(e: Entry) -> Path:
    """Where the entry's original file is expected."""
    if e.location == "torch_hub":
        from synboost.hub.pretrained import hub_dir

        return hub_dir() / e.file
    return weights_dir() / e.file


def imported_path(name: str) -> Path:
    """Where ``synboost weights import NAME`` writes the converted checkpoint."""
    return weights_dir() / f"{name}.safetensors"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def check_sha(e: Entry, path: Path) -> tuple[bool | None, str]:
    """(ok, sha256): ok is None when the manifest knows no checksum for the entry."""
    digest = sha256_of(path)
    if e.sha256:
        return digest == e.sha256.lower(), digest
    if e.sha256_prefix:
        return digest.startswith(e.sha256_prefix.lower()), digest
    return None, digest


def status(m: Manifest) -> list[dict[str, Any]]:
    """One row per entry: where its file is expected, whether it is there, whether it was imported."""
    rows = []
    for e in m.weights.values():
        p = raw_path(e)
        rows.append({"name": e.name, "kind": e.kind, "file": str(p), "present": p.is_file(),
                     "imported": imported_path(e.name).is_file() if e.importer else None,
                     "importer": e.importer, "description": e.description})
    return rows


def verify(m: Manifest, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Checksums of the present files of ``names`` (default: every entry)."""
    out = []
    for name in names or list(m.weights):
        e = m.get(name)
        p = raw_path(e)
        if not p.is_file():
            out.append({"name": name, "file": str(p), "state": "missing"})
            continue
        ok, digest = check_sha(e, p)
        state = {True: "ok", False: "MISMATCH", None: "no checksum known"}[ok]
        out.append({"name": name, "file": str(p), "state": state, "sha256": digest, "bytes": p.stat().st_size})
    return out


# ---------------------------------------------------------------------------------------------- download


def fetch(url: str, dest: Path, sha256: str | None = None, sha256_prefix: str | None = None,
          timeout: float = 30.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest``, resuming a ``dest.part`` left by an interrupted run (HTTP Range), checking
    the checksum when one is known; the file appears at ``dest`` only when complete and verified."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the partial file is already complete
            resp = None
        else:
            raise CheckpointError(f"{url}: download failed (HTTP {e.code} {e.reason}); put the file at {dest} "
                                  "by hand") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise CheckpointError(f"{url}: cannot be reached ({reason}); put the file at {dest} by hand") from None
    if resp is not None:
        with resp:
            resumed = have and resp.status == 206
            mode = "ab" if resumed else "wb"
            total = resp.headers.get("Content-Length")
            total = int(total) + (have if resumed else 0) if total else None
            if "text/html" in (resp.headers.get("Content-Type") or ""):
                raise CheckpointError(f"{url}: answered with a web page, not the file (a confirmation page?); "
                                      f"download it in a browser and put it at {dest}")
            with open(part, mode) as f, tqdm(total=total, initial=have if resumed else 0, unit="B", unit_scale=True,
                                             desc=dest.name, disable=not progress, leave=False) as bar:
                for block in iter(lambda: resp.read(CHUNK), b""):
                    f.write(block)
                    bar.update(len(block))
    digest = sha256_of(part)
    want = (sha256 or "").lower()
    if (want and digest != want) or (sha256_prefix and not digest.startswith(sha256_prefix.lower())):
        bad = dest.with_name(dest.name + ".corrupt")
        part.replace(bad)
        raise CheckpointError(f"{url}: checksum mismatch (got sha256 {digest[:16]}..., expected "
                              f"{(want or sha256_prefix)[:16]}...); the file was moved to {bad}; try again")
    part.replace(dest)
    return dest


def _extract(archive: Path, member: str, dest: Path) -> Path:
    """Copy one member of a tar archive to ``dest`` (members are looked up by name; nothing else is written)."""
    try:
        with tarfile.open(archive) as tar:
            try:
                info = tar.getmember(member)
            except KeyError:
                raise CheckpointError(f"{archive}: has no member {member}") from None
            src = tar.extractfile(info)
            if src is None:
                raise CheckpointError(f"{archive}: {member} is not a regular file")
            tmp = dest.with_name(dest.name + ".part")
            with src, open(tmp, "wb") as f:
                shutil.copyfileobj(src, f, CHUNK)
            tmp.replace(dest)
    except tarfile.TarError as e:
        raise CheckpointError(f"{archive}: not a readable tar archive ({e})") from None
    return dest


def download(m: Manifest, name: str, url: str | None = None, progress: bool = True) -> Path:
    """Fetch an entry's file (or its archive, then the member) to where :func:`raw_path` expects it."""
    e = m.get(name)
    dest = raw_path(e)
    if e.archive and not url:
        a = m.archives[e.archive]
        tar = weights_dir() / a.file
        if not tar.is_file():
            fetch(a.url, tar, a.sha256, a.sha256_prefix, progress=progress)
        _extract(tar, e.member, dest)
    else:
        if not (url or e.url):
            raise CheckpointError(f"'{name}' has no download URL; put {e.file} at {dest}")
        fetch(url or e.url, dest, e.sha256, e.sha256_prefix, progress=progress)
    ok, digest = check_sha(e, dest)
    if ok is False:
        raise CheckpointError(f"{dest}: checksum mismatch for '{name}' (sha256 {digest[:16]}...)")
    return dest


# ------------------------------------------------------------------------------------------------ import


def import_weights(m: Manifest, name: str, importers: Mapping[str, Callable[..., Path]],
                   src: str | os.PathLike | None = None, dst: str | os.PathLike | None = None,
                   companion_src: str | os.PathLike | None = None) -> Path:
    """Convert an entry's official file (``src``, default where the manifest expects it) into our format at
    ``dst`` (default ``<weights>/<name>.safetensors``) with ``importers[entry.importer]``
    (:data:`synboost.importers.IMPORTERS`: passed in, since the importers build models and ``hub/`` does not)."""
    e = m.get(name)
    if not e.importer:
        raise ConfigError(f"'{name}' needs no import (it is read as it is)")
    src_p = Path(src) if src else raw_path(e)
    if not src_p.is_file():
        raise CheckpointError(f"{src_p}: not found; put {e.file} there, or run `synboost weights download {name}`")
    out = Path(dst) if dst else imported_path(name)
    if e.importer not in importers:
        raise ConfigError(f"'{name}': unknown importer '{e.importer}' (known: {', '.join(sorted(importers))})")
    fn = importers[e.importer]
    if e.importer == "ccfpse":
        comp = Path(companion_src) if companion_src else raw_path(m.get(e.companion)) if e.companion else None
        return fn(src_p, comp if comp is not None and comp.is_file() else None, out)
    return fn(src_p, out)


def resolve(name_or_path: str) -> str:
    """A pipeline component given by manifest name -> its imported checkpoint (paths pass through)."""
    if not name_or_path or Path(name_or_path).suffix or "/" in name_or_path:
        return name_or_path
    try:
        m = load_manifest()
    except ConfigError:
        return name_or_path
    if name_or_path not in m.weights:
        return name_or_path
    p = imported_path(name_or_path)
    if not p.is_file():
        raise CheckpointError(f"'{name_or_path}' is not imported yet: run `synboost weights import {name_or_path}` "
                              f"(expects {raw_path(m.weights[name_or_path])}); it writes {p}")
    return str(p)
