"""Sharded folder inference under torchrun with 2 gloo processes equals one process, file by file.

Batch size 1, so that both runs do exactly the same arithmetic per image: with larger batches a shard groups
images differently, and the float results may differ in the last bits (then a heatmap pixel can change by one
level), which says nothing about sharding."""
import json
import os
import subprocess
import sys

import pytest
import torch

from synboost.config import SegModelConfig
from synboost.detectors.components import save_component
from synboost.detectors.detector import write_pipeline_file
from synboost.models import create_model


def _infer(argv, env, nproc=None, port=29541):
    prefix = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
              str(port)] if nproc else [sys.executable]
    r = subprocess.run([*prefix, "-m", "synboost.cli", "infer", *argv], capture_output=True, text=True, env=env,
                       timeout=300)
    # the folder holds bad files: a single process exits 3 ("finished, with skips"); under torchrun rank 0 exits 3,
    # which torchrun reports as a failed child (exit 1) with that exit code
    if nproc:
        assert r.returncode == 1 and "exitcode  : 3" in r.stderr, r.stderr[-2000:]
    else:
        assert r.returncode == 3, r.stderr[-2000:]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_gloo_processes_write_what_one_process_writes(tmp_path):
    from test_inference import files_under, make_folder

    torch.manual_seed(0)
    kw = dict(backbone="tiny", aspp_dim=16, decoder_dim=16, width=8)
    seg = create_model("deeplabv3plus", **kw)
    save_component(tmp_path / "seg.safetensors", seg, "segmenter", SegModelConfig(pretrained=False, **kw))
    pipe = write_pipeline_file(tmp_path / "p.yaml", method="entropy", segmenter=str(tmp_path / "seg.safetensors"),
                               device="cpu", batch_size=1)
    src = make_folder(tmp_path / "in", sizes=[(32, 48)] * 5 + [(40, 40)] * 2, bad=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["--pipeline", str(pipe), "--images", str(src), "--save", "npy,heatmap,overlay,segmentation"]
    _infer([*args, "--out", str(tmp_path / "one")], env)
    _infer([*args, "--out", str(tmp_path / "two")], env, nproc=2)
    one, two = tmp_path / "one", tmp_path / "two"
    ours = [f for f in files_under(one) if not f.startswith("report")]
    assert ours and ours == [f for f in files_under(two) if not f.startswith("report")]
    for f in ours:
        assert (one / f).read_bytes() == (two / f).read_bytes(), f
    a, b = json.loads((one / "report.json").read_text()), json.loads((two / "report.json").read_text())
    assert b["world"] == 2 and b["finished"] and b["missing_ranks"] == []
    assert b["done"] == a["done"] and len(b["done"]) == 7
    assert [s["file"] for s in b["skipped"]] == [s["file"] for s in a["skipped"]] and len(b["skipped"]) == 3
