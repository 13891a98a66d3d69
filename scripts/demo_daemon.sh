#!/usr/bin/env bash
# Demo part (run by scripts/demo.sh, or alone): the daemon watches a folder while the training script
# writes checkpoints into it; scraped /metrics lines show each checkpoint arriving; the [run.pca] and
# [run.slice] jobs compute the trajectory PCA and a slice in its plane (-> daemon-pca-slice.png); the CLI
# queries the daemon while it holds the store; SIGTERM stops it cleanly (exit 0).
set -euo pipefail
cd "$(dirname "$0")/.."
L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
PY="${DEMO_PY:-$PWD/.venv/bin/python}"
OUT="${DEMO_OUT:-$PWD/demo-out}/daemon"
EPOCHS="${DEMO_DAEMON_EPOCHS:-6}"
[ -x "$L" ] || { echo "demo_daemon: $L is missing (make build)" >&2; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT/checkpoints"
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$OUT/landscaped.toml" <<TOML
data_dir = "$OUT/data"
listen = "127.0.0.1:$PORT"
quiet_period_secs = 0.5
[metrics]
top_k = 2
[[run]]
name = "digits"
watch = ["$OUT/checkpoints"]
[run.pca]            # trajectory PCA after every checkpoint
every = 1
components = 2
[run.slice]          # then the loss surface in the PCA plane, the optimizer path in it
every = 1
dirs = "pca"
model_dir = "$OUT/checkpoints/landscaped"   # written by train_digits.py before training
threads = 1
TOML

echo
echo "== daemon: watching $OUT/checkpoints, metrics on http://127.0.0.1:$PORT/metrics"
LANDSCAPED_LOG=warn "$L" daemon --config "$OUT/landscaped.toml" 2> "$OUT/daemon.log" &
DAEMON=$!
trap 'kill $DAEMON 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" | grep -q '"ready":true' && break; sleep 0.1; done

"$PY" examples/train_digits.py --out "$OUT/checkpoints" --epochs "$EPOCHS" --format safetensors > "$OUT/train.log" 2>&1 &
TRAIN=$!
last=-1
while :; do
    step=$(curl -sf "http://127.0.0.1:$PORT/metrics" | awk '$1 == "landscaped_last_step{run=\"digits\"}" { print $2 }')
    if [ -n "$step" ] && [ "$step" != "$last" ]; then
        last=$step
        echo "-- checkpoint at step $step landed; scraped:"
        curl -sf "http://127.0.0.1:$PORT/metrics" | grep -E '^landscaped_(last_step|checkpoints_processed_total|weight_norm|distance_from_first|update_norm|update_cosine)\{' | sed 's/^/   /'
    fi
    if ! kill -0 $TRAIN 2>/dev/null; then
        wait $TRAIN
        sleep 1.5
        n=$(ls "$OUT/checkpoints" | grep -c safetensors || true)
        got=$(curl -sf "http://127.0.0.1:$PORT/metrics" | awk '$1 == "landscaped_checkpoints_processed_total{run=\"digits\"}" { print $2 }')
        [ "$got" = "$n" ] && break
    fi
    sleep 0.3
done
last_step=$(ls "$OUT/checkpoints" | sed -n 's/^step-\([0-9]*\)\.safetensors$/\1/p' | sort -n | tail -n 1)
echo
echo "== background jobs: trajectory PCA, then a slice in its plane about step $last_step"
for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$PORT/api/v1/runs/digits/slices" \
        | "$PY" -c 'import json, sys; s = json.load(sys.stdin); sys.exit(0 if any(r["step"] == int(sys.argv[1]) and r["complete"] for r in s) else 1)' "$last_step" \
        && break
    sleep 0.5
done
curl -sf "http://127.0.0.1:$PORT/metrics" | grep -E '^landscaped_(pca_explained_variance_ratio|slice_centre_loss|slice_curvature|job_runs_total)\{' | sed 's/^/   /'
echo
echo "== the CLI asks the daemon (it holds the store): landscaped norms --run digits"
LANDSCAPED_CONFIG="$OUT/landscaped.toml" "$L" --data-dir "$OUT/data" norms --run digits | head -n 8
echo
echo "== SIGTERM: finish the current item, flush the store, exit"
kill -TERM $DAEMON
rc=0; wait $DAEMON || rc=$?
trap - EXIT
echo "daemon exited with status $rc after recording $n checkpoints"
[ "$rc" -eq 0 ]
ID=$("$L" --data-dir "$OUT/data" --format json slices list | "$PY" -c 'import json, sys; print(max(r["id"] for r in json.load(sys.stdin) if r["kind"] == "pca"))')
"$L" --data-dir "$OUT/data" plot slice "$ID" --kind filled --title "daemon: loss in the trajectory-PCA plane, optimizer path (run digits)" \
    -o "$OUT/../daemon-pca-slice.png"
