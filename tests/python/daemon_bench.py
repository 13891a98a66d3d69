#!/usr/bin/env python3
"""Benchmark driver for scripts/bench_daemon.sh (figures are printed, never asserted).

1. Latency: a checkpoint renamed into the watched folder -> its step on /metrics. Reported beside the
   quiet period and the baseline: Python (safetensors.numpy) loading the same file and computing its
   global L2 norm, the least work any reader must do.
2. Idle: CPU (% of one core over a window with nothing to do) and RSS of the daemon.
3. Burst: N checkpoints written at once -> all on /metrics; throughput vs the Python baseline doing
   the load+norm loop over the same files.
"""

import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
from daemon_port import bound_port, cpu_seconds, rss_mb
from safetensors.numpy import load_file, save_file

BIN = sys.argv[1]
N_BURST = int(os.environ.get("BENCH_BURST", "200"))
QUIET = 0.2
PARAMS = int(os.environ.get("BENCH_PARAMS", "1000000"))  # floats per checkpoint (4 MB)


def metrics(port):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except Exception:
        return ""


def value(text, key):
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return None


def ckpt(step):
    rng = np.random.default_rng(step)
    return {
        "a.weight": rng.standard_normal((PARAMS // 1000, 1000)).astype(np.float32),
        "a.bias": rng.standard_normal(1000).astype(np.float32),
    }


def write_atomic(d, step):
    tmp = os.path.join(d, f".tmp-{step}")
    save_file(ckpt(step), tmp)
    os.utime(tmp, (time.time() - 10, time.time() - 10))  # "complete and quiet" as it lands
    final = os.path.join(d, f"step-{step}.safetensors")
    os.rename(tmp, final)
    return final


def baseline(paths):
    t = time.perf_counter()
    for p in paths:
        ws = load_file(p)
        float(np.sqrt(sum(float((w.astype(np.float64) ** 2).sum()) for w in ws.values())))
    return time.perf_counter() - t


def main():
    root = tempfile.mkdtemp(prefix="landscaped-bench-")
    ck = os.path.join(root, "ck")
    os.makedirs(ck)
    cfg = os.path.join(root, "c.toml")
    open(cfg, "w").write(
        f'data_dir = "{root}/data"\nlisten = "127.0.0.1:0"\nquiet_period_secs = {QUIET}\n'
        f'queue_capacity = 4096\n[[run]]\nname = "b"\nwatch = ["{ck}"]\n'
    )
    d = subprocess.Popen(
        [BIN, "daemon", "--config", cfg],
        stderr=open(os.path.join(root, "log"), "w"),
        env={**os.environ, "LANDSCAPED_LOG": "warn"},
    )
    port = bound_port(os.path.join(root, "data"), d)
    try:
        for _ in range(200):
            if '"ready":true' in (
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read().decode()
                if value(metrics(port), "landscaped_queue_length") is not None
                else ""
            ):
                break
            time.sleep(0.05)
        # 1. latency
        lat = []
        for step in range(1, 6):
            t0 = time.perf_counter()
            write_atomic(ck, step)
            t_complete = time.perf_counter()
            while value(metrics(port), 'landscaped_last_step{run="b"}') != step:
                time.sleep(0.002)
            lat.append(time.perf_counter() - t_complete)
        base = baseline([os.path.join(ck, f"step-{s}.safetensors") for s in range(1, 6)]) / 5
        med = sorted(lat)[len(lat) // 2]
        print(
            f"latency, checkpoint renamed into place (already quiet: mtime backdated) -> its step on /metrics: "
            f"median {med * 1000:.0f} ms (a fresh file adds the quiet period, here {QUIET * 1000:.0f} ms); Python load+norm "
            f"of the same {PARAMS * 4 / 1e6:.0f} MB file: {base * 1000:.0f} ms; ratio = {med / base:.1f}"
        )
        # 2. idle
        time.sleep(1.0)
        c0, t0 = cpu_seconds(d.pid), time.perf_counter()
        time.sleep(10)
        cpu = (cpu_seconds(d.pid) - c0) / (time.perf_counter() - t0) * 100
        print(
            f"idle: CPU {cpu:.3f} % of one core over 10 s; RSS {rss_mb(d.pid):.1f} MB "
            f"(of which libtorch and CUDA libraries mapped at start dominate)"
        )
        # 3. burst
        paths = []
        t0 = time.perf_counter()
        for s in range(100, 100 + N_BURST):
            paths.append(write_atomic(ck, s))
        t_written = time.perf_counter()
        want = 5 + N_BURST
        peak = 0
        while value(metrics(port), 'landscaped_checkpoints_processed_total{run="b"}') != want:
            peak = max(peak, rss_mb(d.pid))
            time.sleep(0.02)
        t_done = time.perf_counter()
        base = baseline(paths)
        print(
            f"burst: {N_BURST} checkpoints ({PARAMS * 4 / 1e6:.0f} MB each) written in {t_written - t0:.1f} s, all on /metrics "
            f"{t_done - t0:.1f} s after the first: {N_BURST / (t_done - t0):.1f} checkpoints/s; peak RSS {peak:.0f} MB; "
            f"Python load+norm loop over the same files {base:.1f} s; ratio daemon/python = {(t_done - t0) / base:.2f}"
        )
    finally:
        d.terminate()
        rc = d.wait(timeout=30)
        print(f"SIGTERM -> exit {rc}")


main()
