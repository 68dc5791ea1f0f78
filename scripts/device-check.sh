#!/usr/bin/env bash
# The GPU checks in one device run. Here, first: ../shared/tools/device-prep (builds .device/: ComfyUI 0.3.75 + the
# wheels the device lacks). Then: device run, carry [".device"], timeout_s 600, command
#   bash scripts/device-check.sh [issue10|samplers|scaling|all] [benchmarks/cuda.py options]
# issue10 (the default): the cuda-marked tests, then benchmarks/cuda.py profiling the refiner (~5-6 min).
# samplers (issue 28, < 5 min): the batching, load-count, patch and CFG++ tests on CUDA, then benchmarks/samplers.py:
#   every sampler through the refiner (parallel, fused) and the detailer at 2048 x 2048, tiny Flux.1 in bf16 and fp16,
#   wall time and peak VRAM per run in samplers.json.
# scaling (issue 30): benchmarks/distributed.py, the refiner at 3840 x 2160 locally and over ComfyUI-Distributed with
#   1 and 2 workers on this box (needs ../shared/hosts/comfyui-distributed-1.4.4.tar.gz copied into .device/).
# Results come back from $OUT (the JSON files are rewritten after every row, so a run cut short keeps what it measured).
set -uo pipefail
OUT=${OUT:-/tmp/lsd-device-check}
MODE=issue10
case "${1:-}" in issue10|samplers|scaling|all) MODE=$1; shift ;; esac
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .device/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 LSD_COMFYUI="$PWD/.device/comfyui" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())" \
  | tee -a "$OUT/gpu.txt"
quiet() { grep --line-buffered -vE 'it/s\]|s/it\]' || true; }
rc=0
if [ "$MODE" = issue10 ] || [ "$MODE" = all ]; then
  timeout "${TEST_TIMEOUT:-150}" python3 -m pytest -q -m cuda tests/test_cuda.py --timeout 90 -rA --durations=10 2>&1 \
    | tee "$OUT/cuda_tests.log"
  rc=$((rc || PIPESTATUS[0]))
  timeout "${BENCH_TIMEOUT:-390}" python3 benchmarks/cuda.py --out "$OUT" --profile refiner "$@" 2>&1 | quiet \
    | tee "$OUT/cuda_benchmark.log"
  rc=$((rc || PIPESTATUS[0]))
fi
if [ "$MODE" = samplers ] || [ "$MODE" = all ]; then
  timeout "${SAMPLER_TEST_TIMEOUT:-100}" python3 -m pytest -q tests/test_batching.py tests/test_loads.py \
    tests/test_patch_alignment.py tests/test_fidelity.py -k "not tile_constant and not tile_global" -rA --durations=10 2>&1 \
    | tee "$OUT/samplers_tests.log"
  rc=$((rc || PIPESTATUS[0]))
  timeout "${SAMPLER_TIMEOUT:-170}" python3 benchmarks/samplers.py --out "$OUT" 2>&1 | quiet | tee "$OUT/samplers.log"
  rc=$((rc || PIPESTATUS[0]))
fi
if [ "$MODE" = scaling ]; then
  LSD_DISTRIBUTED_TARBALL="$PWD/.device/comfyui-distributed-1.4.4.tar.gz" timeout "${SCALING_TIMEOUT:-480}" \
    python3 benchmarks/distributed.py --out "$OUT" 2>&1 | quiet | tee "$OUT/distributed.log"
  rc=$((rc || PIPESTATUS[0]))
fi
echo "device-check ($MODE): exit $rc"
exit "$rc"
