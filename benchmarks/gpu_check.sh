#!/usr/bin/env bash
# The GPU check of the scale-and-speed issue, as one prepared script (a few minutes on one H100/H200):
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# 1. the measured bf16 matmul peak; 2. round_speed (one-jit round vs per-step loop; torch skipped) at a
# GPU-sized config, f32; 3. the client-count study (8 -> 4096 clients on 32x32 tiles, vmap strategy),
# CSV + plot. Achieved TFLOP/s / peak = round_speed's achieved_gflops / 1000 / bf16_tflops.
# The GPU image lacks tensorflow-datasets and ml_collections: nothing here imports them.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-/tmp/gpu_check}}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python -c "import jax; print(jax.devices())"
python benchmarks/matmul_peak.py | tee "$OUT/matmul_peak.log"
python benchmarks/round_speed.py --clients 256 --local_steps 4 --batch_size 8 --image_size 64 \
    --skip_torch --rounds 5 | tee "$OUT/round_speed.log"
python experiments/scaling.py --out "$OUT/scaling" --preset gpu --rounds 3 | tee "$OUT/scaling.log"
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
last = lambda p: json.loads(open(p).read().strip().splitlines()[-1])
peak, rs = last(f"{out}/matmul_peak.log"), last(f"{out}/round_speed.log")
frac = rs["achieved_gflops"] / 1e3 / peak["bf16_tflops"]
print(json.dumps({"device": peak["device"], "bf16_peak_tflops": peak["bf16_tflops"],
                  "round_tflops": rs["achieved_gflops"] / 1e3, "fraction_of_bf16_peak": frac,
                  "images_per_s": rs["images_per_s"]}))
PY
