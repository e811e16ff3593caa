"""The face: ``synboost <verb> ...``. Each verb parses its arguments and makes one call; no logic lives here.

One module per verb group (:mod:`~synboost.cli.data`, :mod:`~synboost.cli.train`, :mod:`~synboost.cli.infer`,
:mod:`~synboost.cli.evaluate`, :mod:`~synboost.cli.demo`, :mod:`~synboost.cli.weights`,
:mod:`~synboost.cli.pipeline`, :mod:`~synboost.cli.bench`), each with ``register(subparsers)`` and ``run(args)``.

Errors a user can cause print one line (``error: ...``) and exit with status 2; Ctrl-C exits with 130 and says
whether (and how) the verb resumes. The exit statuses are defined here, once.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from synboost.errors import SynboostError

#: every input was processed
EXIT_OK = 0
#: a user error (a missing file, a wrong key, a wrong flag): one line on stderr
EXIT_USER_ERROR = 2
#: finished, with skips: some inputs were skipped or ignored (listed on the console, all of them in the report)
EXIT_SKIPS = 3
#: interrupted (Ctrl-C)
EXIT_INTERRUPTED = 130

EPILOG = f"""\
exit status:
  {EXIT_OK:<4} finished; every input was processed
  {EXIT_USER_ERROR:<4} user error: one line on stderr naming the file or key and the fix (also a wrong flag)
  {EXIT_SKIPS:<4} finished, with skips (infer, eval, resynthesize): some inputs were skipped or ignored; the first
       10 are listed with their reasons, all of them in the run's report
  {EXIT_INTERRUPTED:<4} interrupted (Ctrl-C): the message says whether running the same command again continues
       (train, infer, demo, ablate, compare --config resume by default; --fresh starts over)

'synboost <verb> --help' describes a verb."""

#: the verb-group modules, in the order of `synboost --help`
GROUPS = ("data", "train", "infer", "evaluate", "demo", "weights", "pipeline", "export", "bench", "plot")


def build_parser() -> argparse.ArgumentParser:
    """The ``synboost`` argument parser: every verb group registers its verbs (hidden aliases are not listed)."""
    import importlib

    p = argparse.ArgumentParser(prog="synboost", description="Pixel-wise anomaly segmentation of driving scenes.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)
    for group in GROUPS:
        importlib.import_module(f"synboost.cli.{group}").register(sub)
    visible = [name for name, parser in sub.choices.items() if not parser.get_default("deprecated")]
    sub.metavar = "{" + ",".join(visible) + "}"
    return p


def _interrupt_message(args: argparse.Namespace) -> str:
    note = getattr(args, "interrupt", None)
    note = note(args) if callable(note) else note
    return note or "interrupted; this verb does not resume: run it again to start over"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``synboost ARGV``; returns the exit status (see :data:`EPILOG`): 0 ok, 2 user error, 3 finished with
    skips, 130 interrupted."""
    args = build_parser().parse_args(argv)
    from synboost.runtime import tune_malloc

    tune_malloc()  # large activations reuse freed memory instead of new page-faulted mmaps (see runtime.tune_malloc)
    deprecated = args.deprecated if hasattr(args, "deprecated") else None
    if deprecated:
        print(f"note: {deprecated}", file=sys.stderr)
    try:
        status = args.run(args)
    except SynboostError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(_interrupt_message(args), file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if status is None else int(status)


__all__ = ["EXIT_INTERRUPTED", "EXIT_OK", "EXIT_SKIPS", "EXIT_USER_ERROR", "build_parser", "main"]
