#!/usr/bin/env bash
# Benchmark: loss-landscape grid points per second, landscaped (release) vs a Python/PyTorch loop doing the
# same evaluation (same TorchScript model, eval set, checkpoint, directions, batch size, thread count), in
# one run. Also the cost per grid point beyond the forward passes (moving the weights, bookkeeping, store).
# usage: scripts/bench_slice.sh [GRID_N] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-21}"
T="${2:-2}"
L="${LANDSCAPED_BIN:-$PWD/target/release/landscaped}"
PY="$PWD/.venv/bin/python"
W="${BENCH_OUT:-$PWD/bench-out}/slice"
[ -x "$L" ] || { echo "bench_slice: build first: cargo build --release" >&2; exit 1; }
rm -rf "$W"; mkdir -p "$W"
"$PY" examples/train_digits.py --out "$W/run" --epochs 1 --threads "$T" > /dev/null
CK=$(ls "$W"/run/step-*.safetensors | sort -V | tail -n 1)
MD="$W/run/landscaped"
export LANDSCAPED_DATA_DIR="$W/data" LANDSCAPED_LOG=warn

t0=$(date +%s.%N)
"$L" slice --checkpoint "$CK" --model-dir "$MD" --x "-1:1:$N" --y "-1:1:$N" --seed 3 --threads "$T" \
    --batch-size 256 --persist-every 5 > "$W/rust.txt"
t1=$(date +%s.%N)
"$L" slice --checkpoint "$CK" --model-dir "$MD" --x "0:0:1" --seed 4 --threads "$T" --batch-size 256 > /dev/null
t2=$(date +%s.%N)

"$PY" - "$CK" "$MD" "$N" "$T" "$t0" "$t1" "$t2" <<'PYEOF'
import sys, time
import torch, torch.nn.functional as F
from safetensors.torch import load_file
ck, md, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t0, t1, t2 = map(float, sys.argv[5:8])
torch.set_num_threads(threads)
for fn in ("_set_graph_executor_optimize", "_jit_set_graph_executor_optimize"):
    if hasattr(torch._C, fn):  # landscaped runs with the graph optimizer off too
        getattr(torch._C, fn)(False)
        break
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
for b in ys:
    for a in xs:
        with torch.no_grad():
            for p, c, d0, d1 in zip((params[k] for k in names), centre, dx, dy):
                p.copy_(c + d0 * a + d1 * b)
        Z.append(evaluate())
end = time.perf_counter()
# Forward passes alone (the same evaluation with the weights left in place), per point.
reps = 20
f0 = time.perf_counter()
for _ in range(reps): evaluate()
fwd = (time.perf_counter() - f0) / reps
pts = n * n
py_rate = pts / (end - start)
rust_total = t1 - t0
one_point = t2 - t1  # load + centre + one grid point: the fixed cost
rust_grid = max(rust_total - one_point, 1e-9)
rust_per_point = rust_grid / max(pts - 1, 1)
rs_rate = pts / rust_total
print(f"grid {n}x{n} = {pts} points, {x.shape[0]} eval samples, batch 256, {threads} thread(s)")
print(f"python/pytorch loop : {end - start:7.2f} s  {py_rate:8.1f} points/s (incl. load)")
print(f"landscaped (release): {rust_total:7.2f} s  {rs_rate:8.1f} points/s (incl. load, store, progress)")
print(f"ratio landscaped/python: {rs_rate / py_rate:.2f}x")
print(f"per point: landscaped {rust_per_point*1e3:.3f} ms; forward passes alone {fwd*1e3:.3f} ms; "
      f"beyond the forward passes {max(rust_per_point - fwd, 0)*1e3:.3f} ms ({max(rust_per_point - fwd, 0)/rust_per_point*100:.1f} %)")
PYEOF
