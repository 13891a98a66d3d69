#!/usr/bin/env bash
# Benchmark: loss-landscape grid points per second, landscaped (release) vs a Python/PyTorch loop doing the
# same evaluation (same TorchScript model, eval set, checkpoint, directions, batch size, thread count).
# The two are run in alternation, BENCH_ROUNDS times (default 3), and the medians compared, because the
# machines here are noisy. Two ratios: the grid loop alone (points per second once loaded; landscaped
# reports its own loop time), and the whole job (landscaped as a whole process: start-up, libtorch,
# store, progress; the Python loop from after `import torch`, model load included — conservative).
# Also the cost per grid point beyond the forward passes, measured on one thread and one worker.
# usage: scripts/bench_slice.sh [GRID_N] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-21}"
T="${2:-2}"
ROUNDS="${BENCH_ROUNDS:-3}"
L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
PY="$PWD/.venv/bin/python"
W="${BENCH_OUT:-$PWD/bench-out}/slice"
[ -x "$L" ] || { echo "bench_slice: build first: cargo build --release" >&2; exit 1; }
rm -rf "$W"; mkdir -p "$W"
"$PY" examples/train_digits.py --out "$W/run" --epochs 1 --threads "$T" > /dev/null
CK=$(ls "$W"/run/step-*.safetensors | sort -V | tail -n 1)
MD="$W/run/landscaped"
export LANDSCAPED_LOG=warn

# rust_slice DATA_DIR ARGS...: prints "whole_process_seconds grid_loop_seconds" of one landscaped slice.
rust_slice() {
    local d="$1"; shift
    rm -rf "$d"
    local t0 t1 loop
    t0=$(date +%s.%N)
    LANDSCAPED_DATA_DIR="$d" "$L" slice --checkpoint "$CK" --model-dir "$MD" --seed 3 --batch-size 256 \
        --persist-every 5 "$@" > /dev/null 2> "$W/rust.err"
    t1=$(date +%s.%N)
    loop=$(sed -n 's/^computed [0-9]* points in \([0-9.]*\) s.*/\1/p' "$W/rust.err")
    echo "$(echo "$t1 - $t0" | bc -l) ${loop:-nan}"
}

# The Python way: load the model and checkpoint, draw the reference code's directions, loop over the grid.
# Prints "job_seconds loop_seconds forward_seconds_per_point samples" (job: from after import torch, model
# load included; loop: the grid alone; forward passes alone: the weights left in place).
py_slice() {
    "$PY" - "$CK" "$MD" "$N" "$1" "$2" <<'PYEOF'
import sys, time
import torch, torch.nn.functional as F
from safetensors.torch import load_file
ck, md, n, threads, fwd_reps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
start = time.perf_counter()
m = torch.jit.load(f"{md}/model.pt").eval()
ev = load_file(f"{md}/eval.safetensors")
x, y = ev["inputs"].float(), ev["targets"].long()
sd = load_file(ck)
names = [k for k, _ in m.named_parameters()]
params = dict(m.named_parameters())
bufs = dict(m.named_buffers())
with torch.no_grad():
    for k, v in sd.items():
        k2 = k
        for p in ("module.", "model.", "_orig_mod."):
            k2 = k2[len(p):] if k2.startswith(p) else k2
        if k2 in params: params[k2].copy_(v)
        elif k2 in bufs and v.is_floating_point(): bufs[k2].copy_(v)
centre = [params[k].detach().clone() for k in names]
torch.manual_seed(3)
def direction():
    ds = [torch.randn(w.size()) for w in centre]
    for d, w in zip(ds, centre):
        if d.dim() <= 1: d.fill_(0)
        else:
            for df, wf in zip(d, w): df.mul_(wf.norm() / (df.norm() + 1e-10))
    return ds
dx, dy = direction(), direction()
def evaluate():
    tot = 0.0; correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], 256):
            out = m(x[i:i+256]); yb = y[i:i+256]
            tot += F.cross_entropy(out, yb).item() * yb.shape[0]
            correct += (out.argmax(1) == yb).sum().item()
    return tot / x.shape[0], correct / x.shape[0]
xs = torch.linspace(-1, 1, n).tolist(); ys = torch.linspace(-1, 1, n).tolist()
Z = []
loop_start = time.perf_counter()
for b in ys:
    for a in xs:
        with torch.no_grad():
            for p, c, d0, d1 in zip((params[k] for k in names), centre, dx, dy):
                p.copy_(c + d0 * a + d1 * b)
        Z.append(evaluate())
