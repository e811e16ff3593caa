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
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable, Mapping

import yaml

from synboost.errors import CheckpointError, ConfigError

CHUNK = 1 << 20


@dataclass
class Entry:
    """One manifest entry: a checkpoint file (or an archive) and how to get, check and import it."""

    name: str
    file: str  #: path inside the weights folder (or the torch hub folder): relative, no '..'
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
    """A parsed manifest: its file, the weights entries and the archives holding some of them."""

    path: Path
    weights: dict[str, Entry] = field(default_factory=dict)
    archives: dict[str, Entry] = field(default_factory=dict)

    def get(self, name: str) -> Entry:
        """The entry ``name``; an unknown name is a ConfigError listing the known ones."""
        if name not in self.weights:
            raise ConfigError(f"unknown weights '{name}' (known: {', '.join(self.weights)}; see {self.path})")
        return self.weights[name]


LOCATIONS = ("weights", "torch_hub")


def repository_manifest() -> Path:
    """The manifest shipped with the repository (``weights/manifest.yaml`` beside the package)."""
    return Path(__file__).resolve().parents[2] / "weights" / "manifest.yaml"


def default_manifest_path() -> Path:
    """``$SYNBOOST_MANIFEST``, else the repository's ``weights/manifest.yaml``. A manifest in the working
    directory is read only when asked for (``--manifest FILE``): it could point names at other files."""
    env = os.environ.get("SYNBOOST_MANIFEST")
    return Path(env) if env else repository_manifest()


def _entry(p: Path, section: str, name: str, fields: Any) -> Entry:
    if not isinstance(fields, dict):
        raise ConfigError(f"{p}: {section} entry '{name}' must be a mapping of fields (file, url, sha256, ...)")
    try:
        e = Entry(name=str(name), **fields)
    except TypeError as err:
        known = ", ".join(f for f in Entry.__dataclass_fields__ if f != "name")
        raise ConfigError(f"{p}: {section} entry '{name}': {str(err).split(') ', 1)[-1]} (fields: {known})") \
            from None
    file = PurePosixPath(str(e.file or "").replace("\\", "/"))
    if not file.parts or file.is_absolute() or PureWindowsPath(str(e.file)).anchor or ".." in file.parts \
            or str(e.file).startswith("~"):
        raise ConfigError(f"{p}: {section} entry '{name}': file '{e.file}' must be a path inside the weights folder "
                          "(relative, without '..'); put the file there and name it relative to it")
    if e.location not in LOCATIONS:
        raise ConfigError(f"{p}: {section} entry '{name}': location '{e.location}' is not one of "
                          f"{', '.join(LOCATIONS)}")
    return e


