#!/usr/bin/env bash
# Sharpness benchmark, in one run (release build): on the digits CNN of the demo,
#   1. λmax, each method stopped by its own rule: Lanczos (full reorthogonalization, the `sharpness`
#      command's settings: at most 100 steps, residual tolerance 1e-3) through the worker, against the real
#      PyHessian (PyPI pyhessian==0.1) at its defaults (power iteration, maxIter 100, tol 1e-3) on the eager
#      model (scripts/bench_sharpness_pyhessian.py): HVPs, seconds, and each one's error against a tightly
#      converged Lanczos reference (tol 1e-9), one seed per round, medians;
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
# The baseline, the real PyHessian, is a benchmark's need only: installed here (PyPI), not by `make setup`.
"$PY" -c "import pyhessian" 2> /dev/null || "$PY" -m pip install --quiet pyhessian==0.1
echo "load before timing: $(uptime)"
: > "$OUT/rounds.txt"
for r in $(seq "$ROUNDS"); do
    IN=$("$W" bench "$OUT/run/landscaped" "$CK" "$SUB" "$BS" "$TIMED" "$THREADS")
    "$L" sharpness-bench --checkpoint "$CK" --model-dir "$OUT/run/landscaped" --subsample "$SUB" --batch-size "$BS" \
        --timed "$TIMED" --threads "$THREADS" --seed "$r" > "$OUT/bench.json"
    TORCH=$("$PY" tests/python/sharpness_bench_torch.py "$OUT/run/landscaped" "$CK" "$SUB" "$BS" "$TIMED" "$THREADS")
    PYH=$("$PY" scripts/bench_sharpness_pyhessian.py "$OUT/run/landscaped" "$CK" "$SUB" "$THREADS" "$r")
    echo "$IN|$(tr -d '\n' < "$OUT/bench.json")|$TORCH|$PYH" >> "$OUT/rounds.txt"
done
echo "load after timing: $(uptime)"
"$PY" - "$OUT/rounds.txt" <<'PYEOF'
import json, statistics, sys
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[1]) if l.strip()]
inproc = [json.loads(r[0]) for r in rows]
worker = [json.loads(r[1]) for r in rows]
torch = [float(r[2]) for r in rows]
pyh = [json.loads(r[3]) for r in rows]
med = statistics.median
r = worker[-1]
print(f"parameters: {r['dim']}, reference λmax {r['lambda_max_reference']:.6g} (Lanczos, tol 1e-9)")
lh, ph = med(x["lanczos_hvps"] for x in worker), med(x["hvps"] for x in pyh)
ls, ps = med(x["lanczos_seconds"] for x in worker), med(x["seconds"] for x in pyh)
le = med(x["lanczos_rel_error"] for x in worker)
pe = med(abs(x["lambda_max"] - y["lambda_max_reference"]) / y["lambda_max_reference"] for x, y in zip(pyh, worker))
print(f"λmax, each stopped by its own rule (medians over {len(rows)} seeds):")
print(f"  Lanczos (landscaped sharpness-bench, tol {r['accuracy']:g}, max 100 steps): {lh:g} HVPs, {ls:.3f} s, "
      f"relative error {le:.1e} (per seed: {[x['lanczos_hvps'] for x in worker]} HVPs)")
print(f"  PyHessian 0.1 eigenvalues() defaults (maxIter 100, tol 1e-3): {ph:g} HVPs, {ps:.3f} s, "
      f"relative error {pe:.1e} (per seed: {[x['hvps'] for x in pyh]} HVPs)")
print(f"ratio PyHessian/Lanczos: HVPs {ph / lh:.2f}x, wall time {ps / ls:.2f}x")
i = statistics.median(x["seconds_per_hvp"] for x in inproc)
w = statistics.median(x["seconds_per_hvp"] for x in worker)
t = statistics.median(torch)
print(f"median seconds per HVP ({len(rows)} rounds of {r['timed_hvps']}): through the worker protocol {w:.4g}, "
      f"in one process {i:.4g}, PyTorch autograd {t:.4g}")
print(f"ratio worker/in-process {w / i:.3f} (target <= 1.05); ratio worker/PyTorch {w / t:.2f}")
PYEOF
