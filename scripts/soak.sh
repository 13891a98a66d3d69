#!/usr/bin/env bash
# The long crash-consistency run: a writer produces SOAK_CHECKPOINTS (default 200) checkpoints while
# the daemon is killed with SIGKILL SOAK_KILLS (default 20) times at random moments and restarted;
# then every step must be recorded with the writer's norms and tensor statistics, ingested as new once
# over all the daemon's lives, and archived once with the checkpoint's values.
# Same test as the suite's short variant (tests/daemon_crash.rs), with bigger numbers, release build,
# once per seed of its fixed list (SEEDS, 4 of them; the suite runs the first). SOAK_SEED=N runs only
# seed N (replaying a run's kill times).
set -uo pipefail
cd "$(dirname "$0")/.."
export SOAK_CHECKPOINTS="${SOAK_CHECKPOINTS:-200}" SOAK_KILLS="${SOAK_KILLS:-20}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if [ -n "${SOAK_SEED:-}" ]; then indices=(0); else indices=(0 1 2 3); fi
for i in "${indices[@]}"; do
    SOAK_SEED_INDEX=$i cargo test --release --test daemon_crash -- --nocapture >"$log" 2>&1
    rc=$?
    grep -E '^(crash test|test result)' "$log"
    if [ $rc -ne 0 ]; then
        tail -n 40 "$log"
        echo "soak: FAILED"
        exit 1
    fi
done
