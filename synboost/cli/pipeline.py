"""``synboost pipeline upgrade FILE [--out FILE]`` (a flat 0.1 pipeline file -> the layout detector / components /
score / defaults) and ``synboost pipeline show FILE`` (the resolved config and where its components are)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from synboost.cli.common import add_set, no_resume, visible_metavar

#: component values that name no file
_KEYWORDS = ("", "imagenet", "random")


def register(sub) -> None:
    """``pipeline upgrade`` and ``pipeline show``."""
    p = sub.add_parser("pipeline", help="pipeline files: upgrade a 0.1 file, show what a file resolves to")
    what = p.add_subparsers(dest="what", required=True)
    u = what.add_parser("upgrade", help="rewrite a flat 0.1 pipeline file in the layout detector / components / "
                                        "score / defaults")
    u.add_argument("file", help="the pipeline file")
    u.add_argument("--out", help="write here instead of rewriting FILE (component paths are kept as written: "
                                 "relative ones stay relative to FILE's folder)")
    s = what.add_parser("show", help="print the resolved config and the absolute paths of its components")
    s.add_argument("file", help="the pipeline file")
    add_set(s, "a pipeline value, e.g. --set score.method=energy (repeatable)")
    for parser in (u, s):
        parser.set_defaults(run=run, interrupt=no_resume(f"pipeline {parser.prog.split()[-1]}"))
    what.metavar = visible_metavar(what)


def run(a: argparse.Namespace) -> None:
    """``upgrade``: one call to ``upgrade_pipeline_file``; ``show``: ``read_pipeline`` + ``resolve_component``."""
    from synboost.detectors.detector import read_pipeline, resolve_component, upgrade_pipeline_file

    if a.what == "upgrade":
        out = upgrade_pipeline_file(a.file, a.out)
        print(f"wrote {out} (detector, components, score, defaults)")
        return
    import dataclasses

    import yaml

    from synboost.errors import CheckpointError

    cfg = read_pipeline(a.file, a.overrides)
    base = Path(a.file).resolve().parent
    print(f"# {a.file}, resolved")
    print(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False).rstrip())
    print(f"# components, resolved against {base}")
    for name, value in dataclasses.asdict(cfg.components).items():
        if value in _KEYWORDS:
            print(f"#   {name:<14} {value or '-'}")
            continue
        try:
            path = os.path.abspath(resolve_component(value, base))
        except CheckpointError as e:
            print(f"#   {name:<14} {value}: {e}")
            continue
        print(f"#   {name:<14} {path}" + ("" if Path(path).is_file() else "  (missing)"))
