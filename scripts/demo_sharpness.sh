#!/usr/bin/env bash
# Sharpness part of the demo (after scripts/demo_landscape.sh, or alone: it then trains the two runs
# itself): compares the small-batch (16) and large-batch (512) digits runs on every measure — Hessian
# λmax/λmin and |λmin/λmax| (Lanczos), Hutchinson trace, Keskar ε-sharpness, SAM (first order and with
# ascent), ASAM, filter-normalized loss rise — prints both tables and which run is sharper on each, and
# plots both spectral densities (SLQ)                             -> sharpness-spectrum.png
set -euo pipefail
cd "$(dirname "$0")/.."

L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
PY="${DEMO_PY:-$PWD/.venv/bin/python}"
OUT="${DEMO_OUT:-$PWD/demo-out}"
export LANDSCAPED_DATA_DIR="${LANDSCAPED_DATA_DIR:-$OUT/data}"
EPOCHS="${DEMO_LANDSCAPE_EPOCHS:-8}"
SUB="${DEMO_SHARPNESS_SUBSAMPLE:-512}"
RUNS="$OUT/runs-landscape"
[ -x "$L" ] || { echo "demo_sharpness: $L is missing (cargo build --release)" >&2; exit 1; }
mkdir -p "$RUNS"
for bs in 16 512; do
    if ! ls "$RUNS/bs$bs"/step-*.safetensors > /dev/null 2>&1; then
        echo "-- training batch size $bs ($EPOCHS epochs)"
        "$PY" examples/train_digits.py --out "$RUNS/bs$bs" --batch-size "$bs" --lr 0.05 --epochs "$EPOCHS" | tail -n 2
    fi
done
last() { ls "$1"/step-*.safetensors | sort -V | tail -n 1; }

for bs in 16 512; do
    CK=$(last "$RUNS/bs$bs")
    echo "-- sharpness of batch size $bs at $(basename "$CK") (first $SUB evaluation samples)"
    "$L" sharpness --run "sharp-bs$bs" --checkpoint "$CK" --model-dir "$RUNS/bs16/landscaped" \
        --subsample "$SUB" --batch-size 256 --tol 1e-3 --max-steps 100 | tee "$OUT/sharpness-bs$bs.txt"
    "$L" --format json sharpness --run "sharp-bs$bs" --list > "$OUT/sharpness-bs$bs.json"
done
"$L" plot spectrum --run sharp-bs16 --run sharp-bs512 -o "$OUT/sharpness-spectrum.png"

echo "-- small batch (16) vs large batch (512): which is sharper on each measure"
"$PY" - "$OUT/sharpness-bs16.json" "$OUT/sharpness-bs512.json" <<'PYEOF'
import json, sys
a = {r["quantity"]: r for r in json.load(open(sys.argv[1]))}
b = {r["quantity"]: r for r in json.load(open(sys.argv[2]))}
print(f"{'quantity':14} {'batch 16':>12} {'batch 512':>12}  larger")
for q in a:
    if q in b and isinstance(a[q]["value"], (int, float)) and isinstance(b[q]["value"], (int, float)):
        va, vb = a[q]["value"], b[q]["value"]
        print(f"{q:14} {va:12.5g} {vb:12.5g}  {'batch 512' if vb > va else 'batch 16'}")
PYEOF
echo "figure: $OUT/sharpness-spectrum.png; tables: $OUT/sharpness-bs16.txt, $OUT/sharpness-bs512.txt"
