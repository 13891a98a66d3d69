#!/usr/bin/env bash
# make bench (ingest): ingest throughput on a 1 GiB checkpoint (torch.save .pt, and the same weights as
# .safetensors and as a 4-file DCP folder) against (a) `cat FILE > /dev/null` of the page-cached file
# (the page cache's read speed) and (b) the Python way, three of them (scripts/bench_stats.py): the plain
# one (torch.load / safetensors load_file of the whole file + the same statistics with torch ops in
# float64), and the strongest plain Python we know (memory-mapped, one tensor at a time: torch.load(mmap=True)
# / safetensors safe_open, statistics in float64 and in float32 — f32 tensors not copied), with CPU
# seconds per GB and peak RSS, whole processes, in one invocation.
#
# The page cache can't be dropped without root, so every contender reads the file warm: BENCH_REPEAT
# rounds (default 3) alternate the contenders, each file read once just before its contenders, and
# the MEDIAN over rounds is reported. The machine is shared: the load average is printed before and after.
# Targets (issue 13): ingest >= 0.3x cat, >= 15x the Python way; the DCP folder within 1.2x of the
# single file; peak RSS independent of checkpoint size (BENCH_BIG_GIB=8 adds one ingest of an 8 GiB
# checkpoint to compare).
# bf16 (issue 25): a bf16 .safetensors of the same size (twice the parameters) against the same `cat`,
# beside the f32 .safetensors, and the trajectory archive on both (native precision: the checkpoint's own
# bytes) against `cp` + `fsync` of the same file into the data folder, and a hard link (`ln`) for
# comparison. Targets: bf16 ingest >= 0.3x cat, archive-on ingest >= 0.5x cp + fsync.
# Env: BENCH_GIB (default 1), BENCH_REPEAT (3), BENCH_BIG_GIB (unset: skipped), BENCH_PY (1: run the
# Python way; 0 skips it), BENCH_ONLY=bf16 (only the f32/bf16 .safetensors contenders), LANDSCAPED_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
PY="$PWD/.venv/bin/python"
OUT="$PWD/bench-out"
GIB="${BENCH_GIB:-1}"
REPEAT="${BENCH_REPEAT:-3}"
[ -x "$L" ] || { echo "bench: $L is missing; run 'make bench' (it builds it first)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is needed (apt-get install time)" >&2; exit 1; }
mkdir -p "$OUT"

make_ckpt() { # make_ckpt GIB: bench-out/gGIB/step-1000.{pt,safetensors}
    local d="$OUT/g$1"
    if [ ! -f "$d/step-1000.pt" ] || [ ! -f "$d/step-1000.safetensors" ]; then
        mkdir -p "$d"
        echo "generating a $1 GiB checkpoint (.pt and .safetensors) in $d ..."
        "$PY" scripts/bench_stats.py make "$d/step-1000" "$1"
    fi
}
make_ckpt "$GIB"
BF16="$OUT/g$GIB/step-1000-bf16.safetensors"
if [ ! -f "$BF16" ]; then
    echo "generating a $GIB GiB bf16 checkpoint in $BF16 ..."
    "$PY" scripts/bench_stats.py make16 "$BF16" "$GIB"
fi
ONLY="${BENCH_ONLY:-}"
# The same weights as a torch.distributed.checkpoint folder (4 data files, as 4 writer threads save it).
DCP="$OUT/g$GIB/dcp/step-1000"
if [ -z "$ONLY" ] && [ ! -f "$DCP/.metadata" ]; then
    rm -rf "$DCP"; mkdir -p "$(dirname "$DCP")"
    "$PY" - "$OUT/g$GIB/step-1000.pt" "$DCP" <<'PY'
import sys, torch
import torch.distributed.checkpoint as dcp
sd = torch.load(sys.argv[1], weights_only=True)
dcp.save({"model": sd}, storage_writer=dcp.FileSystemWriter(sys.argv[2], thread_count=4))
PY
fi

