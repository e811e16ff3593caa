#!/usr/bin/env bash
# Every CUDA figure the open issues still lack, in one run on a GPU machine (device sessions are few: one call).
#   bash benchmarks/cuda_all.sh            # after `make install`; JSON and logs under $OUT (default benchmarks/results)
# 1. tests/test_cuda.py: the detector on the GPU against the CPU (fp32, bf16, channels_last), AMP training;
# 2. the segmenter table (eager / channels_last / torch.compile, fp32 / bf16, batch 1 and 8, ResNet-50/101);
# 3. resynthesis images/s (SPADE at 256x512 and 512x1024, the official CC-FPSE at 256x512; fp32 / bf16 / NHWC);
# 4. SynBoost end to end at the official 1024x2048 with the WideResNet-38 against the official-style loop.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
if [ -x .venv/bin/python ]; then
    PY=${PY:-.venv/bin/python}
else  # a machine with torch but without our virtual environment: run from the checkout
    PY=${PY:-python3}
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
SB="$PY -m synboost.cli"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
rc=0
$PY -m pytest -q -rs tests/test_cuda.py \
    2>&1 | tail -8 | tee "$OUT/cuda_tests.txt" || rc=1
$SB bench segmenter --device cuda --out "$OUT/segmenter_cuda.json" 2>&1 | tee "$OUT/segmenter_cuda.txt" || rc=1
$SB bench synthesis --device cuda --out "$OUT/synthesis_cuda.json" 2>&1 | tee "$OUT/synthesis_cuda.txt" || rc=1
$SB bench pipeline --device cuda --out "$OUT/pipeline_cuda.json" 2>&1 | tee "$OUT/pipeline_cuda.txt" || rc=1
exit $rc
