#!/usr/bin/env bash
# make demo: train two short runs of a small CNN on scikit-learn's digits (with and without weight decay),
# ingest their checkpoints, print a summary, and write the paper's Fig. 2-style plots (weight-norm history
# and weight histograms) to demo-out/. Extra parts (scripts/demo_*.sh) run at the end with the same env.
set -euo pipefail
cd "$(dirname "$0")/.."

export LANDSCAPED_BIN="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
export DEMO_OUT="$PWD/demo-out"
export DEMO_PY="$PWD/.venv/bin/python"
export LANDSCAPED_DATA_DIR="$DEMO_OUT/data"
# The two runs: checkpoints (and, when examples/landscaped_export.py exists, <run>/landscaped/ with the
# TorchScript model and eval set) live here; the run names in the store are "wd0" and "wd5e-3".
export DEMO_RUN_DIR="$DEMO_OUT/runs/wd0"
export DEMO_RUN_WD_DIR="$DEMO_OUT/runs/wd5e-3"
export DEMO_RUN=wd0
EPOCHS="${DEMO_EPOCHS:-15}"
L="$LANDSCAPED_BIN"

[ -x "$L" ] || { echo "demo: $L is missing; run 'make demo' (it builds it first)" >&2; exit 1; }
rm -rf "$DEMO_OUT"
mkdir -p "$DEMO_OUT/runs"

echo "== 1. training two runs ($EPOCHS epochs each, checkpoint every epoch): weight decay 0 and 5e-3"
"$DEMO_PY" examples/train_digits.py --out "$DEMO_RUN_DIR" --epochs "$EPOCHS" --weight-decay 0 --format pt | tail -n 3
"$DEMO_PY" examples/train_digits.py --out "$DEMO_RUN_WD_DIR" --epochs "$EPOCHS" --weight-decay 5e-3 --format hf | tail -n 3

echo
echo "== 2. ingest (statistics per tensor, norms, distances; the second run is HF checkpoint-N/ folders)"
"$L" ingest "$DEMO_RUN_DIR" --run wd0 > "$DEMO_OUT/ingest-wd0.txt"
"$L" ingest "$DEMO_RUN_WD_DIR" --run wd5e-3 > "$DEMO_OUT/ingest-wd5e-3.txt"
echo "ingested $(($(wc -l < "$DEMO_OUT/ingest-wd0.txt") - 1)) + $(($(wc -l < "$DEMO_OUT/ingest-wd5e-3.txt") - 1)) checkpoints; again (idempotent):"
"$L" ingest "$DEMO_RUN_DIR" --run wd0 2>/dev/null | awk 'NR > 1 { n[$2]++ } END { for (s in n) print "  " n[s], s }'

echo
echo "== 3. summary"
"$L" runs
echo
echo "run wd0, every 3rd checkpoint (global ‖θ‖₂, distance from the first, update size, cos between updates):"
"$L" checkpoints --run wd0 | awk 'NR == 1 { p = index($0, "path") } NR == 1 || NR % 3 == 2 { print substr($0, 1, p - 1) }'
echo
echo "last checkpoint of wd0, per tensor:"
LAST=$("$L" checkpoints --run wd0 --format csv | tail -n 1 | cut -d, -f1)
"$L" norms --run wd0 --tensor '*weight' | awk -v last="$LAST" 'NR == 1 || $1 == last'

echo
echo "== 4. plots"
"$L" plot norms --run wd0 --run wd5e-3 -o "$DEMO_OUT/norms.svg" > /dev/null
"$L" plot norms --run wd0 --run wd5e-3 -o "$DEMO_OUT/norms.png" > /dev/null
"$L" plot norms --run wd0 --tensor '*.weight' -o "$DEMO_OUT/norms-per-tensor.png" > /dev/null
"$L" plot hist --run wd0 --run wd5e-3 --tensor fc1.weight -o "$DEMO_OUT/hist-fc1.png" > /dev/null
"$L" plot hist --run wd0 --run wd5e-3 --tensor fc1.weight -o "$DEMO_OUT/hist-fc1.svg" > /dev/null
"$L" plot hist --run wd0 --step 0 --step 72 --step "$(( EPOCHS * 24 ))" --tensor conv2.weight -o "$DEMO_OUT/hist-conv2-over-training.png" > /dev/null
echo "weight-norm history (Fig. 2 b/e):   $DEMO_OUT/norms.svg, $DEMO_OUT/norms.png"
echo "per-tensor norms:                   $DEMO_OUT/norms-per-tensor.png"
echo "weight histograms (Fig. 2 c/f):     $DEMO_OUT/hist-fc1.svg, $DEMO_OUT/hist-fc1.png"
echo "a histogram over training:          $DEMO_OUT/hist-conv2-over-training.png"

# Extra parts by other areas (slices, sharpness, daemon, ...), with the environment above.
for extra in scripts/demo_*.sh; do
    [ -e "$extra" ] || continue
    echo
    echo "== extra: $extra"
    bash "$extra"
done
echo
echo "demo done: everything is in $DEMO_OUT/"
