#!/usr/bin/env bash
# Daemon benchmark (printed, not asserted): latency from a complete checkpoint to its metrics on
# /metrics, idle CPU and RSS, burst throughput; each against the Python baseline (safetensors load +
# norm) run in the same invocation. Env: BENCH_BURST (default 200), BENCH_PARAMS (floats per checkpoint).
set -euo pipefail
cd "$(dirname "$0")/.."
L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
[ -x "$L" ] || { echo "bench_daemon: $L is missing (make build)" >&2; exit 1; }
exec .venv/bin/python tests/python/daemon_bench.py "$L"
