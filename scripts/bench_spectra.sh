#!/usr/bin/env bash
# Layer-spectra benchmark (docs/spectra.md): per-matrix time of `landscaped spectra --checkpoint` (release
# build, faer values-only SVD in f64) against torch.linalg.svdvals in float64 and float32, on one thread
# each, for 512², 1024² and 2048×4096 matrices (4096×11008 too with BENCH_BIG=1: minutes per contender on
# one core); then a GPT-2-small-shaped checkpoint (124 M parameters, random init, safetensors) measured by
# landscaped vs WeightWatcher's analyze() on the same weights: whole-process wall time and peak RSS.
# Prints ratios (reference / landscaped) from one invocation.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build --release --quiet
WORK="${BENCH_DIR:-bench-out/spectra}"
mkdir -p "$WORK"
.venv/bin/python scripts/bench_spectra.py target/release/landscaped "$WORK"
