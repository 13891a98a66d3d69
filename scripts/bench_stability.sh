#!/usr/bin/env bash
# Stability benchmark, in one run (release build), on the tanh MLP of tests/python/eos_make.py (1000
# digits, square loss, full batch):
#   1. full-batch gradient descent (η = 0.2, 800 steps, a checkpoint every 50): `landscaped stability` at
#      each checkpoint in order, with the warm start (Lanczos from the previous checkpoint's top vector) and
#      without it (--no-warm-start): HVPs and seconds per checkpoint, medians, and their ratio (the
#      baseline is the cold start, run in the same invocation); λmax/(2/η) over the steps;
#   2. critical sharpness: forward passes per checkpoint (the paper reports 5–10);
#   3. full-batch Adam (η = 0.01, β1 = 0.9): the preconditioned sharpness λ1(P⁻¹H) over the steps against
#      38/η, from Adam's own exp_avg_sq at each checkpoint;
#   4. the warm start on a slowly moving run: the same GD run with checkpoints 2 steps apart (steps
#      700–720), λmax HVPs with and without it;
#   5. the Adam run again from its checkpoints with the optimizer state inside (torch.save of model +
#      optimizer; no optimizer flags: everything read from the state, critical sharpness along the real
#      next update): seconds, HVPs and forward passes per checkpoint against section 3 (the baseline:
#      flags + exp_avg_sq file, critical sharpness along P⁻¹∇L), and λ1 equal to section 3's.
set -euo pipefail
cd "$(dirname "$0")/.."
L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
PY="${BENCH_PY:-$PWD/.venv/bin/python}"
OUT="${BENCH_OUT:-$PWD/bench-out}/stability"
GD_LR="${BENCH_STABILITY_LR:-0.2}"
ADAM_LR="${BENCH_STABILITY_ADAM_LR:-0.01}"
STEPS="${BENCH_STABILITY_STEPS:-800}"
ADAM_STEPS="${BENCH_STABILITY_ADAM_STEPS:-1000}"
EVERY=50
[ -x "$L" ] || { echo "bench_stability: $L is missing (cargo build --release)" >&2; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT"
echo "load before timing: $(uptime)"
"$PY" tests/python/eos_make.py "$OUT/gd" "$GD_LR" "$STEPS" "$EVERY" sgd
"$PY" tests/python/eos_make.py "$OUT/adam" "$ADAM_LR" "$ADAM_STEPS" "$EVERY" adam
"$PY" tests/python/eos_make.py "$OUT/slow" "$GD_LR" 720 2 sgd
model=(--model "$OUT/gd/model.pt" --eval-data "$OUT/gd/eval.safetensors" --loss method --batch-size 1000 --threads 1)
one() { # data-dir label checkpoint step extra...
    local data=$1 label=$2 ck=$3 step=$4; shift 4
    "$L" --data-dir "$data" --format json stability --run bench --step "$step" --checkpoint "$ck" "${model[@]}" "$@" \
        | "$PY" -c "import json,sys; print(json.dumps({'label': '$label', 'step': $step, 'rows': json.load(sys.stdin)}))"
}
: > "$OUT/rows.jsonl"
for s in $(seq "$EVERY" "$EVERY" "$STEPS"); do
    ck="$OUT/gd/ck/step-$s.safetensors"
    one "$OUT/warm" warm "$ck" "$s" --optimizer sgd --lr "$GD_LR" >> "$OUT/rows.jsonl"
    one "$OUT/cold" cold "$ck" "$s" --optimizer sgd --lr "$GD_LR" --no-warm-start >> "$OUT/rows.jsonl"
done
for s in $(seq 700 2 720); do
    ck="$OUT/slow/ck/step-$s.safetensors"
    one "$OUT/slowwarm" slowwarm "$ck" "$s" --optimizer sgd --lr "$GD_LR" --no-critical >> "$OUT/rows.jsonl"
    one "$OUT/slowcold" slowcold "$ck" "$s" --optimizer sgd --lr "$GD_LR" --no-critical --no-warm-start >> "$OUT/rows.jsonl"
done
model=(--model "$OUT/adam/model.pt" --eval-data "$OUT/adam/eval.safetensors" --loss method --batch-size 1000 --threads 1)
for s in $(seq "$EVERY" "$EVERY" "$ADAM_STEPS"); do
    one "$OUT/adamrun" adam "$OUT/adam/ck/step-$s.safetensors" "$s" --optimizer adam --lr "$ADAM_LR" \
        --exp-avg-sq "$OUT/adam/v-$s.safetensors" --max-steps 200 >> "$OUT/rows.jsonl"
    one "$OUT/adamstate" adamstate "$OUT/adam/state/step-$s.pt" "$s" --max-steps 200 >> "$OUT/rows.jsonl"
done
"$PY" - "$OUT/rows.jsonl" "$GD_LR" "$ADAM_LR" << 'PYEOF'
import json, re, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
gd_lr, adam_lr = float(sys.argv[2]), float(sys.argv[3])
def get(r, q):
    return next((x for x in r["rows"] if x["quantity"] == q), None)
def total(r):
    m = re.match(r"([0-9.]+) s, (\d+) HVPs, (\d+) forward", get(r, "loss")["cost"])
    return float(m.group(1)), int(m.group(2)), int(m.group(3))
for label in ("warm", "cold"):
    rs = [r for r in rows if r["label"] == label]
    lm = [int(re.match(r"(\d+) HVPs", get(r, "lambda_max")["cost"]).group(1)) for r in rs]
    secs = [total(r)[0] for r in rs]
    fwd = [total(r)[2] for r in rs]
    print(f"{label}: λmax HVPs per checkpoint median {statistics.median(lm)} (min {min(lm)}, max {max(lm)}), "
          f"seconds per checkpoint (worker start included) median {statistics.median(secs):.2f}, "
          f"critical sharpness forward passes median {statistics.median(fwd)} (min {min(fwd)}, max {max(fwd)})")
    if label == "warm":
        warm_h, warm_s = statistics.median(lm[1:]), statistics.median(secs[1:])
    else:
        cold_h, cold_s = statistics.median(lm[1:]), statistics.median(secs[1:])
print(f"warm start / cold start (checkpoints after the first): HVPs {warm_h / cold_h:.2f}x, seconds {warm_s / cold_s:.2f}x")
def hvps(label):
    return [int(re.match(r"(\d+) HVPs", get(r, "lambda_max")["cost"]).group(1)) for r in rows if r["label"] == label][1:]
sw, sc = hvps("slowwarm"), hvps("slowcold")
print(f"checkpoints 2 steps apart (700-720): λmax HVPs median warm {statistics.median(sw)} vs cold "
      f"{statistics.median(sc)}: {statistics.median(sw) / statistics.median(sc):.2f}x")
print(f"GD η = {gd_lr}: step, λmax/(2/η), λc/(2/η): " + ", ".join(
    f"{r['step']}: {get(r, 'lambda_max')['ratio']:.2f}/{get(r, 'critical_sharpness')['ratio']:.2f}"
    for r in rows if r["label"] == "warm"))
print(f"Adam η = {adam_lr}: step, λ1(P⁻¹H)/(38/η): " + ", ".join(
    f"{r['step']}: {get(r, 'preconditioned_lambda_1')['ratio']:.2f}" for r in rows if r["label"] == "adam"))
fa = [r for r in rows if r["label"] == "adam"]
st = [r for r in rows if r["label"] == "adamstate"]
def med(rs, i):
    return statistics.median(total(r)[i] for r in rs)
print(f"Adam from the checkpoint's optimizer state vs flags + exp_avg_sq file: seconds per checkpoint "
      f"{med(st, 0):.2f} vs {med(fa, 0):.2f} ({med(st, 0) / med(fa, 0):.2f}x), HVPs {med(st, 1)} vs {med(fa, 1)}, "
      f"critical sharpness forward passes {med(st, 2)} vs {med(fa, 2)}; largest λ1 difference "
      + f"{max(abs(get(a, 'preconditioned_lambda_1')['value'] / get(b, 'preconditioned_lambda_1')['value'] - 1) for a, b in zip(fa, st)):.1e}")
print("Adam: step, λc/(2/η) along the real next update vs along P⁻¹∇L: " + ", ".join(
    f"{a['step']}: {get(b, 'critical_sharpness')['ratio']:.2f}/{get(a, 'critical_sharpness')['ratio']:.2f}" for a, b in zip(fa, st)))
PYEOF
