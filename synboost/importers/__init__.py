"""Importers: the official SynBoost and PEBAL checkpoints -> our self-describing safetensors checkpoints.

They sit above ``models/`` (each builds the network it converts for and loads it strictly) and below the jobs;
``hub/`` keeps the files (manifest, download, checksums) and receives the importers from its caller, so that
nothing in ``hub/`` imports a model. :data:`IMPORTERS` maps a manifest entry's ``importer`` to its function.
"""
from __future__ import annotations

from synboost.importers.ccfpse import import_ccfpse
from synboost.importers.official import IMPORTERS as OFFICIAL_IMPORTERS

#: manifest ``importer`` -> function; ``ccfpse`` takes (generator file, encoder file or None, dst), the others
#: (src, dst)
IMPORTERS = {**OFFICIAL_IMPORTERS, "ccfpse": import_ccfpse}

__all__ = ["IMPORTERS", "OFFICIAL_IMPORTERS", "import_ccfpse"]
