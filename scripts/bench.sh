#!/usr/bin/env bash
# make bench: ingest throughput on a >= 1 GiB checkpoint, against (a) a plain sequential read of the same
# bytes and (b) the same statistics computed in Python with torch ops, plus peak memory.
#
# The page cache can't be dropped without root, so every contender reads the file warm: it is read once
# first, then each way is timed warm (best of BENCH_REPEAT runs, default 3). Targets: ingest >= 0.7x the
# plain read's throughput, >= 3x the Python way, peak RSS <= 2 x the largest tensor + 100 MB.
# Env: BENCH_GIB (checkpoint size, default 1), BENCH_REPEAT, LANDSCAPED_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
PY="$PWD/.venv/bin/python"
OUT="$PWD/bench-out"
GIB="${BENCH_GIB:-1}"
REPEAT="${BENCH_REPEAT:-3}"
FILE="$OUT/step-1000.safetensors"
[ -x "$L" ] || { echo "bench: $L is missing; run 'make bench' (it builds it first)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is needed for peak memory (apt-get install time)" >&2; exit 1; }
mkdir -p "$OUT"

if [ ! -f "$FILE" ] || [ "$(stat -c %s "$FILE")" -lt $(( ${GIB%.*} * 1000000000 )) ]; then
    echo "generating a ${GIB} GiB checkpoint at $FILE ..."
    "$PY" scripts/bench_stats.py make "$FILE" "$GIB"
fi
BYTES=$(stat -c %s "$FILE")
LARGEST=$((4096 * 8192 * 4))
echo "checkpoint: $FILE, $BYTES bytes, largest tensor $LARGEST bytes; $(nproc) CPUs"
cat "$FILE" > /dev/null   # warm the page cache

# best_of CMD...: runs CMD REPEAT times under /usr/bin/time; prints "best_seconds max_rss_kb".
best_of() {
    local best="" rss=0 t r
    for _ in $(seq "$REPEAT"); do
        /usr/bin/time -f "%e %M" -o "$OUT/time.txt" "$@" > "$OUT/last.out" 2> "$OUT/last.err" || {
            echo "bench: failed: $*" >&2; cat "$OUT/last.err" >&2; exit 1; }
        read -r t r < "$OUT/time.txt"
        if [ -z "$best" ] || awk -v a="$t" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$t; fi
        [ "$r" -gt "$rss" ] && rss=$r
    done
    echo "$best $rss"
}

ingest_once() { rm -rf "$OUT/data"; "$L" --data-dir "$OUT/data" ingest "$FILE" --run bench --format csv; }
export -f ingest_once; export L OUT FILE

read -r T_READ _ < <(best_of dd if="$FILE" of=/dev/null bs=8M status=none)
read -r T_ING RSS_ING < <(best_of bash -c ingest_once)
cp "$OUT/last.out" "$OUT/ingest.csv"
# Peak anonymous memory (heap) of one ingest, sampled from /proc every 5 ms: the binary's total RSS also
# counts ~0.5 GB of libtorch/CUDA library pages mapped at start-up, which ingest does not use.
rm -rf "$OUT/data"
"$L" --data-dir "$OUT/data" ingest "$FILE" --run bench --format csv > /dev/null &
PID=$!
ANON=0
while kill -0 "$PID" 2> /dev/null; do
    a=$(awk '/^RssAnon:/ { print $2 }' "/proc/$PID/status" 2> /dev/null || echo 0)
    [ -n "$a" ] && [ "$a" -gt "$ANON" ] && ANON=$a
    sleep 0.005
done
wait "$PID"
read -r _ RSS_IDLE < <(REPEAT=1 best_of "$L" --help)

read -r T_PY RSS_PY < <(best_of "$PY" scripts/bench_stats.py stats "$FILE" f64)
cp "$OUT/last.out" "$OUT/python.txt"
read -r T_PY32 _ < <(best_of "$PY" scripts/bench_stats.py stats "$FILE" f32)

# Both sides computed the same global norm?
NORM_L=$(awk -F, 'NR == 2 { print $5 }' "$OUT/ingest.csv")
NORM_P=$(awk '{ print $2 }' "$OUT/python.txt")
# The ingest call itself (the "seconds" column), without the process start-up (loading libtorch).
T_CALL=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "seconds") c = i } NR == 2 { print $c }' "$OUT/ingest.csv")

awk -v bytes="$BYTES" -v tr="$T_READ" -v ti="$T_ING" -v tp="$T_PY" -v tp32="$T_PY32" \
    -v rss="$RSS_ING" -v rsspy="$RSS_PY" -v anon="$ANON" -v idle="$RSS_IDLE" -v largest="$LARGEST" -v tc="$T_CALL" -v nl="$NORM_L" -v np="$NORM_P" -v rep="$REPEAT" 'BEGIN {
    gb = bytes / 1e9
    printf "\nwarm page cache, best of %d runs each\n", rep
    printf "%-44s %8s %10s\n", "", "seconds", "GB/s"
    printf "%-44s %8.2f %10.2f\n", "plain sequential read (dd bs=8M)", tr, gb / tr
    printf "%-44s %8.2f %10.2f\n", "landscaped ingest, whole process", ti, gb / ti
    printf "%-44s %8.2f %10.2f\n", "  of which the ingest call (stats + commit)", tc, gb / tc
    printf "%-44s %8.2f %10.2f\n", "Python: load + torch ops in float64", tp, gb / tp
    printf "%-44s %8.2f %10.2f\n", "Python: load + torch ops in float32", tp32, gb / tp32
    printf "\ningest vs plain read:      %.2fx process, %.2fx ingest call  (target >= 0.7x)\n", tr / ti, tr / tc
    printf "ingest vs Python (f64):    %.2fx  (target >= 3x)\n", tp / ti
    printf "ingest vs Python (f32):    %.2fx\n", tp32 / ti
    limit = (2 * largest + 100e6) / 1e6
    printf "memory limit: 2 x largest tensor + 100 MB = %.0f MB\n", limit
    printf "  ingest peak anonymous memory (heap, sampled): %.0f MB\n", anon * 1024 / 1e6
    printf "  ingest peak RSS %.0f MB, of which the idle binary (`landscaped --help`: libtorch/CUDA libraries) %.0f MB\n", rss * 1024 / 1e6, idle * 1024 / 1e6
    printf "  Python peak RSS %.0f MB\n", rsspy * 1024 / 1e6
    printf "global norm: landscaped %s, PyTorch %s\n", nl, np
}' | tee "$OUT/bench.txt"
