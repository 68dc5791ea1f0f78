#!/usr/bin/env bash
# Issue 10's GPU checks in one device run: the cuda-marked tests, then benchmarks/cuda.py (profiling the refiner).
# Here, first: ../shared/tools/device-prep (builds .device/: ComfyUI 0.3.75 + the wheels the device lacks).
# Then: device run, carry [".device"], timeout_s 600, command `bash scripts/device-check.sh`; results come back
# from $OUT (cuda_benchmark.json is rewritten after every row, so a run cut short keeps what it measured).
set -uo pipefail
OUT=${OUT:-/tmp/lsd-device-check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 LSD_COMFYUI="$PWD/.device/comfyui" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())" \
  | tee -a "$OUT/gpu.txt"
timeout "${TEST_TIMEOUT:-150}" python3 -m pytest -q -m cuda tests/test_cuda.py --timeout 90 -rA --durations=10 2>&1 \
  | tee "$OUT/cuda_tests.log"
tests_rc=${PIPESTATUS[0]}
timeout "${BENCH_TIMEOUT:-390}" python3 benchmarks/cuda.py --out "$OUT" --profile refiner "$@" 2>&1 \
  | { grep --line-buffered -vE 'it/s\]|s/it\]' || true; } | tee "$OUT/cuda_benchmark.log"
bench_rc=${PIPESTATUS[0]}
echo "device-check: tests exit $tests_rc, benchmark exit $bench_rc"
exit $((tests_rc || bench_rc))
