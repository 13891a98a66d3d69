#!/usr/bin/env bash
# The long crash-consistency run: a writer produces SOAK_CHECKPOINTS (default 200) checkpoints while
# the daemon is killed with SIGKILL SOAK_KILLS (default 20) times at random moments and restarted;
# then every checkpoint must be recorded once with the writer's norms, and the archive hold each once.
# Same test as the suite's short variant (tests/daemon_crash.rs), with bigger numbers, release build.
# SOAK_SEED replays a run's kill times.
set -uo pipefail
cd "$(dirname "$0")/.."
export SOAK_CHECKPOINTS="${SOAK_CHECKPOINTS:-200}" SOAK_KILLS="${SOAK_KILLS:-20}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --release --test daemon_crash -- --nocapture >"$log" 2>&1
rc=$?
grep -E '^(crash test|test result)' "$log"
if [ $rc -ne 0 ]; then
    tail -n 40 "$log"
    echo "soak: FAILED"
    exit 1
fi
