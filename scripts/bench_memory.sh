#!/usr/bin/env bash
# Benchmark: the daemon's peak memory while fed one checkpoint — a sparse file whose header claims a
# 2^40-element tensor, and 1 GiB and 8 GiB checkpoints in f32 and bf16 (scripts/bench_memory.py). Needs
# about 25 GB of free disk for the 8 GiB bf16 case (the file and its f32 trajectory archive);
# BENCH_MEMORY_GIB="1" for the small cases only.
set -euo pipefail
cd "$(dirname "$0")/.."
L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
W="${BENCH_OUT:-$PWD/bench-out}/memory"
[ -x "$L" ] || { echo "bench_memory: build first: cargo build --release" >&2; exit 1; }
rm -rf "$W"; mkdir -p "$W"
.venv/bin/python scripts/bench_memory.py "$L" "$W" "${BENCH_MEMORY_GIB:-1,8}"
rm -rf "$W"
