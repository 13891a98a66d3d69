"""A/B of two landscaped release binaries on the same machine in one invocation (issue 21: "benchmarks
don't regress beyond noise"): rounds alternate A and B so that drifting load hits both alike, and the
medians over rounds are compared as B/A ratios.

Measured per binary, whole processes:
- `ingest` of each checkpoint file given (page cache warmed by `cat` just before): wall, CPU seconds, peak RSS;
- the idle daemon's RSS with two watched runs (3 checkpoints each, from examples/train_digits.py), after
  its ingest has settled;
- `landscaped runs` through that daemon: median wall of 11 processes.

Usage: python scripts/bench_ab.py A_BIN B_BIN FILE [FILE ...]   (env BENCH_ROUNDS, default 3)
"""

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "python"))
from daemon_port import bound_port, rss_mb  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = os.path.join(ROOT, ".venv", "bin", "python")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def timed(cmd):
    """(wall s, cpu s, peak RSS MB) of one whole process."""
    out = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", *cmd], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    e, u, s, m = out.stderr.strip().splitlines()[-1].split()
    return float(e), float(u) + float(s), int(m) / 1024


def ingest(binary, path, work):
    data = os.path.join(work, "data")
    shutil.rmtree(data, ignore_errors=True)
    subprocess.run(["cat", path], stdout=subprocess.DEVNULL, check=True)
    return timed([binary, "--data-dir", data, "ingest", path, "--run", "ab", "--format", "csv"])


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read().decode()


def idle_daemon(binary, runs_root, work):
    """(idle RSS MB, median `runs` wall ms) of a daemon watching the two runs under runs_root."""
    data = os.path.join(work, "ddata")
    shutil.rmtree(data, ignore_errors=True)
    cfg = os.path.join(work, "ab.toml")
    runs = "".join(f'[[run]]\nname = "{n}"\nwatch = ["{runs_root}/{n}"]\n' for n in ("a", "b"))
    with open(cfg, "w") as f:
        f.write(f'data_dir = "{data}"\nlisten = "127.0.0.1:0"\nquiet_period_secs = 0.3\n' + runs)
    d = subprocess.Popen([binary, "daemon", "--config", cfg], stderr=subprocess.DEVNULL)
    try:
        port = bound_port(data, d)
        # Settled: both runs' processed counts non-zero and unchanged for 2 s.
        last, same = None, 0
        for _ in range(1200):
            m = get(port, "/metrics")
            now = sorted(line for line in m.splitlines() if line.startswith("landscaped_checkpoints_processed_total{"))
            same = same + 1 if now == last and len(now) >= 2 else 0
            if same >= 20:
                break
            last = now
            time.sleep(0.1)
        time.sleep(3.0)
        rss = rss_mb(d.pid)
        walls = []
        for _ in range(11):
            t0 = time.perf_counter()
            subprocess.run([binary, "--data-dir", data, "runs"], capture_output=True, check=True)
            walls.append(time.perf_counter() - t0)
        return rss, statistics.median(walls) * 1e3
    finally:
        d.terminate()
        try:
            d.wait(timeout=30)
        except subprocess.TimeoutExpired:
            d.kill()


def main():
    a, b, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    work = tempfile.mkdtemp(prefix="landscaped-ab-")
    runs_root = os.path.join(work, "runs")
    for n in ("a", "b"):
        subprocess.run(
            [PY, os.path.join(ROOT, "examples/train_digits.py"), "--out", f"{runs_root}/{n}", "--epochs", "3"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    with open("/proc/loadavg") as f:
        print(f"load before: {f.read().split()[:3]} ({os.cpu_count()} CPUs)")
    res = {("A", k): [] for k in files + ["idle", "runs"]}
    res.update({("B", k): [] for k in files + ["idle", "runs"]})
    for r in range(ROUNDS):
        order = [("A", a), ("B", b)] if r % 2 == 0 else [("B", b), ("A", a)]
        for f in files:
            for tag, binary in order:
                res[(tag, f)].append(ingest(binary, f, work))
        for tag, binary in order:
            rss, runs_ms = idle_daemon(binary, runs_root, work)
            res[(tag, "idle")].append(rss)
            res[(tag, "runs")].append(runs_ms)
    with open("/proc/loadavg") as f:
        print(f"load after: {f.read().split()[:3]}")
    print(f"A = {a}\nB = {b}\nmedians over {ROUNDS} alternating rounds:")
    for f in files:
        gb = os.path.getsize(f) / 1e9
        ma = [statistics.median(x[i] for x in res[("A", f)]) for i in range(3)]
        mb = [statistics.median(x[i] for x in res[("B", f)]) for i in range(3)]
        print(
            f"ingest {os.path.basename(f)} ({gb:.2f} GB): wall A {ma[0]:.3f} s B {mb[0]:.3f} s (B/A {mb[0] / ma[0]:.3f}); "
            f"CPU s/GB A {ma[1] / gb:.3f} B {mb[1] / gb:.3f} (B/A {mb[1] / ma[1]:.3f}); "
            f"peak RSS A {ma[2]:.1f} MB B {mb[2]:.1f} MB"
        )
    ia, ib = statistics.median(res[("A", "idle")]), statistics.median(res[("B", "idle")])
    ra, rb = statistics.median(res[("A", "runs")]), statistics.median(res[("B", "runs")])
    print(f"idle daemon RSS: A {ia:.1f} MB B {ib:.1f} MB (B/A {ib / ia:.3f})")
    print(f"`landscaped runs` through the daemon: A {ra:.1f} ms B {rb:.1f} ms (B/A {rb / ra:.3f})")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
