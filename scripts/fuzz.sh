#!/usr/bin/env bash
# Fuzz the checkpoint readers and the pickle scanner (libFuzzer through libfuzzer-sys):
# fuzz_safetensors, fuzz_torchzip, fuzz_pickle_scan, fuzz_chunked (the streaming reads against whole reads),
# fuzz_dcp (a DCP folder's .metadata and data file; its tensors streamed by range against whole reads).
# fuzz_pickle_nesting (pickles generated to nest thousands deep, read as data.pkl and .metadata on a 256 KiB stack).
# Each target runs FUZZ_SECONDS (default 300) at low priority, seeded with checkpoints PyTorch writes
# (tests/python/checkpoint_make.py), and prints its executions (libFuzzer's final stats).
# With a nightly toolchain and cargo-fuzz it uses `cargo fuzz` (AddressSanitizer); otherwise it builds
# the targets with the stable compiler and SanitizerCoverage only (-Cpasses=sancov-module: coverage
# guidance without ASan; safe Rust needs no ASan to find panics, overflows and aborts) and runs them.
# Usage: scripts/fuzz.sh [TARGET...]   env: FUZZ_SECONDS, FUZZ_JOBS (parallel jobs per target, default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECONDS:-300}"
# The targets write every input to a temp file before opening it: keep those in memory when possible.
[ -d /dev/shm ] && [ -w /dev/shm ] && export TMPDIR=/dev/shm
jobs="${FUZZ_JOBS:-1}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_safetensors fuzz_torchzip fuzz_pickle_scan fuzz_chunked fuzz_dcp fuzz_pickle_nesting)

if ! command -v c++ >/dev/null 2>&1; then
    echo "fuzz: no C++ compiler (libFuzzer is C++): install g++ (apt-get install g++)" >&2
    exit 1
fi

# Seed corpora once from real checkpoints (small files only); the pickle target gets their data.pkl.
if [ ! -d fuzz/corpus/fuzz_torchzip ] || [ -z "$(ls -A fuzz/corpus/fuzz_torchzip 2>/dev/null)" ] \
    || [ ! -d fuzz/corpus/fuzz_pickle_scan ] || [ -z "$(ls -A fuzz/corpus/fuzz_pickle_scan 2>/dev/null)" ]; then
    seeds="$(mktemp -d)"
    trap 'rm -rf "$seeds"' EXIT
    .venv/bin/python tests/python/checkpoint_make.py "$seeds" >/dev/null
    mkdir -p fuzz/corpus/fuzz_safetensors fuzz/corpus/fuzz_torchzip fuzz/corpus/fuzz_pickle_scan
    find "$seeds" -name '*.safetensors' -exec cp -t fuzz/corpus/fuzz_safetensors {} +
    n=0
    while IFS= read -r f; do
        n=$((n + 1)); cp "$f" "fuzz/corpus/fuzz_torchzip/seed$n"
        .venv/bin/python - "$f" "fuzz/corpus/fuzz_pickle_scan/seed$n" <<'PY' || true
import sys, zipfile
try:
    z = zipfile.ZipFile(sys.argv[1])
    name = next(n for n in z.namelist() if n.endswith("data.pkl"))
    open(sys.argv[2], "wb").write(z.read(name))
except Exception:
    pass
PY
    done < <(find "$seeds" \( -name '*.pt' -o -name '*.pth' -o -name '*.ckpt' -o -name '*.bin' \) ! -path '*/ref/*')
