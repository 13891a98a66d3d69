"""Per-HVP time through model workers (the Python worker, the TorchScript worker) and in this bare
PyTorch process (an HVP loop written independently of the worker: see `bare`), alternated product by product so that all see the same machine load; for
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
    """The same HVP written as a user would in one PyTorch process, independently of the worker's code
    (nothing imported from landscaped_worker): the factory's model (the user's own code) with the
    checkpoint's weights (safetensors.torch.load_file), double backward of each batch's mean loss
    (F.cross_entropy; or the model's own causal-LM loss with labels = the input ids), weighted by the
    batch's share of samples (or of predicted tokens), under the math attention kernel (the fused ones
    have no double backward)."""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.set_num_threads(threads)
    mod, fn = factory.split(":")
    model, data, loss = getattr(importlib.import_module(mod), fn)(ckpt)
    path = ckpt if ckpt.endswith(".safetensors") else os.path.join(ckpt, "model.safetensors")
    sd = {}
    for key, t in load_file(path).items():
        for p in ("module.", "model.", "_orig_mod."):
            key = key.removeprefix(p)
        sd[key] = t
    model.load_state_dict(sd, strict=False)
    model.eval()
    if loss == "cross_entropy":
        x, y = data
        batches = [(x[i : i + batch].float(), y[i : i + batch].long()) for i in range(0, len(y), batch)]
        sizes = [len(b[1]) for b in batches]

        def batch_loss(b):
            return F.cross_entropy(model(b[0]), b[1])
    elif loss == "causal_lm":
        batches = list(data.split(batch))
        sizes = [b.numel() - b.shape[0] for b in batches]  # tokens predicted

        def batch_loss(b):
            return model(input_ids=b, labels=b).loss
    else:
        raise SystemExit(f"bench_python_worker: the bare loop knows cross_entropy and causal_lm, not {loss!r}")
    weights = [s / sum(sizes) for s in sizes]
    params = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(0)
    vs = [torch.randn_like(p) for p in params]

    def hvp():
        acc = [torch.zeros_like(p) for p in params]
        with sdpa_kernel([SDPBackend.MATH]):
            for b, w in zip(batches, weights):
                g = torch.autograd.grad(batch_loss(b), params, create_graph=True)
                dot = sum((gi * vi).sum() for gi, vi in zip(g, vs))
                for a, h in zip(acc, torch.autograd.grad(dot, params)):
                    a.add_(h, alpha=w)
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
