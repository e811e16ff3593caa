"""``synboost weights list | verify | download NAME | import NAME``: thin calls into :mod:`synboost.hub.registry`
(the manifest: ``weights/manifest.yaml`` of the repository, ``$SYNBOOST_MANIFEST``, or ``--manifest FILE``)."""
from __future__ import annotations

import argparse

from synboost.cli.common import no_resume
from synboost.errors import ConfigError, SynboostError


def _interrupt(a: argparse.Namespace) -> str:
    if a.what == "download":
        return ("interrupted; run the same command again to continue the download where it stopped "
                "(the partial file is kept as <file>.part)")
    return no_resume(f"weights {a.what}")


def register(sub) -> None:
    """``weights``."""
    wt = sub.add_parser("weights", help="known checkpoints: list, verify, download, import official files")
    wt.add_argument("what", choices=["list", "verify", "download", "import"])
    wt.add_argument("names", nargs="*", help="manifest names (weights/manifest.yaml)")
    wt.add_argument("--manifest", help="another manifest file (a manifest in the working directory is read only "
                                       "when named here)")
    wt.add_argument("--url", help="download: another URL for the file")
    wt.add_argument("--src", help="import: the official file, if not where the manifest expects it")
    wt.add_argument("--encoder", metavar="PATH", help="import synboost-generator: the CC-FPSE style encoder "
                                                      "latest_net_E.pth (default: beside --src, else in the "
                                                      "weights folder)")
    wt.add_argument("--no-encoder", action="store_true", help="import synboost-generator without its encoder "
                                                              "(it then decodes z = 0, the prior's mode)")
    wt.add_argument("--out", help="import: output file (default <weights>/<name>.safetensors)")
    wt.set_defaults(run=run, interrupt=_interrupt)


def run(a: argparse.Namespace) -> None:
    """One registry call per name."""
    from synboost.hub import registry

    if a.what in ("download", "import") and not a.names:
        raise ConfigError(f"name the weights to {a.what}, e.g. `synboost weights {a.what} synboost-segmenter` "
                          "(`synboost weights list` shows the names)")
    if len(a.names) > 1 and (a.src or a.out or a.url or a.encoder):
        raise ConfigError("--src / --out / --url / --encoder name one file: give one weights name with them")
    m = registry.load_manifest(a.manifest)
    if a.what == "list":
        print(f"weights folder: {registry.weights_dir()} (SYNBOOST_WEIGHTS); manifest: {m.path}")
        for r in registry.status(m):
            state = "present" if r["present"] else "missing"
            imp = "" if r["imported"] is None else (", imported" if r["imported"] else ", not imported")
            print(f"  {r['name']:<28} {state}{imp:<15} {r['file']}")
    elif a.what == "verify":
        rows = registry.verify(m, a.names or None)
        for r in rows:
            extra = f" sha256 {r['sha256']} ({r['bytes']} bytes)" if "sha256" in r else ""
            print(f"  {r['name']:<28} {r['state']:<12} {r['file']}{extra}")
        if any(r["state"] == "unverified" for r in rows):
            print(f"unverified: {m.path} knows no checksum for them; pin the sha256 shown (sha256: ...) once you "
                  "trust the file")
        if any(r["state"] == "MISMATCH" for r in rows):
            raise SynboostError("checksum mismatch: the file is corrupt or another version; download it again")
    elif a.what == "download":
        for name in a.names:
            r = registry.download_checked(m, name, a.url)
            note = (f" (unverified: {m.path} has no checksum for '{name}'; its sha256 is {r['sha256']})"
                    if r["state"] == "unverified" else " (checksum ok)")
            print(f"{name}: {r['file']}{note}")
    else:
        from synboost.importers import IMPORTERS

        for name in a.names:
            out = registry.import_weights(m, name, IMPORTERS, a.src, a.out, companion_src=a.encoder,
                                          companion=not a.no_encoder)
            print(f"{name}: {out} (name it in a pipeline file as '{name}')")
