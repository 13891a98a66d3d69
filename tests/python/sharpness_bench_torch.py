"""Seconds per Hessian-vector product with PyTorch autograd (double backward, torch.autograd.grad with
create_graph) on the same TorchScript model, checkpoint and evaluation set as `landscaped
sharpness-bench`: loss averaged over batches weighted by batch size. Usage:
sharpness_bench_torch.py MODEL_DIR CHECKPOINT SUBSAMPLE BATCH_SIZE TIMED [THREADS]  (prints the median seconds per
HVP over TIMED products)."""

import statistics
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

mdir, ck, sub, bs, timed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if len(sys.argv) > 6:
    torch.set_num_threads(int(sys.argv[6]))
torch.jit._state.disable() if False else torch._C._set_graph_executor_optimize(False)
m = torch.jit.load(f"{mdir}/model.pt")
m.eval()
sd = {k.removeprefix("module."): v for k, v in load_file(ck).items()}
m.load_state_dict(sd, strict=False) if hasattr(m, "load_state_dict") else None
with torch.no_grad():
    for n, p in list(m.named_parameters()) + list(m.named_buffers()):
        if n in sd:
            p.copy_(sd[n])
data = load_file(f"{mdir}/eval.safetensors")
x, y = data["inputs"][:sub].float(), data["targets"][:sub].long()
params = [p for p in m.parameters() if p.requires_grad]
torch.manual_seed(0)
v = [torch.randn_like(p) for p in params]


def hvp():
    acc = [torch.zeros_like(p) for p in params]
    n = x.shape[0]
    for i in range(0, n, bs):
        xb, yb = x[i : i + bs], y[i : i + bs]
        loss = F.cross_entropy(m(xb), yb)
        g = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((gi * vi).sum() for gi, vi in zip(g, v))
        hv = torch.autograd.grad(dot, params)
        for a, h in zip(acc, hv):
            a.add_(h, alpha=xb.shape[0] / n)
    return acc


hvp()
times = []
for _ in range(timed):
    t0 = time.perf_counter()
    hvp()
    times.append(time.perf_counter() - t0)
print(statistics.median(times))
