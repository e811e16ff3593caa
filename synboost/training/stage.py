"""The one ending of every ``train_<stage>``: run the task's engine and let its ``on_fit_end`` hook write the
stage's products (with :func:`publish_run` for the stages whose product is the best checkpoint itself)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from synboost.data.io import atomic_path, write_json
from synboost.training.engine import Engine
from synboost.training.task import Task


def run_stage(task: Task, cfg: Any, resume: bool = False, progress: bool = True, **engine: Any) -> dict:
    """Train ``task`` with ``cfg.train`` into ``cfg.out`` (the resolved ``cfg`` saved beside the outputs) and
    return the run's summary: rank 0 of a finished run has also written the stage's products (the task's
    ``on_fit_end``). ``engine``: more keywords of :class:`Engine`; ``cpu_amp`` defaults to ``cfg.train.amp_cpu``
    (bf16 autocast on a CPU with bf16 units, when ``cfg.train.amp``)."""
    engine.setdefault("cpu_amp", bool(getattr(cfg.train, "amp_cpu", False)))
    return Engine(task, cfg.train, cfg.out, config=cfg, progress=progress, **engine).fit(resume=resume)


def publish_run(summary: dict, out: str | os.PathLike, product: str, field: str, **pipeline) -> Path:
    """End a finished run: copy its best checkpoint (``summary["best"]``) to ``out/product`` atomically, write
    ``out/pipeline.yaml`` with the ``pipeline`` fields and the new file as its ``field`` (e.g. ``pebal``), and
    rewrite ``out/summary.json`` with both paths (the file under ``summary[field]``). Returns the file."""
    from synboost.detectors.detector import write_pipeline_file

    out = Path(out)
    path = out / product
    with atomic_path(path) as tmp:
        shutil.copyfile(summary["best"], tmp)
    summary[field] = str(path)
    summary["pipeline"] = str(write_pipeline_file(out / "pipeline.yaml", **pipeline, **{field: str(path.resolve())}))
    write_json(out / "summary.json", summary)
    return path
