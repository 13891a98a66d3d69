#!/usr/bin/env bash
# The cost of TensorBoard events per checkpoint against its ingest (printed, not asserted; the goal is
# < 1 %): BENCH_TB_CKPTS (default 12) checkpoints of BENCH_TB_MB MiB (default 64; f32 in 48 tensors) are
# ingested (the baseline: `landscaped ingest`, seconds per checkpoint), then their events written by
# `landscaped export tensorboard` (the same per-checkpoint code the daemon runs as each one lands:
# the scalars, the 8 largest tensors' norms and histograms), in the same invocation. The events' cost is
# the export into a fresh folder minus the same export again (every step already there: nothing
# written), so starting the process and opening the store, which the daemon does not pay per
# checkpoint, are left out; the gross figure (with them) is printed too. Medians of BENCH_TB_REPS (5).
set -euo pipefail
cd "$(dirname "$0")/.."
L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
[ -x "$L" ] || { echo "bench_tensorboard: $L is missing (make build)" >&2; exit 1; }
N="${BENCH_TB_CKPTS:-12}"
MB="${BENCH_TB_MB:-64}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
.venv/bin/python - "$tmp/ck" "$N" "$MB" <<'PY'
import os, sys
import numpy as np
from safetensors.numpy import save_file
out, n, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(out)
per = mb * (1 << 20) // 4 // 48
rng = np.random.default_rng(0)
w = {f"layer{i}.weight": rng.standard_normal(per, dtype=np.float32) for i in range(48)}
for s in range(1, n + 1):
    w = {k: v + np.float32(0.01) * rng.standard_normal(per, dtype=np.float32) for k, v in w.items()}
    save_file(w, f"{out}/step_{s * 100}.safetensors")
PY
secs() { local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
REPS="${BENCH_TB_REPS:-5}"
ingest=$(secs "$L" --data-dir "$tmp/data" ingest --run r "$tmp/ck")
gross=$(for i in $(seq "$REPS"); do secs "$L" --data-dir "$tmp/data" export tensorboard --run r --out "$tmp/tb$i"; done | median)
noop=$(for i in $(seq "$REPS"); do secs "$L" --data-dir "$tmp/data" export tensorboard --run r --out "$tmp/tb1"; done | median)
events=$(echo "$gross - $noop" | bc -l)
bytes=$(stat -c %s "$tmp"/tb1/events.out.tfevents.*)
printf 'tensorboard: %d checkpoints of %d MiB: ingest %.3f s/checkpoint (baseline); events %.5f s/checkpoint (%d bytes each): %.3f %% of ingest (goal < 1 %%); gross, with process start and store open: %.3f %%\n' \
  "$N" "$MB" "$(echo "$ingest / $N" | bc -l)" "$(echo "$events / $N" | bc -l)" "$((bytes / N))" \
  "$(echo "100 * $events / $ingest" | bc -l)" "$(echo "100 * $gross / $ingest" | bc -l)"
