#!/usr/bin/env bash
# Trajectory PCA benchmark: landscaped (release build, streaming Gram matrix) against scikit-learn PCA on
# the whole matrix in memory, with scikit-learn's default svd_solver ("auto", what the reference code uses)
# and "full" beside it, in float32 (as the reference code builds it) and float64, same checkpoints,
# BENCH_REPEAT (default 3) alternated rounds. Prints median wall time and peak RSS of each and the ratios
# (sklearn / ours), and the largest difference in explained-variance ratio; the archive time is the one-off
# cost of archiving the checkpoints (done at ingest).
# Sizes: N checkpoints x D parameters; default 20x1e6 and 20x1e7. Override: scripts/bench_pca.sh 10x1e6 ...
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
cargo build --release --quiet
WORK="${BENCH_DIR:-bench-out/pca}"
mkdir -p "$WORK"
if [ "$#" -eq 0 ]; then set -- 20x1e6 20x1e7; fi
.venv/bin/python scripts/bench_pca.py target/release/landscaped "$WORK" "$@"
