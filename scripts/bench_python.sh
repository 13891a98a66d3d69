#!/usr/bin/env bash
# Benchmark: the Python worker (python -m landscaped_worker, --backend python) against a bare PyTorch
# script and against the TorchScript worker, on the digits CNN of examples/train_digits.py and a tiny
# GPT-2 (tests/python/gpt2_make.py, built from its config):
#   - slice grid points/s: the Python worker on 1 worker with T threads and on T workers (landscaped's
#     default) vs a bare eager-PyTorch loop with T threads (same model, eval set, directions, batch);
#     the TorchScript worker on the same grid;
#   - seconds per Hessian-vector product through the worker protocol vs the same HVP in one bare PyTorch
#     process (CNN and GPT-2), the TorchScript worker's on the CNN; worker start-up and model load.
# Rounds alternate (BENCH_ROUNDS, default 3) and medians are compared, the machines being noisy.
# usage: scripts/bench_python.sh [GRID_N] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-15}"
T="${2:-2}"
K="${BENCH_HVPS:-10}"
ROUNDS="${BENCH_ROUNDS:-3}"
L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
WK="${LANDSCAPED_WORKER_BIN:-$(dirname "$L")/landscaped-worker}"
PY="$PWD/.venv/bin/python"
W="${BENCH_OUT:-$PWD/bench-out}/python"
[ -x "$L" ] && [ -x "$WK" ] || { echo "bench_python: build first: cargo build --release --workspace" >&2; exit 1; }
rm -rf "$W"; mkdir -p "$W"
"$PY" examples/train_digits.py --out "$W/run" --epochs 1 --threads "$T" > /dev/null
CK=$(ls "$W"/run/step-*.safetensors | sort -V | tail -n 1)
MD="$W/run/landscaped"
export LANDSCAPED_LOG=warn PYTHONPATH="$PWD/examples:$PWD/tests/python:$PWD/python"

# ls_slice DATA_DIR ARGS...: the grid-loop seconds of one landscaped slice.
ls_slice() {
    local d="$1"; shift
    rm -rf "$d"
    LANDSCAPED_DATA_DIR="$d" LANDSCAPED_WORKER="$WK" "$L" slice --checkpoint "$CK" --seed 3 --batch-size 256 \
        --x "-1:1:$N" --y "-1:1:$N" --threads "$T" "$@" > /dev/null 2> "$W/ls.err"
    sed -n 's/^computed [0-9]* points in \([0-9.]*\) s.*/\1/p' "$W/ls.err"
}
PYARGS=(--backend python --python "$PY" --factory landscape_factory:build)

# The bare loop: eager DigitsCNN with the checkpoint, the reference code's directions, the grid.
# py_loop [THREADS] [NICE]: the bare loop's grid seconds (default: T threads, the shell's priority).
py_loop() {
    nice -n "${2:-0}" "$PY" - "$CK" "$MD" "$N" "${1:-$T}" <<'PYEOF'
import sys, time
import torch, torch.nn.functional as F
from safetensors.torch import load_file
from train_digits import DigitsCNN
ck, md, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
m = DigitsCNN().eval()
m.load_state_dict({k.removeprefix("module."): v for k, v in load_file(ck).items()})
ev = load_file(f"{md}/eval.safetensors")
x, y = ev["inputs"].float(), ev["targets"].long()
params = [p for p in m.parameters()]
centre = [p.detach().clone() for p in params]
torch.manual_seed(3)
def direction():
    ds = [torch.randn(w.size()) for w in centre]
    for d, w in zip(ds, centre):
        if d.dim() <= 1: d.fill_(0)
        else:
            for df, wf in zip(d, w): df.mul_(wf.norm() / (df.norm() + 1e-10))
    return ds
dx, dy = direction(), direction()
xs = torch.linspace(-1, 1, n).tolist()
t0 = time.perf_counter()
for b in xs:
    for a in xs:
        with torch.no_grad():
            for p, c, d0, d1 in zip(params, centre, dx, dy):
                p.copy_(c + d0 * a + d1 * b)
        with torch.inference_mode():
            tot = 0.0
            for i in range(0, x.shape[0], 256):
                out = m(x[i:i+256]); yb = y[i:i+256]
                tot += F.cross_entropy(out, yb).item() * yb.shape[0]
                (out.argmax(1) == yb).sum().item()
print(time.perf_counter() - t0)
PYEOF
}

# Workers run at nice +10 (the sidecar yields to the trainer): the bare loop runs both at the shell's
# priority and at the workers' (nice 10), and with 1 thread (what each of the T workers has).
TS=(); P1=(); PN=(); BL=(); BLN=(); BL1=()
for r in $(seq 1 "$ROUNDS"); do
    ts=$(ls_slice "$W/d-ts" --model-dir "$MD")
    p1=$(ls_slice "$W/d-p1" "${PYARGS[@]}" --workers 1)
    pn=$(ls_slice "$W/d-pn" "${PYARGS[@]}")
    bl=$(py_loop)
    bln=$(py_loop "$T" 10)
    bl1=$(py_loop 1)
    TS+=("$ts"); P1+=("$p1"); PN+=("$pn"); BL+=("$bl"); BLN+=("$bln"); BL1+=("$bl1")
    printf 'round %s: torchscript workers %.2f s, python 1 worker %.2f s, python workers %.2f s, bare loop %.2f s (nice 10: %.2f s, 1 thread: %.2f s)\n' \
        "$r" "$ts" "$p1" "$pn" "$bl" "$bln" "$bl1"