# run_1 NAME CMD...: runs CMD once under /usr/bin/time; appends a "NAME wall user sys rss_kb" line.
# Each starts with an empty store, removed (and the removal written back) before the clock starts: an
# archive run leaves 1 GB behind, whose deletion would otherwise be timed with the next contender.
run_1() {
    local name=$1; shift
    rm -rf "$OUT/data"; sync
    /usr/bin/time -f "%e %U %S %M" -o "$OUT/time.txt" "$@" > "$OUT/last.out" 2> "$OUT/last.err" || {
        echo "bench: failed: $*" >&2; cat "$OUT/last.err" >&2; exit 1; }
    echo "$name $(cat "$OUT/time.txt")" >> "$OUT/runs.txt"
}
ingest() { # ingest FILE [flags] into the store run_1 emptied
    local f=$1; shift
    "$L" --data-dir "$OUT/data" ingest "$f" --run bench --format csv "$@"
}
export -f ingest; export L OUT

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
: > "$OUT/runs.txt"
# Rounds alternate the contenders (the machine's speed drifts; medians over rounds are compared), each
# file's page cache warmed just before its contenders.
# copy_1 NAME FILE: `cp` FILE into the (emptied) data folder and fsync the copy: what archiving the
# checkpoint's bytes costs at the least. link_1 NAME FILE: a hard link instead (same filesystem).
copy_1() { run_1 "$1" bash -c "mkdir -p $OUT/data && cp $2 $OUT/data/copy && sync $OUT/data/copy"; }
link_1() { run_1 "$1" bash -c "mkdir -p $OUT/data && ln $2 $OUT/data/link"; }
bf16_round() {
    for x in safetensors bf16; do
        F="$OUT/g$GIB/step-1000.safetensors"
        [ "$x" = bf16 ] && F="$BF16"
        cat "$F" > /dev/null
        run_1 "cat.$x" bash -c "cat $F > /dev/null"
        run_1 "ingest.$x" bash -c "ingest $F --no-archive"
        run_1 "archive.$x" bash -c "ingest $F"
        copy_1 "cp.$x" "$F"
        [ "$x" = bf16 ] && link_1 "ln.$x" "$F"
    done
}
for round in $(seq "$REPEAT"); do
    if [ -n "$ONLY" ]; then bf16_round; continue; fi
    bf16_round
    for fmt in pt safetensors; do
        F="$OUT/g$GIB/step-1000.$fmt"
        cat "$F" > /dev/null   # warm the page cache
        run_1 "cat.$fmt" bash -c "cat $F > /dev/null"   # read speed of the page cache (nothing written)
        run_1 "ingest.$fmt" bash -c "ingest $F --no-archive"
        cp "$OUT/last.out" "$OUT/ingest.$fmt.csv"
        [ "$fmt" = pt ] && run_1 "archive.$fmt" bash -c "ingest $F"
        if [ "${BENCH_PY:-1}" = 1 ]; then
            run_1 "python.$fmt" "$PY" scripts/bench_stats.py stats "$F" f64 load
            cp "$OUT/last.out" "$OUT/python.$fmt.txt"
            run_1 "mmap64.$fmt" "$PY" scripts/bench_stats.py stats "$F" f64 mmap
            run_1 "mmap32.$fmt" "$PY" scripts/bench_stats.py stats "$F" f32 mmap
            cp "$OUT/last.out" "$OUT/mmap32.$fmt.txt"
        fi
    done
    [ -n "$ONLY" ] && continue
    cat "$DCP"/* > /dev/null
    run_1 "cat.dcp" bash -c "cat $DCP/* $DCP/.metadata > /dev/null"
    run_1 "ingest.dcp" bash -c "ingest $DCP --no-archive"
    # The single file again, right beside the DCP folder (the ratio compares these two).
    cat "$OUT/g$GIB/step-1000.pt" > /dev/null
    run_1 "ingest.pt2" bash -c "ingest $OUT/g$GIB/step-1000.pt --no-archive"
    run_1 "idle" "$L" --help
done
if [ -n "${BENCH_BIG_GIB:-}" ]; then
    make_ckpt "$BENCH_BIG_GIB"
    F="$OUT/g$BENCH_BIG_GIB/step-1000.pt"
    cat "$F" > /dev/null
    run_1 "big.pt" bash -c "ingest $F --no-archive"
    rm -rf "$OUT/data"
fi
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"

BYTES=$(stat -c %s "$OUT/g$GIB/step-1000.pt")
BIG_BYTES=0
[ -n "${BENCH_BIG_GIB:-}" ] && BIG_BYTES=$(stat -c %s "$OUT/g$BENCH_BIG_GIB/step-1000.pt")
NORM_L=$( [ -f "$OUT/ingest.pt.csv" ] && awk -F, 'NR == 2 { print $5 }' "$OUT/ingest.pt.csv" || echo -)
NORM_P=$( [ -f "$OUT/python.pt.txt" ] && awk '{ print $2 }' "$OUT/python.pt.txt" || echo -)
NORM_P32=$( [ -f "$OUT/mmap32.pt.txt" ] && awk '{ print $2 }' "$OUT/mmap32.pt.txt" || echo -)

# Medians per contender, then the table and the ratios.
awk -v bytes="$BYTES" -v big="$BIG_BYTES" -v rep="$REPEAT" -v nl="$NORM_L" -v np="$NORM_P" -v np32="$NORM_P32" '
function median(name,   n, i, j, t, a) {
    n = cnt[name]; for (i = 1; i <= n; i++) a[i] = w[name, i]
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function cpu_median(name,   n, i, j, t, a) {
    n = cnt[name]; for (i = 1; i <= n; i++) a[i] = c[name, i]
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{ k = ++cnt[$1]; w[$1, k] = $2; c[$1, k] = $3 + $4; if ($5 > rss[$1]) rss[$1] = $5 }
END {
    gb = bytes / 1e9
    printf "\n%.2f GB checkpoint, warm page cache, median of %d alternated rounds, whole processes\n", gb, rep
    printf "%-42s %8s %8s %9s %10s\n", "", "wall s", "CPU s", "CPU s/GB", "peak RSS"
    split("cat.pt ingest.pt archive.pt python.pt mmap64.pt mmap32.pt cat.safetensors ingest.safetensors archive.safetensors cp.safetensors python.safetensors mmap64.safetensors mmap32.safetensors cat.bf16 ingest.bf16 archive.bf16 cp.bf16 ln.bf16 cat.dcp ingest.dcp idle big.pt", order, " ")
    label["cat.bf16"] = "cat step-1000-bf16.safetensors > /dev/null"; label["ingest.bf16"] = "landscaped ingest bf16 --no-archive"
    label["archive.bf16"] = "landscaped ingest bf16 (+ archive, bf16)"; label["cp.bf16"] = "cp bf16 file + fsync"; label["ln.bf16"] = "ln bf16 file (hard link)"
    label["cp.safetensors"] = "cp .safetensors + fsync"
    label["mmap64.pt"] = "Python: torch.load(mmap) per tensor, f64"; label["mmap32.pt"] = "Python: torch.load(mmap) per tensor, f32"
    label["mmap64.safetensors"] = "Python: safe_open per tensor, f64"; label["mmap32.safetensors"] = "Python: safe_open per tensor, f32"
    label["cat.pt"] = "cat step-1000.pt > /dev/null"; label["ingest.pt"] = "landscaped ingest .pt --no-archive"
    label["archive.pt"] = "landscaped ingest .pt (+ archive, fsync)"; label["python.pt"] = "Python: torch.load + torch ops (f64)"
    label["cat.safetensors"] = "cat step-1000.safetensors > /dev/null"; label["ingest.safetensors"] = "landscaped ingest .safetensors --no-archive"
    label["archive.safetensors"] = "landscaped ingest .safetensors (+ archive)"; label["python.safetensors"] = "Python: load_file + torch ops (f64)"
    label["cat.dcp"] = "cat the DCP folder (4 .distcp files) > /dev/null"; label["ingest.dcp"] = "landscaped ingest DCP folder --no-archive"
    label["idle"] = "landscaped --help (start-up floor)"; label["big.pt"] = sprintf("ingest %.1f GB .pt --no-archive (1 run)", big / 1e9)
    for (i = 1; i <= 22; i++) {
        n = order[i]; if (!(n in cnt)) continue
        m[n] = median(n); cm[n] = cpu_median(n)
        g = (n == "big.pt") ? big / 1e9 : gb
        printf "%-42s %8.2f %8.2f %9.2f %7.0f MB\n", label[n], m[n], cm[n], (n == "idle" ? 0 : cm[n] / g), rss[n] * 1024 / 1e6
    }
    if ("ingest.bf16" in m) {
        printf "\nbf16 vs f32, the same %.2f GB page-cached (.safetensors): ingest vs cat: bf16 %.2fx, f32 %.2fx (target >= 0.3x)", gb, m["cat.bf16"] / m["ingest.bf16"], m["cat.safetensors"] / m["ingest.safetensors"]
        printf "\narchive-on ingest vs cp + fsync of the same bytes: bf16 %.2fx, f32 %.2fx (target >= 0.5x); a hard link takes %.3f s", m["cp.bf16"] / m["archive.bf16"], m["cp.safetensors"] / m["archive.safetensors"], m["ln.bf16"]
    }
    for (f = 1; f <= 2; f++) {
        x = (f == 1) ? "pt" : "safetensors"
        if (!(("ingest." x) in m)) continue
        printf "\n%s: ingest vs cat %.2fx (target >= 0.3x)", x, m["cat." x] / m["ingest." x]
        if (("python." x) in m) printf "; vs the Python way: whole load f64 %.1fx, mmap per tensor f64 %.1fx, mmap per tensor f32 %.1fx (target >= 15x); peak RSS ratio Python/ingest %.0fx / %.0fx / %.0fx", m["python." x] / m["ingest." x], m["mmap64." x] / m["ingest." x], m["mmap32." x] / m["ingest." x], rss["python." x] / rss["ingest." x], rss["mmap64." x] / rss["ingest." x], rss["mmap32." x] / rss["ingest." x]
        printf "; with the archive vs cat %.2fx", m["cat." x] / m["archive." x]
    }
    if ("ingest.dcp" in m) printf "\nDCP folder (same weights, 4 files): ingest %.2fx the single-file .pt ingest run beside it (%.2f vs %.2f s; target <= 1.2x); vs cat %.2fx", m["ingest.dcp"] / median("ingest.pt2"), m["ingest.dcp"], median("ingest.pt2"), m["cat.dcp"] / m["ingest.dcp"]
    printf "\n"
    if ("big.pt" in m) printf "peak RSS: %.0f MB at %.1f GB vs %.0f MB at %.1f GB (ratio %.2fx for %.1fx the bytes)\n", rss["big.pt"] * 1024 / 1e6, big / 1e9, rss["ingest.pt"] * 1024 / 1e6, gb, rss["big.pt"] / rss["ingest.pt"], big / bytes
    if ("ingest.pt" in m) printf "peak RSS of the ingest / checkpoint size: %.3f (.pt), %.3f (.safetensors)\n", rss["ingest.pt"] * 1024 / bytes, rss["ingest.safetensors"] * 1024 / bytes
    printf "global norm: landscaped %s, PyTorch f64 %s, PyTorch f32 (mmap) %s\n", nl, np, np32
}' "$OUT/runs.txt" | tee "$OUT/bench.txt"
