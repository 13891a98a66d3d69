#!/usr/bin/env bash
# Loss-landscape part of the demo (run by scripts/demo.sh, or alone): the paper's Fig. 3 setting scaled
# down. Trains a small-batch (16) and a large-batch (512) run of the digits CNN for the same epochs, then
#   1. the 1D interpolation between the two solutions (α = 0: small batch, α = 1: large batch), loss and
#      accuracy, batch-norm statistics interpolated too          -> landscape-interpolation.png
#   2. filter-normalized 2D contours around each solution, side by side (same seed)
#                                                                 -> landscape-contours-small-vs-large.png
#   3. the small-batch run's optimizer path over contours along its trajectory PCA directions
#                                                                 -> landscape-pca-trajectory.png
# A couple of minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
PY="${DEMO_PY:-$PWD/.venv/bin/python}"
OUT="${DEMO_OUT:-$PWD/demo-out}"
export LANDSCAPED_DATA_DIR="${LANDSCAPED_DATA_DIR:-$OUT/data}"
EPOCHS="${DEMO_LANDSCAPE_EPOCHS:-8}"
GRID="${DEMO_LANDSCAPE_GRID:-21}"
RUNS="$OUT/runs-landscape"
[ -x "$L" ] || { echo "demo_landscape: $L is missing (cargo build --release)" >&2; exit 1; }
mkdir -p "$RUNS"
rm -rf "$RUNS/bs16" "$RUNS/bs512"

echo "-- training small batch (16) and large batch (512), $EPOCHS epochs each"
"$PY" examples/train_digits.py --out "$RUNS/bs16" --batch-size 16 --lr 0.05 --epochs "$EPOCHS" | tail -n 2
"$PY" examples/train_digits.py --out "$RUNS/bs512" --batch-size 512 --lr 0.05 --epochs "$EPOCHS" | tail -n 2
last() { ls "$1"/step-*.safetensors | sort -V | tail -n 1; }
SB=$(last "$RUNS/bs16")
LB=$(last "$RUNS/bs512")
MODEL=(--model-dir "$RUNS/bs16/landscaped" --threads 2)

echo "-- 1D interpolation small batch -> large batch"
"$L" interpolate "$SB" "$LB" --x -0.5:1.5:41 "${MODEL[@]}"
ID_I=$("$L" --format csv slices list | tail -n 1 | cut -d, -f1)
"$L" plot slice "$ID_I" -o "$OUT/landscape-interpolation.png"

echo "-- filter-normalized 2D slices around each solution (${GRID}x${GRID}, seed 1)"
"$L" slice --checkpoint "$SB" --x "-1:1:$GRID" --y "-1:1:$GRID" --seed 1 "${MODEL[@]}"
ID_S=$("$L" --format csv slices list | tail -n 1 | cut -d, -f1)
"$L" slice --checkpoint "$LB" --x "-1:1:$GRID" --y "-1:1:$GRID" --seed 1 "${MODEL[@]}"
ID_L=$("$L" --format csv slices list | tail -n 1 | cut -d, -f1)
"$L" plot slice "$ID_S" "$ID_L" --kind contour --title "filter-normalized loss contours: batch 16 (left) vs batch 512 (right)" \
    -o "$OUT/landscape-contours-small-vs-large.png"
"$L" plot slice "$ID_S" -o "$OUT/landscape-small-batch-2d.png"
"$L" slices export "$ID_S" -o "$OUT/landscape-small-batch.vtk"

echo "-- trajectory PCA of the small-batch run and the path over its contours"
if LANDSCAPED_LOG=warn "$L" ingest "$RUNS"/bs16/step-*.safetensors --run bs16 > /dev/null && "$L" pca --run bs16 > "$OUT/landscape-pca.txt"; then
    "$L" slice --run bs16 --dirs pca "${MODEL[@]}"
    ID_P=$("$L" --format csv slices list | tail -n 1 | cut -d, -f1)
    "$L" plot slice "$ID_P" --kind filled -o "$OUT/landscape-pca-trajectory.png"
else
    echo "(trajectory PCA not available: skipped)"
fi
"$L" slices list
echo "figures: $OUT/landscape-interpolation.png, $OUT/landscape-contours-small-vs-large.png,"
echo "         $OUT/landscape-small-batch-2d.png, $OUT/landscape-pca-trajectory.png; ParaView: $OUT/landscape-small-batch.vtk"
