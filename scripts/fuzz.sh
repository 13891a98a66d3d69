#!/usr/bin/env bash
# Fuzz the checkpoint readers (cargo-fuzz, libFuzzer): fuzz_safetensors and fuzz_torchzip.
# Each target runs FUZZ_SECONDS (default 300) at low priority, seeded with checkpoints PyTorch writes
# (tests/python/checkpoint_make.py). Needs a nightly toolchain and cargo-fuzz; says how to get them.
# Usage: scripts/fuzz.sh [TARGET...]   env: FUZZ_SECONDS, FUZZ_JOBS (parallel jobs per target, default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECONDS:-300}"
jobs="${FUZZ_JOBS:-1}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_safetensors fuzz_torchzip)

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz: no nightly toolchain; run: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz missing; run: cargo install cargo-fuzz" >&2
    exit 1
fi

# Seed corpora once from real checkpoints (small files only).
if [ ! -d fuzz/corpus/fuzz_torchzip ] || [ -z "$(ls -A fuzz/corpus/fuzz_torchzip 2>/dev/null)" ]; then
    seeds="$(mktemp -d)"
    trap 'rm -rf "$seeds"' EXIT
    .venv/bin/python tests/python/checkpoint_make.py "$seeds" >/dev/null
    mkdir -p fuzz/corpus/fuzz_safetensors fuzz/corpus/fuzz_torchzip
    find "$seeds" -name '*.safetensors' -exec cp -t fuzz/corpus/fuzz_safetensors {} +
    n=0
    while IFS= read -r f; do
        n=$((n + 1)); cp "$f" "fuzz/corpus/fuzz_torchzip/seed$n"
    done < <(find "$seeds" \( -name '*.pt' -o -name '*.pth' -o -name '*.ckpt' -o -name '*.bin' \) ! -path '*/ref/*')
fi

cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    echo "fuzz: $t for ${secs}s"
    start=$(date +%s)
    par=()
    # With -jobs libFuzzer writes fuzz-N.log files in the current folder; keep them in fuzz/.
    [ "$jobs" -gt 1 ] && par=(-jobs="$jobs" -workers="$jobs")
    (cd fuzz && nice -n 19 cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 "${par[@]}" \
        -print_final_stats=1 2>&1 | tail -n 8)
    echo "fuzz: $t ran $(( $(date +%s) - start ))s without a crash"
done
