#!/usr/bin/env bash
# Optimizer-state ingest speed vs `cat` of the same file (page cache warm) and peak RSS, printed as
# ratios (tests/python/optimizer_bench.py). Env: BENCH_OPT_MIB (default 256: MiB of Adam state);
# BENCH_OPT_BEFORE (another landscaped binary, e.g. an older build, measured in the same run).
set -euo pipefail
cd "$(dirname "$0")/.."
L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
[ -x "$L" ] || { echo "bench_optimizer: $L is missing (make build)" >&2; exit 1; }
OUT="${BENCH_OUT:-bench-out}/optimizer"
rm -rf "$OUT"
echo "load before: $(uptime)"
.venv/bin/python tests/python/optimizer_bench.py "$L" "$OUT" "${BENCH_OPT_MIB:-256}"
rm -rf "$OUT"