end = time.perf_counter()
grid, loop = end - start, end - loop_start
fwd = 0.0
if fwd_reps > 0:
    f0 = time.perf_counter()
    for _ in range(fwd_reps): evaluate()
    fwd = (time.perf_counter() - f0) / fwd_reps
print(grid, loop, fwd, x.shape[0])
PYEOF
}

RS=(); RL=(); PYS=(); PYL=()
for r in $(seq 1 "$ROUNDS"); do
    read -r job loop < <(rust_slice "$W/data" --x "-1:1:$N" --y "-1:1:$N" --threads "$T")
    RS+=("$job"); RL+=("$loop")
    read -r g l _ S < <(py_slice "$T" 0)
    PYS+=("$g"); PYL+=("$l")
    echo "round $r: landscaped job $job s (grid $loop s), python job $g s (grid $l s)"
done
grep -o "[0-9]* worker.*thread(s)" "$W/rust.err" | sed 's/^/landscaped ran on /' || true
# Cost beyond the forward passes: one thread, one worker, against the forward passes alone there.
# Alternated like the rounds above; medians.
read -r FIXED _ < <(rust_slice "$W/data1" --x "0:0:1" --threads 1 --workers 1)
# The protocol's own cost per point: the same set_point + evaluation inside one process
# (landscaped-worker bench), no protocol.
WK="$(dirname "$L")/landscaped-worker"
ONES=(); FWDS=(); INS=()
for r in $(seq 1 "$ROUNDS"); do
    read -r _ one < <(rust_slice "$W/data1" --x "-1:1:$N" --y "-1:1:$N" --threads 1 --workers 1)
    read -r _ _ fwd _ < <(py_slice 1 20)
    INS+=("$("$WK" bench "$MD" "$CK" 0 256 20 1 | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["seconds_per_point"])')")
    ONES+=("$one"); FWDS+=("$fwd")
done
INPROC=$(printf '%s\n' "${INS[@]}" | sort -g | sed -n "$(( (ROUNDS + 1) / 2 ))p")
ONE=$(printf '%s\n' "${ONES[@]}" | sort -g | sed -n "$(( (ROUNDS + 1) / 2 ))p")
FWD1=$(printf '%s\n' "${FWDS[@]}" | sort -g | sed -n "$(( (ROUNDS + 1) / 2 ))p")

"$PY" - "$N" "$T" "$S" "$FIXED" "$ONE" "$FWD1" "$INPROC" "${RS[*]}" "${RL[*]}" "${PYS[*]}" "${PYL[*]}" <<'PYEOF'
import sys, statistics as st
n, t, samples = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
fixed, one, fwd1, inproc = map(float, sys.argv[4:8])
rs, rl, ps, pl = ([float(v) for v in a.split()] for a in sys.argv[8:12])
pts = n * n
print(f"grid {n}x{n} = {pts} points, {samples} eval samples, batch 256, {t} thread(s), median of {len(rs)} rounds")
for what, r, p in (("grid loop", rl, pl), ("whole job", rs, ps)):
    a, b = st.median(r), st.median(p)
    print(f"{what:9}: landscaped {a:6.2f} s {pts / a:7.1f} points/s; python/pytorch {b:6.2f} s {pts / b:7.1f} points/s; "
          f"ratio {b / a:.2f}x (rounds: {', '.join(f'{y / x:.2f}x' for x, y in zip(r, p))})")
print("  (job: landscaped as a whole process incl. start-up; python from after import torch, model load included)")
per1 = one / pts
print(f"one thread, one worker (medians): {per1 * 1e3:.3f} ms per point; forward passes alone {fwd1 * 1e3:.3f} ms; "
      f"beyond the forward passes {(per1 - fwd1) * 1e3:+.3f} ms ({(per1 - fwd1) / per1 * 100:+.1f} %); "
      f"fixed cost of a landscaped run (start, load, centre, one point) {fixed:.2f} s")
print(f"protocol overhead per point: {(per1 - inproc) * 1e6:+.0f} us ({per1 * 1e3:.3f} ms through one worker vs "
      f"{inproc * 1e3:.3f} ms for set_point + evaluation inside one process, landscaped-worker bench)")
PYEOF
