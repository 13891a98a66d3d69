#!/usr/bin/env bash
# Benchmark: scale-out efficiency. A 21x21 slice of the digits CNN on 1, 2 and 4 (oversubscribed on two
# cores) TorchScript workers that dial in over TCP, rounds alternated (BENCH_ROUNDS, default 3), medians:
# parallel efficiency T1/(n*Tn), and the coordinator's CPU per point and peak RSS (scripts/bench_scale.py).
# usage: scripts/bench_scale.sh [GRID_N] [WORKER_COUNTS]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-21}"
COUNTS="${2:-1,2,4}"
ROUNDS="${BENCH_ROUNDS:-3}"
L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
WK="$(dirname "$L")/landscaped-worker"
PY="$PWD/.venv/bin/python"
W="${BENCH_OUT:-$PWD/bench-out}/scale"
[ -x "$L" ] && [ -x "$WK" ] || { echo "bench_scale: build first: cargo build --release --workspace" >&2; exit 1; }
rm -rf "$W"; mkdir -p "$W"
"$PY" examples/train_digits.py --out "$W/run" --epochs 1 --threads 2 > /dev/null
CK=$(ls "$W"/run/step-*.safetensors | sort -V | tail -n 1)
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" scripts/bench_scale.py "$L" "$WK" "$CK" "$W/run/landscaped" "$W" "$N" "$ROUNDS" "$COUNTS"
