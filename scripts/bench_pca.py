"""Driver for scripts/bench_pca.sh: trajectory PCA, landscaped (streaming Gram, release build) against
scikit-learn (whole matrix in memory) with its default solver ("auto": randomized SVD here) and with
svd_solver="full" beside it, each in float32 and float64, on the same checkpoints, at several sizes, in one
run. Prints wall time and peak RSS of each process and their ratios (sklearn / landscaped), and the largest
difference in explained-variance ratio.

usage: bench_pca.py BIN WORKDIR N1xD1 [N2xD2 ...]
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
ROUNDS = int(os.environ.get("BENCH_REPEAT", "3"))


def make(ckdir, n, d, seed=0):
    """n checkpoints of d parameters in 4 tensors: a random walk with a rank-2 drift."""
    rng = np.random.default_rng(seed)
    os.makedirs(ckdir, exist_ok=True)
    rows = 1000
    sizes = [d // 2, d // 4, d // 8, d - d // 2 - d // 4 - d // 8]
    shapes = [(s // rows, rows) if s % rows == 0 else (s,) for s in sizes]
    theta = [rng.standard_normal(s, dtype=np.float32) * 0.1 for s in shapes]
    d1 = [rng.standard_normal(s, dtype=np.float32) * 0.01 for s in shapes]
    d2 = [rng.standard_normal(s, dtype=np.float32) * 0.005 for s in shapes]
    for i in range(n):
        t = i / max(n - 1, 1)
        for j in range(4):
            theta[j] += rng.standard_normal(shapes[j], dtype=np.float32) * 0.001
        sd = {
            f"layer{j}.weight": theta[j] + np.float32(3 * t) * d1[j] + np.float32(np.sin(3 * t)) * d2[j]
            for j in range(4)
        }
        save_file(sd, os.path.join(ckdir, f"step_{100 * (i + 1)}.safetensors"))


def timed(cmd, env=None):
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, _, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    out, err = p.communicate()
    if p.returncode not in (0, None) and ru is None:
        pass
    return wall, ru.ru_maxrss / 1024.0, out.decode(), err.decode()  # MiB (ru_maxrss is KiB on Linux)


def idle_rss(cmd):
    return timed(cmd)[1]


def main():
    binary, work, sizes = sys.argv[1], sys.argv[2], sys.argv[3:]
    ours_idle = idle_rss([binary, "--help"])
    py_idle = idle_rss([PY, "-c", "import numpy, sklearn.decomposition, safetensors.numpy"])
    print(f"load before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print(f"idle peak RSS: landscaped --help {ours_idle:.0f} MiB, python with numpy+sklearn imported {py_idle:.0f} MiB")
    print(
        "ratios = sklearn / landscaped, whole-process wall time and peak RSS; 'auto' is scikit-learn's default "
        "svd_solver, 'full' the exact LAPACK one; |dratio| the largest explained-variance-ratio difference"
    )
    contenders = [("auto", "float32"), ("auto", "float64"), ("full", "float32"), ("full", "float64")]
    for size in sizes:
        n, d = (int(float(x)) for x in size.lower().split("x"))
        base = os.path.join(work, f"{n}x{d}")
        shutil.rmtree(base, ignore_errors=True)
        ck, data = os.path.join(base, "ck"), os.path.join(base, "data")
        make(ck, n, d)
        env = dict(os.environ, LANDSCAPED_DATA_DIR=data, LANDSCAPED_LOG="warn")
        a_wall, _, _, err = timed([binary, "trajectory", "--run", "b", "--import", ck], env)
        assert "error" not in err, err
        walls, mems, drs = {c: [] for c in ["ours"] + contenders}, {c: [] for c in ["ours"] + contenders}, {}
        for _ in range(ROUNDS):  # alternated rounds, medians compared
            ours, ours_mem, out, err = timed([binary, "--format", "json", "pca", "--run", "b"], env)
            assert out.strip(), err
            ours_ratio = [r["explained_variance_ratio"] for r in json.loads(out)]
            walls["ours"].append(ours)
            mems["ours"].append(ours_mem)
            for solver, dt in contenders:
                ref_json = os.path.join(base, f"ref_{solver}_{dt}.json")
                cmd = [PY, os.path.join(HERE, "bench_pca_sklearn.py"), ck, "2", dt, ref_json, solver]
                wall, mem, _, err = timed(cmd)
                assert os.path.exists(ref_json), err
                ref = json.load(open(ref_json))
                drs[(solver, dt)] = max(abs(a - b) for a, b in zip(ours_ratio, ref["explained_variance_ratio"]))
                walls[(solver, dt)].append(wall)
                mems[(solver, dt)].append(mem)
        med = statistics.median
        ours, ours_mem = med(walls["ours"]), max(mems["ours"])
        print(
            f"{n} x {d:,} (medians of {ROUNDS} alternated rounds; peak RSS the largest): landscaped {ours:.2f} s, "
            f"{ours_mem:.0f} MiB peak RSS (archiving the checkpoints, done once at ingest: {a_wall:.2f} s)"
        )
        for solver, dt in contenders:
            wall, mem = med(walls[(solver, dt)]), max(mems[(solver, dt)])
            print(
                f"  sklearn {solver:>4} {dt}: {wall:6.2f} s, {mem:6.0f} MiB; time ratio {wall / ours:5.1f}x, "
                f"memory ratio {mem / ours_mem:5.1f}x; |dratio| {drs[(solver, dt)]:.1e}",
                flush=True,
            )
        shutil.rmtree(base, ignore_errors=True)
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
