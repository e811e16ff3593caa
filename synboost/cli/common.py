"""What the verb groups share: argument types, the ``--config`` / ``--set`` pair, the one resume convention
(resume by default, ``--fresh`` starts over; the old flags as hidden aliases), hidden verb aliases, the Ctrl-C
messages and the listing of skipped / ignored inputs behind exit status 3."""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any, Mapping, Sequence

from synboost.cli import EXIT_OK, EXIT_SKIPS

#: the Ctrl-C message of a verb that resumes by default
RESUMES = "interrupted; run the same command again to continue where it stopped (--fresh starts over)"

#: how many skipped / ignored inputs the console lists (all of them are in the report)
SHOWN = 10


def no_resume(verb: str, why: str = "") -> str:
    """The Ctrl-C message of a verb that cannot resume: it must not promise it."""
    return f"interrupted; `synboost {verb}` does not resume{why}: run it again to start over"


def size(text: str) -> tuple[int, int]:
    """``HxW`` (e.g. ``256x512``) -> (H, W), for argparse."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        return h, w
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 256x512; got '{text}'") from None


def add_config(p: argparse.ArgumentParser, required: bool = False, help: str = "YAML config (see configs/)") -> None:
    """``--config FILE`` and the repeatable ``--set KEY=VALUE``."""
    p.add_argument("--config", required=required, help=help)
    add_set(p, "override a config value, e.g. --set train.lr=1e-4 (repeatable)")


def add_set(p: argparse.ArgumentParser, help: str = "override a value (repeatable)") -> None:
    """The repeatable ``--set KEY=VALUE`` (into ``args.overrides``)."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


class _DeprecatedFlag(argparse.Action):
    """A hidden old flag: prints one note line when used and sets ``dest`` to ``const``."""

    def __init__(self, option_strings, dest, note: str = "", const: Any = None, **kw):
        super().__init__(option_strings, dest, nargs=0, const=const, default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS, **kw)
        self.note = note

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"note: {self.note}", file=sys.stderr)
        if self.const is not None:
            setattr(namespace, self.dest, self.const)


def add_fresh(p: argparse.ArgumentParser, what: str, verb: str, old: str = "") -> None:
    """``--fresh`` (``args.fresh``; resuming is the default) and, hidden, the verb's old flag: ``--resume``
    (now the default) or ``--no-resume`` (= ``--fresh``)."""
    p.add_argument("--fresh", action="store_true", help=f"start over: {what} (default: resume)")
    if old == "--resume":
        p.add_argument("--resume", action=_DeprecatedFlag, dest="_old_resume",
                       note=f"--resume is now the default for `synboost {verb}` (--fresh starts over)")
    elif old == "--no-resume":
        p.add_argument("--no-resume", action=_DeprecatedFlag, dest="fresh", const=True,
                       note=f"--no-resume is deprecated for `synboost {verb}`: use --fresh")
    elif old:
        raise ValueError(f"unknown old flag {old}")


def alias(sub, name: str, old: str, new: str) -> argparse.ArgumentParser:
    """A hidden verb ``name`` (not listed in --help): the command ``old``, now ``new``; it prints one note line."""
    p = sub.add_parser(name)
    p.set_defaults(deprecated=f"`{old}` is now `{new}` (the old name still works)")
    return p


def visible_metavar(sub) -> str:
    """``{a,b,c}``: the verbs of a subparsers action without the hidden aliases."""
    return "{" + ",".join(n for n, p in sub.choices.items() if not p.get_default("deprecated")) + "}"


def describe(item: Mapping[str, Any]) -> str:
    """One skipped / ignored input as one line: its file and the reason (the file once)."""
    reason = " ".join(str(item.get("reason", "")).split())
    where = item.get("file") or item.get("path") or item.get("name")
    if where and str(where) not in reason:
        return f"{where}: {reason}" if reason else str(where)
    return reason or str(where or item)


def print_skips(items: Sequence[tuple[str, Mapping[str, Any], str | None]], shown: int = SHOWN) -> int:
    """List ``(kind, item, report path)`` triples (kind: skipped | ignored): a count line, the first ``shown``
    with their reasons, then ``(+N more, see <report>)``. Returns the exit status: 0 without items, else 3."""
    if not items:
        return EXIT_OK
    counts = Counter(kind for kind, _, _ in items)
    print("finished, with skips: " + ", ".join(f"{n} {kind}" for kind, n in counts.items())
          + f" (exit status {EXIT_SKIPS})")
    for kind, item, _ in items[:shown]:
        print(f"  {kind}: {describe(item)}")
    rest = items[shown:]
    if rest:
        reports = list(dict.fromkeys(r for _, _, r in rest if r))
        where = f"see {', '.join(reports)}" if reports else "pass --out to keep the full list"
        print(f"  (+{len(rest)} more, {where})")
    return EXIT_SKIPS


def skips_of(report: Mapping[str, Any], path: str | None) -> list[tuple[str, Mapping[str, Any], str | None]]:
    """The skipped and ignored inputs of one report (``skipped`` / ``ignored`` lists), with its path."""
    return ([("skipped", s, path) for s in report.get("skipped", [])]
            + [("ignored", s, path) for s in report.get("ignored", [])])
