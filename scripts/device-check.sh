#!/usr/bin/env bash
# Issue 10's GPU checks in one device run: the cuda-marked tests, then benchmarks/cuda.py (profiling the refiner).
# Here, first: ../shared/tools/device-prep (builds .device/: ComfyUI 0.3.75 + the wheels the device lacks).
# Then: device run, carry [".device"], command `bash scripts/device-check.sh`; results come back from $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/lsd-device-check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 LSD_COMFYUI="$PWD/.device/comfyui"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
timeout "${TEST_TIMEOUT:-200}" python3 -m pytest -q -m cuda tests/test_cuda.py 2>&1 | tee "$OUT/cuda_tests.log"
timeout "${BENCH_TIMEOUT:-330}" python3 benchmarks/cuda.py --out "$OUT" --profile refiner "$@" 2>&1 \
  | grep --line-buffered -v 'it/s]' | tee "$OUT/cuda_benchmark.log"
