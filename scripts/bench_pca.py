"""Driver for scripts/bench_pca.sh: trajectory PCA, landscaped (streaming Gram, release build) against
scikit-learn (whole matrix in memory), on the same checkpoints, at several sizes, in one run.
Prints wall time and peak RSS of each process and their ratios, and checks the answers agree.

usage: bench_pca.py BIN WORKDIR N1xD1 [N2xD2 ...]
"""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable


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
    print(f"idle peak RSS: landscaped --help {ours_idle:.0f} MiB (libtorch + CUDA libraries loaded at start), "
          f"python with numpy+sklearn imported {py_idle:.0f} MiB")
    print("time ratio and memory ratio = sklearn / landscaped (whole-process wall time and peak RSS); "
          "'above idle' subtracts each process's idle RSS")
    hdr = (f"{'n x d':>16} {'ours s':>7} {'sk f32 s':>8} {'sk f64 s':>8} {'t ratio f32/f64':>15} "
           f"{'ours MiB':>8} {'sk f32':>7} {'sk f64':>7} {'mem ratio f32/f64':>17} {'above idle f32':>14} "
           f"{'archive s':>9} {'|dratio| f64':>12} {'f32':>8}")
    print(hdr)
    for size in sizes:
        n, d = (int(float(x)) for x in size.lower().split("x"))
        base = os.path.join(work, f"{n}x{d}")
        shutil.rmtree(base, ignore_errors=True)
        ck, data = os.path.join(base, "ck"), os.path.join(base, "data")
        make(ck, n, d)
        env = dict(os.environ, LANDSCAPED_DATA_DIR=data, LANDSCAPED_LOG="warn")
        a_wall, _, _, err = timed([binary, "trajectory", "--run", "b", "--import", ck], env)
        assert "error" not in err, err
        ours, ours_mem, out, err = timed([binary, "--format", "json", "pca", "--run", "b"], env)
        assert out.strip(), err
        ours_ratio = [r["explained_variance_ratio"] for r in json.loads(out)]
        res = {}
        for dt in ("float32", "float64"):
            ref_json = os.path.join(base, f"ref_{dt}.json")
            wall, mem, _, err = timed([PY, os.path.join(HERE, "bench_pca_sklearn.py"), ck, "2", dt, ref_json])
            assert os.path.exists(ref_json), err
            ref = json.load(open(ref_json))
            dr = max(abs(a - b) for a, b in zip(ours_ratio, ref["explained_variance_ratio"]))
            res[dt] = (wall, mem, dr)
        (w32, m32, d32), (w64, m64, d64) = res["float32"], res["float64"]
        above = (m32 - py_idle) / max(ours_mem - ours_idle, 1.0)
        print(f"{n:>5} x {d:>9,} {ours:7.2f} {w32:8.2f} {w64:8.2f} {w32 / ours:7.1f}x/{w64 / ours:5.1f}x "
              f"{ours_mem:8.0f} {m32:7.0f} {m64:7.0f} {m32 / ours_mem:8.1f}x/{m64 / ours_mem:6.1f}x "
              f"{above:13.0f}x {a_wall:9.2f} {d64:12.1e} {d32:8.1e}", flush=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
