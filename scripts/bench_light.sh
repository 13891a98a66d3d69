#!/usr/bin/env bash
# The sidecar's footprint (release build), printed: idle daemon RSS/CPU with two watched runs,
# `landscaped runs` wall time and peak RSS (through the daemon and opening the store), worker start-up,
# and the cost to a trainer (examples/train_digits.py alone vs watched with PCA/slice/sharpness jobs, and
# vs watched with the layer-spectra job at its defaults),
# each against a Python baseline measured in the same run (tests/python/light_bench.py says which).
# Env: BENCH_ROUNDS (default 3), BENCH_TRAIN_EPOCHS (default 20), BENCH_TRAINER_ONLY=1 (the last part only).
set -euo pipefail
cd "$(dirname "$0")/.."
L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
[ -x "$L" ] || { echo "bench_light: $L is missing (make build)" >&2; exit 1; }
echo "load before: $(uptime)"
exec .venv/bin/python tests/python/light_bench.py "$L" "${BENCH_TRAIN_EPOCHS:-20}"
