"""Per-HVP time through model workers (the Python worker, the TorchScript worker) and in this bare
PyTorch process, alternated product by product so that all see the same machine load; for
scripts/bench_python.sh.

usage: bench_python_worker.py FACTORY CHECKPOINT BATCH K THREADS NAME=CONTRACT_JSON=CMD [...]
  (CMD: the worker command, words separated by spaces; CHECKPOINT: a safetensors file, or an HF folder)

Prints one JSON line: for "bare" and each NAME, seconds per HVP (median of K after 2 warm-ups), and for
workers the start-up (spawn to handshake) and load_model seconds.
"""

import importlib
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


def worker(contract, ckpt, cmd):
    c = Client(cmd)
    t0 = time.perf_counter()
    c.call("load_model", contract=contract)
    load = time.perf_counter() - t0
    path = ckpt if ckpt.endswith(".safetensors") else os.path.join(ckpt, "model.safetensors")
    rules = {"strip_prefixes": ["module.", "model.", "_orig_mod."], "mapping": [], "allow_unexpected": False}
    h = c.call("load_state", source={"kind": "safetensors", "path": path}, bind=rules)["handle"]
    c.call("set_state", state=h)
    dim = c.call("hessian_open", subset="all")["dim"]
    v = c.call("new_vector", init={"kind": "gaussian", "seed": 0})["handle"]
    out = c.call("new_vector", init={"kind": "zeros"})["handle"]
    info = {"startup": c.startup, "load_model": load, "dim": dim}
    return (lambda: c.call("hvp", v=v, out=out)), info, (lambda: c.call("shutdown"))


def bare(factory, ckpt, batch, threads):
    """The same HVP written as a user would in one PyTorch process: double backward of each batch's
    mean loss, weighted, with the math attention kernel."""
    import torch

    from landscaped_worker import contract as C
    from landscaped_worker import safetensors as st
    from landscaped_worker.hessian import sdpa_math

    torch.set_num_threads(threads)
    mod, fn = factory.split(":")
    model, data, loss = C.unpack(getattr(importlib.import_module(mod), fn)(ckpt), factory, None)
    path = ckpt if ckpt.endswith(".safetensors") else os.path.join(ckpt, "model.safetensors")
    sd = {}
    for key, t in st.read_tensors(path):
        for p in ("module.", "model.", "_orig_mod."):
            key = key[len(p) :] if key.startswith(p) else key
        sd[key] = t
    model.load_state_dict(sd, strict=False)
    model.eval()
    batches = C.prepare_targets(C.materialize(data, batch, None), loss)
    units = [C.batch_loss(model, b, loss, False).units for b in batches]
    weights = [u / sum(units) for u in units]
    params = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(0)
    v = torch.randn(sum(p.numel() for p in params))
    vs, off = [], 0
    for p in params:
        vs.append(v[off : off + p.numel()].view_as(p))
        off += p.numel()

    def hvp():
        acc = 0
        with sdpa_math():
            for b, w in zip(batches, weights):
                g = torch.autograd.grad(C.batch_loss(model, b, loss, False).loss, params, create_graph=True)
                dot = sum((gi * vi).sum() for gi, vi in zip(g, vs))
                acc = acc + torch.cat([h.reshape(-1) for h in torch.autograd.grad(dot, params)]).double() * w
        return acc

    return hvp


def main():
    factory, ckpt, batch, k, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    steps, infos, stops = {"bare": bare(factory, ckpt, batch, threads)}, {}, []
    for spec in sys.argv[6:]:
        name, contract, cmd = spec.split("=", 2)
        step, info, stop = worker(json.loads(contract), ckpt, cmd.split())
        steps[name], infos[name] = step, info
        stops.append(stop)
    times = {n: [] for n in steps}
    for i in range(k + 2):
        for n, f in steps.items():
            t0 = time.perf_counter()
            f()
            if i >= 2:
                times[n].append(time.perf_counter() - t0)
    for stop in stops:
        stop()
    out = {n: dict(infos.get(n, {}), hvp=statistics.median(t)) for n, t in times.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