fi
# fuzz_chunked: the first byte picks the format (even: safetensors, odd: torch zip) and the chunk size.
if [ ! -d fuzz/corpus/fuzz_chunked ] || [ -z "$(ls -A fuzz/corpus/fuzz_chunked 2>/dev/null)" ]; then
    mkdir -p fuzz/corpus/fuzz_chunked
    n=0
    for f in fuzz/corpus/fuzz_safetensors/*; do
        [ -f "$f" ] || continue; n=$((n + 1)); { printf '\x06'; cat "$f"; } > "fuzz/corpus/fuzz_chunked/st$n"
    done
    for f in fuzz/corpus/fuzz_torchzip/seed*; do
        [ -f "$f" ] || continue; n=$((n + 1)); { printf '\x07'; cat "$f"; } > "fuzz/corpus/fuzz_chunked/pt$n"
    done
fi

# fuzz_dcp: DCP folders written by torch.distributed.checkpoint in one process (f32, f64, bf16 and
# integer tensors), packed as: selector byte, u32 length, .metadata, the data file.
if [ ! -d fuzz/corpus/fuzz_dcp ] || [ -z "$(ls -A fuzz/corpus/fuzz_dcp 2>/dev/null)" ]; then
    mkdir -p fuzz/corpus/fuzz_dcp
    .venv/bin/python - fuzz/corpus/fuzz_dcp <<'PY'
import os, struct, sys, tempfile, warnings
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.filesystem import FileSystemWriter
warnings.filterwarnings("ignore")
torch.manual_seed(0)
sds = [
    {"model": {"w": torch.randn(6, 5), "b": torch.zeros(5), "h": torch.randn(4, 3).to(torch.bfloat16)}},
    {"model": {"w": torch.randn(3, 7).double(), "n": torch.tensor(3)}},
]
for k, sd in enumerate(sds):
    with tempfile.TemporaryDirectory() as d:
        dcp.save(sd, storage_writer=FileSystemWriter(d, thread_count=1))
        meta = open(os.path.join(d, ".metadata"), "rb").read()
        data = open(os.path.join(d, "__0_0.distcp"), "rb").read()
        for sel in (3, 8):
            open(os.path.join(sys.argv[1], f"seed{k}-{sel}"), "wb").write(bytes([sel]) + struct.pack("<I", len(meta)) + meta + data)
PY
fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly' && cargo fuzz --version >/dev/null 2>&1; then
    mode=cargo-fuzz
    cargo +nightly fuzz build -O
else
    mode=stable
    host="$(rustc -vV | sed -n 's/^host: //p')"
    echo "fuzz: no nightly toolchain + cargo-fuzz: building with stable rustc and SanitizerCoverage (no ASan)"
    RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
        nice -n 19 cargo build --release --manifest-path fuzz/Cargo.toml --target-dir fuzz/target/stable --bins \
            --target "$host"  # with --target, RUSTFLAGS skip build scripts and proc macros (as cargo-fuzz does)
fi

for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    echo "fuzz: $t for ${secs}s ($mode)"
    start=$(date +%s)
    par=()
    # With -jobs libFuzzer writes fuzz-N.log files in the current folder (fuzz/); an earlier run's must
    # not be counted.
    rm -f fuzz/fuzz-*.log
    [ "$jobs" -gt 1 ] && par=(-jobs="$jobs" -workers="$jobs")
    log="fuzz/$t.log"
    if [ "$mode" = cargo-fuzz ]; then
        (cd fuzz && nice -n 19 cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
            -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 "${par[@]}" \
            -print_final_stats=1) >"$log" 2>&1 || { tail -n 30 "$log"; echo "fuzz: $t FAILED (see $log)"; exit 1; }
    else
        (cd fuzz && nice -n 19 "target/stable/$host/release/$t" "corpus/$t" \
            -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 "${par[@]}" \
            -print_final_stats=1) >"$log" 2>&1 || { tail -n 30 "$log"; echo "fuzz: $t FAILED (see $log)"; exit 1; }
    fi
    # Executions: with -jobs each job's fuzz-N.log (the main log repeats their final stats, so it
    # is not counted too); without, the main log. (grep's status must not end the script.)
    if [ "$jobs" -gt 1 ]; then counted=(fuzz/fuzz-*.log); else counted=("$log"); fi
    execs=$({ grep -h 'stat::number_of_executed_units' "${counted[@]}" 2>/dev/null || true; } | awk '{s += $2} END {print s + 0}')
    echo "fuzz: $t ran $(( $(date +%s) - start ))s without a crash: $execs executions"
done
