#!/usr/bin/env bash
# Every CUDA figure the open issues still lack, in one run on a GPU machine (device sessions are few: one call).
#   bash benchmarks/cuda_all.sh            # after `make install`; JSON and logs under $OUT (default benchmarks/results)
# 1. tests/test_cuda.py: the detector on the GPU against the CPU (fp32, bf16, channels_last), AMP training;
# 2. the segmenter table (eager / channels_last / torch.compile, fp32 / bf16, batch 1 and 8, ResNet-50/101);
# 3. resynthesis images/s (SPADE at 256x512 and 512x1024, the official CC-FPSE at 256x512; fp32 / bf16 / NHWC);
# 4. SynBoost end to end at the official 1024x2048 with the WideResNet-38 against the official-style loop, every
#    variant in one process: fp32, bf16, bf16 + channels_last, mixed (segmenter fp32, rest bf16), torch.compile,
#    onnxruntime's CUDA execution provider and its TensorRT one where installed (pip install onnxruntime-gpu /
#    tensorrt; rows the machine lacks are listed as skipped, with why);
# 5. the precision and export tests on the GPU machine (bf16 vs fp32 ranking, compile, ONNX / OpenVINO files).
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
# the onnxruntime rows need onnx + onnxscript + onnxruntime-gpu (TensorRT too for its row) installed beforehand
# (the device machine reaches no registry); without them they are listed as skipped
$SB bench pipeline --device cuda --out "$OUT/pipeline_cuda.json" 2>&1 | tee "$OUT/pipeline_cuda.txt" || rc=1
$PY -m pytest -q -rs tests/test_precision.py tests/test_export.py 2>&1 | tail -8 | tee "$OUT/precision_tests.txt" || rc=1
exit $rc
