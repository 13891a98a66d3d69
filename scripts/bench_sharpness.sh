#!/usr/bin/env bash
# Sharpness benchmark, in one run (release build): on the digits CNN of the demo,
#   1. HVPs needed for λmax to 1e-3 relative accuracy: Lanczos (full reorthogonalization) against power
#      iteration as PyHessian runs it (maxIter 100, tol 1e-3), both against a tightly converged λmax;
#   2. median seconds per HVP through the worker protocol (landscaped sharpness-bench: vectors held by the
#      worker, one request per HVP) against the same HVP inside one process (landscaped-worker bench: no
#      protocol) and against PyTorch autograd in Python, on the same model, checkpoint and evaluation
#      subset; the three are run in alternation BENCH_ROUNDS times (default 3) and the medians compared.
set -euo pipefail
cd "$(dirname "$0")/.."
L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
W="$(dirname "$L")/landscaped-worker"
ROUNDS="${BENCH_ROUNDS:-3}"
THREADS="${BENCH_THREADS:-2}"
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
: > "$OUT/rounds.txt"
for r in $(seq "$ROUNDS"); do
    IN=$("$W" bench "$OUT/run/landscaped" "$CK" "$SUB" "$BS" "$TIMED" "$THREADS")
    "$L" sharpness-bench --checkpoint "$CK" --model-dir "$OUT/run/landscaped" --subsample "$SUB" --batch-size "$BS" \
        --timed "$TIMED" --threads "$THREADS" > "$OUT/bench.json"
    TORCH=$("$PY" tests/python/sharpness_bench_torch.py "$OUT/run/landscaped" "$CK" "$SUB" "$BS" "$TIMED" "$THREADS")
    echo "$IN|$(tr -d '\n' < "$OUT/bench.json")|$TORCH" >> "$OUT/rounds.txt"
done
"$PY" - "$OUT/rounds.txt" <<'PYEOF'
import json, statistics, sys
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[1]) if l.strip()]
inproc = [json.loads(a) for a, _, _ in rows]
worker = [json.loads(b) for _, b, _ in rows]
torch = [float(c) for _, _, c in rows]
r = worker[-1]
print(f"parameters: {r['dim']}, reference λmax {r['lambda_max_reference']:.6g}")
print(f"HVPs for λmax to {r['accuracy']:g} relative: Lanczos {r['lanczos_hvps']}, "
      f"power iteration (PyHessian maxIter 100, tol 1e-3) {r['power_hvps']} "
      f"(its error {r['power_rel_error']:.2e}, converged {r['power_converged']})")
if r["lanczos_hvps"]:
    print(f"ratio power/Lanczos HVPs: {r['power_hvps'] / r['lanczos_hvps']:.2f}")
i = statistics.median(x["seconds_per_hvp"] for x in inproc)
w = statistics.median(x["seconds_per_hvp"] for x in worker)
t = statistics.median(torch)
print(f"median seconds per HVP ({len(rows)} rounds of {r['timed_hvps']}): through the worker protocol {w:.4g}, "
      f"in one process {i:.4g}, PyTorch autograd {t:.4g}")
print(f"ratio worker/in-process {w / i:.3f} (target <= 1.05); ratio worker/PyTorch {w / t:.2f}")
PYEOF
