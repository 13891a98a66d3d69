#!/usr/bin/env bash
# Sharpness benchmark, in one run (release build): on the digits CNN of the demo,
#   1. HVPs needed for λmax to 1e-3 relative accuracy: Lanczos (full reorthogonalization) against power
#      iteration as PyHessian runs it (maxIter 100, tol 1e-3), both against a tightly converged λmax;
#   2. median seconds per HVP: landscaped (double backward through TorchScript via tch) against PyTorch autograd
#      in Python on the same model, checkpoint and evaluation subset, and their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
PY="${BENCH_PY:-$PWD/.venv/bin/python}"
OUT="${BENCH_OUT:-$PWD/bench-out}/sharpness"
SUB="${BENCH_SHARPNESS_SUBSAMPLE:-512}"
BS=256
TIMED="${BENCH_SHARPNESS_TIMED:-20}"
[ -x "$L" ] || { echo "bench_sharpness: $L is missing (cargo build --release)" >&2; exit 1; }
mkdir -p "$OUT"
if ! ls "$OUT/run"/step-*.safetensors > /dev/null 2>&1; then
    "$PY" examples/train_digits.py --out "$OUT/run" --batch-size 64 --lr 0.05 --epochs 3 | tail -n 1
fi
CK=$(ls "$OUT/run"/step-*.safetensors | sort -V | tail -n 1)
echo "load before timing: $(uptime)"
"$L" sharpness-bench --checkpoint "$CK" --model-dir "$OUT/run/landscaped" --subsample "$SUB" --batch-size "$BS" \
    --timed "$TIMED" > "$OUT/bench.json"
TORCH=$("$PY" tests/python/sharpness_bench_torch.py "$OUT/run/landscaped" "$CK" "$SUB" "$BS" "$TIMED")
"$PY" - "$OUT/bench.json" "$TORCH" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1])); t = float(sys.argv[2])
print(f"parameters: {r['dim']}, reference λmax {r['lambda_max_reference']:.6g}")
print(f"HVPs for λmax to {r['accuracy']:g} relative: Lanczos {r['lanczos_hvps']}, "
      f"power iteration (PyHessian maxIter 100, tol 1e-3) {r['power_hvps']} "
      f"(its error {r['power_rel_error']:.2e}, converged {r['power_converged']})")
if r["lanczos_hvps"]:
    print(f"ratio power/Lanczos HVPs: {r['power_hvps'] / r['lanczos_hvps']:.2f}")
s = r["seconds_per_hvp"]
print(f"median seconds per HVP ({r['timed_hvps']} timed): landscaped {s:.4g}, PyTorch autograd {t:.4g}, ratio landscaped/PyTorch {s / t:.2f}")
PYEOF
