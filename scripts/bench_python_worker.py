"""Per-HVP time and start-up through a model worker (the Python worker, or the TorchScript worker), or in
one bare PyTorch process, for scripts/bench_python.sh.

usage:
  bench_python_worker.py worker CONTRACT_JSON CHECKPOINT K -- CMD...   (speaks the worker protocol to CMD)
  bench_python_worker.py bare FACTORY CHECKPOINT BATCH K THREADS        (the same HVPs in this process)

Prints one JSON line: seconds per HVP (median of K after 2 warm-ups), and for workers the start-up
(spawn to handshake) and load_model seconds.
"""

import json
import os
import statistics
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from landscaped_worker import msgpack  # noqa: E402


class Client:
    def __init__(self, cmd):
        t0 = time.perf_counter()
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.id = 0
        self.call("hello", protocol=1, client="bench")
        self.startup = time.perf_counter() - t0

    def call(self, op, **kw):
        self.id += 1
        b = msgpack.encode({"id": self.id, "body": dict(op=op, **kw)})
        self.p.stdin.write(struct.pack("<I", len(b)) + b)
        self.p.stdin.flush()
        (n,) = struct.unpack("<I", self.p.stdout.read(4))
        r = msgpack.decode(self.p.stdout.read(n))["body"]
        if r["reply"] == "error":
            raise SystemExit("worker error: %s" % r)
        return r


def worker(contract, ckpt, k, cmd):
    c = Client(cmd)
    t0 = time.perf_counter()
    c.call("load_model", contract=contract)
    load = time.perf_counter() - t0
    kind = "safetensors" if ckpt.endswith(".safetensors") else "checkpoint"
    h = c.call("load_state", source={"kind": kind, "path": ckpt}, bind={"strip_prefixes": ["module.", "model.", "_orig_mod."], "mapping": [], "allow_unexpected": False})["handle"]
    c.call("set_state", state=h)
    dim = c.call("hessian_open", subset="all")["dim"]
    v = c.call("new_vector", init={"kind": "gaussian", "seed": 0})["handle"]
    out = c.call("new_vector", init={"kind": "zeros"})["handle"]
    times = []
    for i in range(k + 2):
        t0 = time.perf_counter()
        c.call("hvp", v=v, out=out)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    c.call("shutdown")
    print(json.dumps({"hvp": statistics.median(times), "startup": c.startup, "load_model": load, "dim": dim}))


def bare(factory, ckpt, batch, k, threads):
    import importlib

    import torch

    from landscaped_worker import contract as C
    from landscaped_worker import safetensors as st
    from landscaped_worker.session import sdpa_math

    torch.set_num_threads(threads)
    mod, fn = factory.split(":")
    model, data, loss = C.unpack(getattr(importlib.import_module(mod), fn)(ckpt), factory, None)
    sd = {}
    for key, t in st.read_tensors(ckpt) if ckpt.endswith(".safetensors") else st.read_tensors(os.path.join(ckpt, "model.safetensors")):
        for p in ("module.", "model.", "_orig_mod."):
            key = key[len(p):] if key.startswith(p) else key
        sd[key] = t
    model.load_state_dict(sd, strict=False)
    model.eval()
    batches = C.prepare_targets(C.materialize(data, batch, None), loss)
    units = [C.batch_loss(model, b, loss, False).units for b in batches]
    total = sum(units)
    params = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(0)
    v = torch.randn(sum(p.numel() for p in params)).double()
    vs, off = [], 0
    for p in params:
        vs.append(v[off : off + p.numel()].float().view_as(p))
        off += p.numel()

    def hvp():
        acc = None
        with sdpa_math():
            for b, u in zip(batches, units):
                l = C.batch_loss(model, b, loss, False).loss
                g = torch.autograd.grad(l, params, create_graph=True)
                dot = sum((gi * vi).sum() for gi, vi in zip(g, vs))
                hv = torch.cat([h.reshape(-1) for h in torch.autograd.grad(dot, params)]).double() * (u / total)
                acc = hv if acc is None else acc + hv
        return acc

    times = []
    for i in range(k + 2):
        t0 = time.perf_counter()
        hvp()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    print(json.dumps({"hvp": statistics.median(times)}))


if __name__ == "__main__":
    a = sys.argv[1:]
    if a[0] == "worker":
        sep = a.index("--")
        worker(json.loads(a[1]), a[2], int(a[3]), a[sep + 1 :])
    else:
        bare(a[1], a[2], int(a[3]), int(a[4]), int(a[5]))
