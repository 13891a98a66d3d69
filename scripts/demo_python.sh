#!/usr/bin/env bash
# The Python-backend part of the demo (run by scripts/demo.sh, or alone): a tiny GPT-2 trained from its
# config (examples/train_gpt2.py: Trainer-style checkpoint-N/ folders, the last 4 kept), ingested, then
# a 1D slice about its last checkpoint and the interpolation from the first kept checkpoint to the last,
# both computed by `python -m landscaped_worker` in the venv's Python with examples/gpt2_factory.py —
# no TorchScript export. Under a minute on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
PY="${DEMO_PY:-$PWD/.venv/bin/python}"
OUT="${DEMO_OUT:-$PWD/demo-out}"
export LANDSCAPED_DATA_DIR="${LANDSCAPED_DATA_DIR:-$OUT/data}"
export PYTHONPATH="$PWD/examples${PYTHONPATH:+:$PYTHONPATH}"
RUN="$OUT/runs-gpt2"
[ -x "$L" ] || { echo "demo_python: $L is missing (cargo build --release)" >&2; exit 1; }
rm -rf "$RUN"
mkdir -p "$OUT"

echo "-- training a tiny GPT-2 (2 layers, 64 wide) from its config, Trainer-style checkpoints"
"$PY" examples/train_gpt2.py --out "$RUN" --steps 120 --save-every 20 --keep 4 2> "$OUT/gpt2-train.log" | tail -n 2
LANDSCAPED_LOG=warn "$L" ingest "$RUN" --run gpt2 > /dev/null 2> "$OUT/gpt2-ingest.log"
FIRST=$(ls -d "$RUN"/checkpoint-* | sort -V | head -n 1)
LAST=$(ls -d "$RUN"/checkpoint-* | sort -V | tail -n 1)
MODEL=(--backend python --python "$PY" --factory gpt2_factory:build --batch-size 8 --threads 2)

echo "-- a 1D slice about $(basename "$LAST") on Python workers (filter-normalized, seed 1)"
"$L" slice --checkpoint "$LAST" --x -1:1:15 --seed 1 "${MODEL[@]}"
ID_S=$("$L" --format csv slices list | tail -n 1 | cut -d, -f1)
"$L" plot slice "$ID_S" -o "$OUT/gpt2-slice.png"

echo "-- interpolation $(basename "$FIRST") -> $(basename "$LAST")"
"$L" interpolate "$FIRST" "$LAST" --x -0.25:1.25:13 "${MODEL[@]}"
ID_I=$("$L" --format csv slices list | tail -n 1 | cut -d, -f1)
"$L" plot slice "$ID_I" -o "$OUT/gpt2-interpolation.png"
echo "GPT-2 slice and interpolation (Python worker): $OUT/gpt2-slice.png, $OUT/gpt2-interpolation.png"
