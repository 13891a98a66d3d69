#!/usr/bin/env python3
"""An outside reference for the digits CNN's curvature (tests/python_worker.rs): the full Hessian of the
mean cross-entropy over the fixture's whole evaluation set at checkpoint b, in float64, with
torch.autograd.functional.hessian, and its extreme eigenvalues by torch.linalg.eigvalsh. Nothing of
landscaped is used (no Lanczos, no worker): the model class of slice_reference.py, the checkpoint read with
safetensors, the evaluation set as exported.

usage: digits_hessian_reference.py FIXTURE_DIR [--gradient]  (the folder slice_reference.py wrote; prints one
JSON line: dim, lambda_max, lambda_min, the top 3 eigenvalues, trace, loss; with --gradient only the loss
and its float64 gradient, in the module's parameter order, without the Hessian)
"""

import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.func import functional_call

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from slice_reference import Net  # noqa: E402

fixture = sys.argv[1]
sd = {k.removeprefix("module."): v for k, v in load_file(os.path.join(fixture, "ckpt_b.safetensors")).items()}
ev = load_file(os.path.join(fixture, "model", "eval.safetensors"))
x, y = ev["inputs"].double(), ev["targets"]

net = Net().double()
net.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in sd.items()})
net.eval()  # batch norm from the checkpoint's running statistics, as every evaluation does
params = dict(net.named_parameters())
buffers = dict(net.named_buffers())
names = list(params)  # every trainable parameter (the subset "all")
shapes = [params[n].shape for n in names]
theta = torch.cat([params[n].detach().reshape(-1) for n in names])


def loss_of(flat):
    p, i = {}, 0
    for n, s in zip(names, shapes):
        p[n] = flat[i : i + s.numel()].reshape(s)
        i += s.numel()
    p.update(buffers)
    # The mean over every sample (one batch: batches weighted by size give the same mean).
    return F.cross_entropy(functional_call(net, p, (x,)), y)


with torch.no_grad():
    loss = loss_of(theta).item()
if sys.argv[2:] == ["--gradient"]:
    grad = torch.func.grad(loss_of)(theta)
    print(json.dumps({"dim": theta.numel(), "names": names, "loss": loss, "gradient": grad.tolist()}))
    sys.exit(0)
h = torch.func.hessian(loss_of)(theta)  # forward-over-reverse, vectorized over the 628 columns
h = 0.5 * (h + h.T)
ev_ = torch.linalg.eigvalsh(h)
print(
    json.dumps(
        {
            "dim": theta.numel(),
            "samples": x.shape[0],
            "lambda_max": ev_[-1].item(),
            "lambda_min": ev_[0].item(),
            "top3": ev_[-3:].flip(0).tolist(),
            "trace": torch.trace(h).item(),
            "loss": loss,
        }
    )
)
