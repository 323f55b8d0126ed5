#!/usr/bin/env bash
# Every GPU measurement of the engine ("thousands of clients per GPU at full speed") as one prepared script,
# <= 6 minutes on one H100/H200 (BUDGET_S, default 340 s of steps), writing ONE JSON summary:
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]            # default OUT_DIR: $OUT or /tmp/gpu_check
#   GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh     # tiny sizes: runs end to end on a CPU in ~1.5 min
#
# Steps, most important first. Each runs under its own `timeout`, clipped to what is left of BUDGET_S, so
# a slow step cannot eat the others' time; a step that fails or times out is recorded as such in the
# summary (OUT/<step>.status) and the script goes on; a step with < 15 s left is skipped.
#   1. peaks       benchmarks/matmul_peak.py: bf16 + f32 matmul TFLOP/s, memory bandwidth GB/s
#   2. round       benchmarks/round_speed.py at 256 clients x 4 steps x batch 8, 64 px, U-Net 16/32/64, SGD:
#                  one-jit auto (= chunked:32) vs sequential vs the per-step jitted loop, with the roofline
#                  of each against step 1's peaks
#   3. scaling     experiments/scaling.py --preset gpu: 64 -> 4096 clients (auto plan), per-client round time,
#                  memory (memory_stats peak) vs the analytic memory model (CSV written after every C)
#   4. round_bf16  the same config: auto vs chunked:32 in bf16 (float32 master weights), with the roofline
#   5. round_more  the same config: auto vs vmap (all 256 clients at once, ~13 GB) vs chunked:32 with im2col
#                  convs (per-client weights as batched matmuls, not grouped convs) vs flax's GroupNorm
#   6. torch       the same config: auto vs PyTorch eager FedAvg (CUDA when torch sees the GPU), if importable
#   7. summary     OUT/summary.json (+ printed): everything above in one object (benchmarks/gpu_summary.py)
# The GPU image lacks tensorflow-datasets and ml_collections: nothing here imports them (tests/test_imports.py).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-/tmp/gpu_check}}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# One compilation cache for every step: the auto round compiles once for steps 2, 3 (C=256), 4 and 5.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$OUT/jax_cache}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
T0=$(date +%s)

if [[ "${GPU_CHECK_TINY:-0}" == "1" ]]; then
  BUDGET_S=${BUDGET_S:-900}
  PEAK_ARGS=(--tiny)
  ROUND_ARGS=(--clients 4 --local_steps 1 --batch_size 2 --image_size 16 --features 4,8 --rounds 1)
  ROUND_VARIANTS=sequential
  BF16_VARIANTS=chunked:2@bfloat16
  MORE_VARIANTS=vmap,chunked:2%im2col,auto/flax
  SCALE_ARGS=(--clients 2,4 --image_size 16 --features 4,8 --local_steps 1 --batch_size 2 --rounds 1)
  T_PEAK=120; T_ROUND=300; T_SCALE=240; T_BF16=200; T_MORE=200; T_TORCH=120
else
  BUDGET_S=${BUDGET_S:-340}
  PEAK_ARGS=()
  ROUND_ARGS=(--clients 256 --local_steps 4 --batch_size 8 --image_size 64 --features 16,32,64 --rounds 3)
  ROUND_VARIANTS=sequential
  BF16_VARIANTS=chunked:32@bfloat16
  MORE_VARIANTS=vmap,chunked:32%im2col,auto/flax
  SCALE_ARGS=(--preset gpu --rounds 1 --warmup 0)
  T_PEAK=30; T_ROUND=110; T_SCALE=90; T_BF16=45; T_MORE=60; T_TORCH=40
fi

run_step() {  # name, timeout seconds, command...: log to OUT/name.log, status to OUT/name.status
  local name=$1 limit=$2
  shift 2
  local left=$(( BUDGET_S - ($(date +%s) - T0) ))
  (( limit > left )) && limit=$left
  if (( limit < 15 )); then
    echo "=== $name: skipped (${left}s of the budget left) ==="
    echo "{\"rc\": null, \"seconds\": 0, \"skipped\": true}" > "$OUT/$name.status"
    return
  fi
  local t=$(date +%s)
  echo "=== $name (timeout ${limit}s) ==="
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "{\"rc\": $rc, \"seconds\": $(( $(date +%s) - t )), \"timeout_s\": $limit}" > "$OUT/$name.status"
  echo "=== $name: rc $rc in $(( $(date +%s) - t )) s ==="
}

python -c "import jax; print(jax.__version__, jax.devices())"
run_step peaks "$T_PEAK" python -m benchmarks.matmul_peak "${PEAK_ARGS[@]}"
if [[ -s "$OUT/peaks.log" ]] && tail -1 "$OUT/peaks.log" | grep -q '^{'; then
  PEAKS=(--peaks "$OUT/peaks.log")
else
  PEAKS=(--roofline)  # step 1 failed: round_speed measures the peaks itself
fi
run_step round "$T_ROUND" python -m benchmarks.round_speed "${ROUND_ARGS[@]}" --variants "$ROUND_VARIANTS" \
    --skip_torch "${PEAKS[@]}"
run_step scaling "$T_SCALE" python -m experiments.scaling --out "$OUT/scaling" "${SCALE_ARGS[@]}"
run_step round_bf16 "$T_BF16" python -m benchmarks.round_speed "${ROUND_ARGS[@]}" --variants "$BF16_VARIANTS" \
    --skip_step_loop --skip_torch "${PEAKS[@]}"
run_step round_more "$T_MORE" python -m benchmarks.round_speed "${ROUND_ARGS[@]}" --variants "$MORE_VARIANTS" \
    --skip_step_loop --skip_torch "${PEAKS[@]}"
if python -c "import torch" 2>/dev/null; then
  run_step torch "$T_TORCH" python -m benchmarks.round_speed "${ROUND_ARGS[@]}" --skip_step_loop
else
  echo "{\"rc\": null, \"seconds\": 0, \"skipped\": true, \"why\": \"torch not importable\"}" > "$OUT/torch.status"
fi

python -m benchmarks.gpu_summary "$OUT" "$(( $(date +%s) - T0 ))" | tee "$OUT/summary.json"
