#!/usr/bin/env python3
"""Optimizer-state ingest speed vs `cat` of the same file (page cache warm), and its peak memory.

usage: optimizer_bench.py LANDSCAPED OUT [MIB]   (env BENCH_OPT_BEFORE: a second landscaped binary, e.g.
an older build, measured in the same invocation, rounds alternated, against the same `cat`)

Writes OUT/with.pt = torch.save({"model": tiny, "optimizer": AdamW state of MIB MiB of exp_avg +
exp_avg_sq}) and OUT/without.pt (the same without the optimizer). Optimizer-state ingest time is
`landscaped ingest with.pt` minus `landscaped ingest without.pt` (same process start, store and weights),
best of 3; the baseline is `cat with.pt > /dev/null`, best of 3, after a warm-up read. Prints the
throughputs, their ratio (the issue asks >= 0.3x), the optimizer state's CPU seconds (user + system) per
GB and the ingest's peak RSS against the state's size, for each binary.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

L, OUT = sys.argv[1], sys.argv[2]
MIB = int(sys.argv[3]) if len(sys.argv) > 3 else 256


def make():
    """Run in its own process (--make), so that this one never holds torch's memory: a child's
    peak RSS counts its parent's pages before exec."""
    import torch

    os.makedirs(OUT, exist_ok=True)
    n = MIB * (1 << 20) // 8  # f32 elements per state tensor kind (exp_avg + exp_avg_sq = MIB MiB)
    side = 2048
    params = [torch.nn.Parameter(torch.zeros(side, side)) for _ in range(max(1, n // (side * side)))]
    opt = torch.optim.AdamW(params, lr=1e-3)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    tiny = {"w": torch.randn(4, 4)}
    torch.save({"model": tiny, "optimizer": opt.state_dict()}, os.path.join(OUT, "with.pt"))
    torch.save({"model": tiny}, os.path.join(OUT, "without.pt"))


def timed(cmd):
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t
    if status != 0:
        sys.exit(f"failed: {cmd}: {p.stderr.read().decode()}")
    return dt, ru.ru_maxrss * 1024, ru.ru_utime + ru.ru_stime


def ingest(binary, name, step):
    data = tempfile.mkdtemp(dir=OUT)
    try:
        return timed(
            [
                binary,
                "--data-dir",
                data,
                "ingest",
                "--run",
                "b",
                "--step",
                str(step),
                "--no-archive",
                "--no-distances",
                os.path.join(OUT, name),
            ]
        )
    finally:
        shutil.rmtree(data)


if L == "--make":
    make()
    sys.exit(0)
subprocess.run([sys.executable, __file__, "--make", OUT, str(MIB)], check=True)
path = os.path.join(OUT, "with.pt")
size = os.path.getsize(path)
timed(["cat", path])  # warm the page cache
cat = min(timed(["sh", "-c", f"cat {path} > /dev/null"])[0] for _ in range(3))
binaries = [("this build", L)]
if os.environ.get("BENCH_OPT_BEFORE"):
    binaries.insert(0, ("before", os.environ["BENCH_OPT_BEFORE"]))
runs = {label: ([], []) for label, _ in binaries}
for i in range(3):  # rounds alternated between the binaries
    for label, binary in binaries:
        runs[label][0].append(ingest(binary, "with.pt", i))
        runs[label][1].append(ingest(binary, "without.pt", i))
print(f"optimizer state: {size / 2**20:.0f} MiB (torch.save file), load: {os.getloadavg()[0]:.2f}")
print(f"cat (warm):              {cat:.3f} s  {size / cat / 2**20:8.0f} MiB/s")
for label, _ in binaries:
    with_, without = runs[label]
    t_opt = min(t for t, _, _ in with_) - min(t for t, _, _ in without)
    cpu = min(c for _, _, c in with_) - min(c for _, _, c in without)
    rss = max(r for _, r, _ in with_)
    print(f"[{label}]")
    print(
        f"  optimizer-state ingest:  {t_opt:.3f} s  {size / t_opt / 2**20:8.0f} MiB/s  (with {min(t for t, _, _ in with_):.3f} s - without {min(t for t, _, _ in without):.3f} s)"
    )
    print(f"  ratio ingest/cat: {cat / t_opt:.2f}x (issue 22: >= 0.3x)")
    print(f"  CPU (user + system) of the optimizer state: {cpu:.3f} s = {cpu / (size / 1e9):.2f} CPU s/GB")
    print(f"  peak RSS of the ingest: {rss / 2**20:.0f} MiB = {rss / size:.2f} x the state's size")
