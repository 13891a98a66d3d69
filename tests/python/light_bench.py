"""The sidecar's own footprint (printed, not asserted; scripts/bench_light.sh runs it on the release build):

1. idle daemon: RSS and CPU with two watched runs that have checkpoints (target RSS < 30 MB);
2. `landscaped runs` as a whole process, on the store of 1 (opened directly) and through the running
   daemon (which holds the store): median wall time and peak RSS (targets < 20 ms, < 15 MB);
3. worker start-up: `landscaped info` (start landscaped-worker, handshake, stop) median wall time;
4. the sidecar's cost to a trainer: examples/train_digits.py's wall time alone against the same training
   while the daemon watches it with PCA after every checkpoint, a PCA-plane slice every 2nd and sharpness
   every 4th (job defaults otherwise), and with the layer-spectra job at its defaults (every checkpoint),
   alternated BENCH_ROUNDS times, medians (target <= 5 % slower each).

BENCH_TRAINER_ONLY=1 runs part 4 alone (=spectra: only its spectra contender). Every figure is printed with a ratio against a baseline measured in the same invocation: the idle RSS
against a bare Python process that has imported torch and sleeps (the least a Python sidecar holds), the
CLI's wall time and peak RSS against `python -c pass` (the least any Python CLI costs), the worker start-up
against `python -c "import torch"` (the least a Python worker's start-up costs).

usage: light_bench.py LANDSCAPED [EPOCHS]
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from daemon_port import bound_port, cpu_seconds, rss_mb

BIN = sys.argv[1]
EPOCHS = int(sys.argv[2]) if len(sys.argv) > 2 else 20
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = sys.executable
ENV = {**os.environ, "LANDSCAPED_LOG": "warn"}


def get(port, path):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2).read().decode()
    except OSError:
        return ""


def metric(text, key):
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return None


def start_daemon(root, config_body):
    cfg = os.path.join(root, "landscaped.toml")
    with open(cfg, "w") as f:
        f.write(f'data_dir = "{root}/data"\nlisten = "127.0.0.1:0"\nquiet_period_secs = 0.3\n' + config_body)
    d = subprocess.Popen([BIN, "daemon", "--config", cfg], stderr=open(os.path.join(root, "daemon.log"), "w"), env=ENV)
    port = bound_port(os.path.join(root, "data"), d)
    for _ in range(600):
        if '"ready":true' in get(port, "/healthz"):
            return d, port
        time.sleep(0.05)
    d.kill()
    raise SystemExit(f"daemon did not become ready; see {root}/daemon.log")


def stop(d):
    d.terminate()
    try:
        d.wait(timeout=30)
    except subprocess.TimeoutExpired:
        d.kill()


def timed_runs(args, n=21):
    """Median wall seconds and the peak RSS (MB) of `landscaped ARGS` as whole processes."""
    times, peaks = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        out = subprocess.run(["/usr/bin/time", "-f", "%M", BIN, *args], env=ENV, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if out.returncode != 0:
            raise SystemExit(f"landscaped {' '.join(args)} failed: {out.stderr}")
        peaks.append(int(out.stderr.strip().splitlines()[-1]) / 1024)
    return statistics.median(times), max(peaks)


def py_timed(code, n=21):
    """Median wall seconds and the peak RSS (MB) of `python -c CODE` as whole processes."""
    times, peaks = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        out = subprocess.run(["/usr/bin/time", "-f", "%M", PY, "-c", code], capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        peaks.append(int(out.stderr.strip().splitlines()[-1]) / 1024)
    return statistics.median(times), max(peaks)


def python_torch_idle_rss():
    """RSS (MB) of a Python process that has imported torch and sleeps."""
    p = subprocess.Popen(
        [PY, "-c", "import torch, time; print('ready', flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True
    )
    try:
        p.stdout.readline()
        time.sleep(1.0)
        return rss_mb(p.pid)
    finally:
        p.kill()
        p.wait()


def train(out):
    t0 = time.perf_counter()
    subprocess.run(
        [PY, os.path.join(ROOT, "examples/train_digits.py"), "--out", out, "--epochs", str(EPOCHS), "--threads", "2"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def footprint(root):
    """Parts 1-3: the idle daemon, `landscaped runs`, the worker start-up."""
    py_torch_rss = python_torch_idle_rss()
    py_pass_wall, py_pass_peak = py_timed("pass")
    py_torch_wall, _ = py_timed("import torch", n=5)
    print(
        f"baselines: idle python with torch imported RSS {py_torch_rss:.1f} MB; `python -c pass` "
        f"{py_pass_wall * 1e3:.1f} ms, peak RSS {py_pass_peak:.1f} MB; `python -c 'import torch'` {py_torch_wall * 1e3:.0f} ms"
    )
    # Two runs with a few checkpoints each.
    for name in ("a", "b"):
        subprocess.run(
            [PY, os.path.join(ROOT, "examples/train_digits.py"), "--out", f"{root}/{name}", "--epochs", "3"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    runs = "".join(f'[[run]]\nname = "{n}"\nwatch = ["{root}/{n}"]\n' for n in ("a", "b"))
    d, port = start_daemon(root, runs)
    try:
        for _ in range(600):
            m = get(port, "/metrics")
            if all(metric(m, f'landscaped_checkpoints_processed_total{{run="{n}"}}') == 3 for n in ("a", "b")):
                break
            time.sleep(0.1)
        time.sleep(2.0)
        c0, t0 = cpu_seconds(d.pid), time.perf_counter()
        time.sleep(10)
        cpu = (cpu_seconds(d.pid) - c0) / (time.perf_counter() - t0) * 100
        rss = rss_mb(d.pid)
        print(
            f"idle daemon, two watched runs (3 checkpoints each): RSS {rss:.1f} MB (target < 30; "
            f"idle python+torch / daemon {py_torch_rss / rss:.1f}x), CPU {cpu:.3f} % of one core over 10 s"
        )
        wall, peak = timed_runs(["--data-dir", f"{root}/data", "runs"])
        print(
            f"`landscaped runs` through the running daemon: {wall * 1e3:.1f} ms, peak RSS {peak:.1f} MB "
            f"(median of 21 whole processes; targets < 20 ms, < 15 MB; `python -c pass` / this: "
            f"wall {py_pass_wall / wall:.2f}x, peak RSS {py_pass_peak / peak:.2f}x)"
        )
    finally:
        stop(d)
    wall, peak = timed_runs(["--data-dir", f"{root}/data", "runs"])
    print(
        f"`landscaped runs` opening the store itself: {wall * 1e3:.1f} ms, peak RSS {peak:.1f} MB "
        f"(`python -c pass` / this: wall {py_pass_wall / wall:.2f}x, peak RSS {py_pass_peak / peak:.2f}x)"
    )
    wall, peak = timed_runs(["--data-dir", f"{root}/data", "info"], n=5)
    print(
        f"worker start-up (`landscaped info`: start landscaped-worker, handshake, stop): {wall * 1e3:.0f} ms, "
        f"peak RSS of landscaped {peak:.1f} MB (`python -c 'import torch'` / this: wall {py_torch_wall / wall:.2f}x)"
    )


def main():
    root = tempfile.mkdtemp(prefix="landscaped-light-")
    if not os.environ.get("BENCH_TRAINER_ONLY"):
        footprint(root)
    # The trainer's cost: alone, watched with the PCA/slice/sharpness jobs, watched with the spectra job at
    # its defaults (every checkpoint, 1 thread), alternated, medians.
    contenders = {
        "pca/slice/sharpness": (
            lambda ck: (
                f'[run.pca]\nevery = 1\ncomponents = 2\n[run.slice]\nevery = 2\ndirs = "pca"\n'
                f'model_dir = "{ck}/landscaped"\n[run.sharpness]\nevery = 4\nmodel_dir = "{ck}/landscaped"\n'
            ),
            ("pca", "slice", "sharpness"),
        ),
        "spectra": (lambda ck: "[run.spectra]\n", ("spectra",)),
    }
    only = os.environ.get("BENCH_TRAINER_ONLY", "")
    contenders = {k: v for k, v in contenders.items() if only in ("", "1") or k == only}
    alone, watched = [], {k: [] for k in contenders}
    for r in range(ROUNDS):
        alone.append(train(f"{root}/alone{r}"))
        line = f"round {r + 1}: training alone {alone[-1]:.2f} s (load {os.getloadavg()[0]:.2f})"
        for label, (jobs, names) in contenders.items():
            tag = label.replace("/", "-")
            ck = f"{root}/watched-{tag}{r}"
            os.makedirs(ck)
            os.makedirs(f"{root}/d-{tag}{r}")
            d, port = start_daemon(f"{root}/d-{tag}{r}", f'[[run]]\nname = "t"\nwatch = ["{ck}"]\n' + jobs(ck))
            try:
                watched[label].append(train(ck))
                m = get(port, "/metrics")
                runs_ok = {
                    job: sum(
                        float(x.split()[-1])
                        for x in m.splitlines()
                        if x.startswith(f'landscaped_job_runs_total{{job="{job}",outcome="ok"')
                    )
                    for job in names
                }
            finally:
                stop(d)
            line += f"; with {label} {watched[label][-1]:.2f} s (jobs completed during it: {runs_ok})"
        print(line)
    a = statistics.median(alone)
    for label, times in watched.items():
        w = statistics.median(times)
        print(
            f"trainer ({EPOCHS} epochs of examples/train_digits.py, 2 threads, {ROUNDS} rounds alternated): alone "
            f"{a:.2f} s, with the daemon watching and running the {label} job(s) {w:.2f} s: "
            f"{(w / a - 1) * 100:+.1f} % (target <= 5 %; load after {os.getloadavg()[0]:.2f}) "
            f"(the daemon runs at its configured nice and the idle I/O class, its workers at nice +10 more, 1 thread each)"
        )


if __name__ == "__main__":
    main()
