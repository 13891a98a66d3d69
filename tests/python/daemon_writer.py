#!/usr/bin/env python3
"""Checkpoint writer for the daemon tests (numpy + safetensors, no torch import: fast to start).

Writes `step-<N>.safetensors` files of a small two-layer "model" whose weights drift with N, in one of
several ways a training job (or a fault) produces them:

  python daemon_writer.py DIR --steps 1,2,3 [--mode direct|rename|slow] [--interval SECONDS]
  python daemon_writer.py DIR --truncate-then-complete 7    # write half of step 7, pause, finish it
  python daemon_writer.py DIR --rewrite 5                   # step 5 with other values, in place

Modes: direct (plain write), rename (write .tmp then rename into place, like Lightning), slow (write in
chunks with pauses, so the file is seen incomplete). Prints the global L2 norm of every step written
as JSON lines {"step": N, "norm": x, "tensors": [...]} for the tests to compare with the daemon's
metrics; `tensors` has each tensor's name, shape and float64 statistics (l2, mean, min, max).
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from safetensors.numpy import save


def weights(step, variant=0):
    rng = np.random.default_rng(1000 + step * 7 + variant)
    return {
        "fc1.weight": (rng.standard_normal((32, 16)) * (1.0 + 0.01 * step)).astype(np.float32),
        "fc1.bias": rng.standard_normal(32).astype(np.float32),
        "fc2.weight": rng.standard_normal((10, 32)).astype(np.float32),
        "fc2.bias": np.zeros(10, dtype=np.float32),
    }


def norm(ws):
    return float(np.sqrt(sum(float((w.astype(np.float64) ** 2).sum()) for w in ws.values())))


def tensor_stats(ws):
    out = []
    for name, w in ws.items():
        v = w.astype(np.float64)
        out.append(
            {
                "name": name,
                "shape": list(w.shape),
                "l2": float(np.sqrt((v**2).sum())),
                "mean": float(v.mean()),
                "min": float(v.min()),
                "max": float(v.max()),
            }
        )
    return out


def write(path, data, mode, pause=0.6):
    if mode == "rename":
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, path)
    elif mode == "slow":
        with open(path, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            f.flush()
            time.sleep(pause)
            f.write(data[half:])
    else:
        with open(path, "wb") as f:
            f.write(data)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--steps", default="")
    p.add_argument("--mode", choices=["direct", "rename", "slow"], default="direct")
    p.add_argument("--interval", type=float, default=0.0)
    p.add_argument("--truncate-then-complete", type=int)
    p.add_argument("--rewrite", type=int)
    p.add_argument("--pause", type=float, default=0.6)
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    out = []
    if "-" in a.steps:
        lo, hi = a.steps.split("-")
        steps = list(range(int(lo), int(hi) + 1))
    else:
        steps = [int(s) for s in a.steps.split(",") if s]
    for s in steps:
        ws = weights(s)
        write(os.path.join(a.dir, f"step-{s}.safetensors"), save(ws), a.mode, a.pause)
        out.append({"step": s, "norm": norm(ws), "tensors": tensor_stats(ws)})
        if a.interval:
            time.sleep(a.interval)
    if a.truncate_then_complete is not None:
        s = a.truncate_then_complete
        ws = weights(s)
        data = save(ws)
        path = os.path.join(a.dir, f"step-{s}.safetensors")
        with open(path, "wb") as f:
            f.write(data[: len(data) // 3])
        time.sleep(a.pause)
        with open(path, "wb") as f:  # truncated, then written completely
            f.write(data)
        out.append({"step": s, "norm": norm(ws)})
    if a.rewrite is not None:
        s = a.rewrite
        ws = weights(s, variant=1)
        with open(os.path.join(a.dir, f"step-{s}.safetensors"), "r+b") as f:
            f.write(save(ws))
            f.truncate()
        out.append({"step": s, "norm": norm(ws)})
    for o in out:
        print(json.dumps(o))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