done

# HVPs: the CNN through both workers and bare; the GPT-2 through the Python worker and bare.
"$PY" tests/python/gpt2_make.py "$W/gpt2" --power-iterations 0 > /dev/null 2>&1
GCK=$(ls -d "$W"/gpt2/checkpoint-* | tail -n 1)
PYW="$PY -m landscaped_worker"
CNN=$("$PY" scripts/bench_python_worker.py landscape_factory:build "$CK" 256 "$K" "$T" \
    "python={\"factory\":\"landscape_factory:build\",\"batch_size\":256,\"device\":\"cpu\",\"threads\":$T,\"checkpoint\":\"$CK\"}=$PYW" \
    "torchscript={\"model\":\"$MD/model.pt\",\"eval_data\":\"$MD/eval.safetensors\",\"batch_size\":256,\"device\":\"cpu\",\"threads\":$T}=$WK")
GPT=$("$PY" scripts/bench_python_worker.py gpt2_factory:build "$GCK" 4 "$K" "$T" \
    "python={\"factory\":\"gpt2_factory:build\",\"batch_size\":4,\"device\":\"cpu\",\"threads\":$T,\"checkpoint\":\"$GCK\"}=$PYW" 2>/dev/null)

"$PY" - "$N" "$T" "${TS[*]}" "${P1[*]}" "${PN[*]}" "${BL[*]}" "${BLN[*]}" "${BL1[*]}" "$CNN" "$GPT" <<'PYEOF'
import sys, json, statistics as st
n, t = int(sys.argv[1]), int(sys.argv[2])
ts, p1, pn, bl, bln, bl1 = ([float(v) for v in a.split()] for a in sys.argv[3:9])
cnn, gpt = json.loads(sys.argv[9]), json.loads(sys.argv[10])
cnn_py, cnn_ts, cnn_bare, g_py, g_bare = cnn["python"], cnn["torchscript"], cnn["bare"], gpt["python"], gpt["bare"]
pts = n * n
m = {k: st.median(v) for k, v in (("ts", ts), ("p1", p1), ("pn", pn), ("bl", bl), ("bln", bln), ("bl1", bl1))}
print(f"slice grid {n}x{n} = {pts} points, digits CNN, batch 256, {t} thread(s), medians of {len(ts)} rounds:")
print(f"  bare eager PyTorch loop, {t} threads:  {pts / m['bl']:7.1f} points/s (at nice 10 as the workers: {pts / m['bln']:.1f}; 1 thread: {pts / m['bl1']:.1f}, so {t} threads scale {m['bl1'] / m['bl']:.2f}x)")
print(f"  python worker, 1 worker x {t} threads: {pts / m['p1']:7.1f} points/s = {m['bl'] / m['p1']:.2f}x the bare loop ({m['bln'] / m['p1']:.2f}x at the same priority)")
print(f"  python workers, {t} x 1 thread:        {pts / m['pn']:7.1f} points/s = {m['bl'] / m['pn']:.2f}x the bare loop ({m['bln'] / m['pn']:.2f}x at the same priority; {m['bl1'] / m['pn']:.2f}x the 1-thread loop)")
print(f"  torchscript workers, {t} x 1 thread:   {pts / m['ts']:7.1f} points/s = {m['pn'] / m['ts']:.2f}x the python workers")
print(f"HVP (medians; the workers' and the bare process's products alternated), {t} thread(s):")
print(f"  digits CNN (d={cnn_py['dim']}): python worker {cnn_py['hvp'] * 1e3:.2f} ms, bare PyTorch {cnn_bare['hvp'] * 1e3:.2f} ms "
      f"= {cnn_py['hvp'] / cnn_bare['hvp']:.3f}x; torchscript worker {cnn_ts['hvp'] * 1e3:.2f} ms = {cnn_ts['hvp'] / cnn_py['hvp']:.2f}x the python worker")
print(f"  tiny GPT-2 (d={g_py['dim']}): python worker {g_py['hvp'] * 1e3:.2f} ms, bare PyTorch {g_bare['hvp'] * 1e3:.2f} ms "
      f"= {g_py['hvp'] / g_bare['hvp']:.3f}x")
print(f"worker start-up to handshake: python {cnn_py['startup']:.2f} s, torchscript {cnn_ts['startup']:.2f} s; "
      f"load_model: python {cnn_py['load_model']:.2f} s (CNN), {g_py['load_model']:.2f} s (GPT-2), torchscript {cnn_ts['load_model']:.2f} s")
PYEOF