def load_manifest(path: str | os.PathLike | None = None) -> Manifest:
    """Read and check a manifest (default :func:`default_manifest_path`): every file stays inside its folder,
    archives and companions name known entries."""
    p = Path(path) if path else default_manifest_path()
    if not p.is_file():
        raise ConfigError(f"{p}: weights manifest not found (pass --manifest FILE or set SYNBOOST_MANIFEST)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not a valid weights manifest ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k) or {}, dict) for k in ("weights", "archives")):
        raise ConfigError(f"{p}: not a valid weights manifest (expected the mappings 'weights:' and 'archives:')")
    weights = {str(k): _entry(p, "weights", k, v) for k, v in (data.get("weights") or {}).items()}
    archives = {str(k): _entry(p, "archives", k, v) for k, v in (data.get("archives") or {}).items()}
    for e in weights.values():
        if e.archive and e.archive not in archives:
            raise ConfigError(f"{p}: '{e.name}' names the unknown archive '{e.archive}'")
        if e.archive and not e.member:
            raise ConfigError(f"{p}: '{e.name}' names the archive '{e.archive}' but no member (its path in it)")
        if e.companion and e.companion not in weights:
            raise ConfigError(f"{p}: '{e.name}' names the unknown companion '{e.companion}'")
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
    """The file's sha256 (hex), read in 1 MiB blocks."""
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
    """Checksums of the present files of ``names`` (default: every entry): state ok, MISMATCH, missing, or
    unverified (the manifest knows no checksum for the file)."""
    out = []
    for name in names or list(m.weights):
        e = m.get(name)
        p = raw_path(e)
        if not p.is_file():
            out.append({"name": name, "file": str(p), "state": "missing"})
            continue
        ok, digest = check_sha(e, p)
        state = {True: "ok", False: "MISMATCH", None: "unverified"}[ok]
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
    """Copy one member of a tar archive to ``dest`` (members are looked up by name; nothing else is written).
    A member that is a link (symbolic or hard) or not a regular file is refused: a release holds plain files."""
    try:
        with tarfile.open(archive) as tar:
            try:
                info = tar.getmember(member)
            except KeyError:
                raise CheckpointError(f"{archive}: has no member {member}; is it the expected release?") from None
            if info.issym() or info.islnk():
                kind = "a symbolic link" if info.issym() else "a hard link"
                raise CheckpointError(f"{archive}: member {member} is {kind} (to '{info.linkname}'), not a file; "
                                      "the archive is not the expected release: download it again")
            if not info.isfile():
                raise CheckpointError(f"{archive}: member {member} is not a regular file (a folder or device); "
                                      "is it the expected release?")
            src = tar.extractfile(info)
            if src is None:
                raise CheckpointError(f"{archive}: {member} is not a regular file")
            tmp = dest.with_name(dest.name + ".part")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with src, open(tmp, "wb") as f:
                shutil.copyfileobj(src, f, CHUNK)
            tmp.replace(dest)
    except (tarfile.TarError, EOFError) as e:
        raise CheckpointError(f"{archive}: not a readable tar archive ({e}); download it again") from None
    return dest


def download(m: Manifest, name: str, url: str | None = None, progress: bool = True) -> Path:
    """Fetch an entry's file (or its archive, then the member) to where :func:`raw_path` expects it."""
    return download_checked(m, name, url, progress)["file"]


def download_checked(m: Manifest, name: str, url: str | None = None, progress: bool = True) -> dict[str, Any]:
    """:func:`download`, and what its checksum says: ``{"name", "file", "sha256", "state"}`` with state ``ok``
    or ``unverified`` (the manifest knows no checksum for it); a mismatch is a CheckpointError."""
    e = m.get(name)
    dest = raw_path(e)
    if e.archive and not url:
        a = m.archives[e.archive]
        tar = weights_dir() / a.file
        if not tar.is_file():
            if not a.url:
                raise CheckpointError(f"archive '{a.name}' has no download URL; put {a.file} at {tar}")
            fetch(a.url, tar, a.sha256, a.sha256_prefix, progress=progress)
        _extract(tar, e.member, dest)
    else:
        if not (url or e.url):
            raise CheckpointError(f"'{name}' has no download URL; put {e.file} at {dest}")
        fetch(url or e.url, dest, e.sha256, e.sha256_prefix, progress=progress)
    ok, digest = check_sha(e, dest)
    if ok is False:
        raise CheckpointError(f"{dest}: checksum mismatch for '{name}' (sha256 {digest[:16]}...)")
    return {"name": name, "file": dest, "sha256": digest, "state": "ok" if ok else "unverified"}


# ------------------------------------------------------------------------------------------------ import


def _companion(m: Manifest, e: Entry, src: Path, given: str | os.PathLike | None, wanted: bool) -> Path | None:
    """The file imported together with ``e`` (the CC-FPSE generator's style encoder): ``given``, else the
    companion entry's file beside ``src``, else in the weights folder. Missing, it stops with one line saying
    where it is expected, unless ``wanted`` is False (``--no-encoder``)."""
    if given is not None:
        if not wanted:
            raise ConfigError("--encoder and --no-encoder contradict each other: give one")
        p = Path(given)
        if not p.is_file():
            raise CheckpointError(f"{p}: encoder file not found (--encoder)")
        return p
    if not wanted or not e.companion:
        return None
    comp = m.get(e.companion)
    places = list(dict.fromkeys([src.parent / Path(comp.file).name, raw_path(comp)]))
    for p in places:
        if p.is_file():
            return p
    where = " or ".join(str(p) for p in places)
    raise CheckpointError(f"'{e.name}': the encoder file {Path(comp.file).name} ('{comp.name}') is not at {where}; "
                          "put it there or pass --encoder PATH (--no-encoder imports the generator without it: "
                          "it then decodes z = 0)")


def import_weights(m: Manifest, name: str, importers: Mapping[str, Callable[..., Path]],
                   src: str | os.PathLike | None = None, dst: str | os.PathLike | None = None,
                   companion_src: str | os.PathLike | None = None, companion: bool = True) -> Path:
    """Convert an entry's official file (``src``, default where the manifest expects it) into our format at
    ``dst`` (default ``<weights>/<name>.safetensors``) with ``importers[entry.importer]``
    (:data:`synboost.importers.IMPORTERS`: passed in, since the importers build models and ``hub/`` does not).

    An entry with a ``companion`` (the CC-FPSE generator and its style encoder ``latest_net_E.pth``) takes the
    companion file ``companion_src``, else finds it beside ``src`` or in the weights folder; missing, it stops
    with one line saying where it is expected, unless ``companion=False`` (``--no-encoder``)."""
    e = m.get(name)
    if not e.importer:
        owner = next((o.name for o in m.weights.values() if o.companion == name), None)
        if owner:
            raise ConfigError(f"'{name}' is imported together with '{owner}': run `synboost weights import {owner}`")
        raise ConfigError(f"'{name}' needs no import (it is read as it is)")
    if e.importer != "ccfpse" and (companion_src is not None or not companion):
        raise ConfigError(f"--encoder / --no-encoder apply to the CC-FPSE generator only, not to '{name}'")
    src_p = Path(src) if src else raw_path(e)
    if not src_p.is_file():
        raise CheckpointError(f"{src_p}: not found; put {e.file} there, or run `synboost weights download {name}`")
    out = Path(dst) if dst else imported_path(name)
    if e.importer not in importers:
        raise ConfigError(f"'{name}': unknown importer '{e.importer}' (known: {', '.join(sorted(importers))})")
    fn = importers[e.importer]
    if e.importer == "ccfpse":
        return fn(src_p, _companion(m, e, src_p, companion_src, companion), out)
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
