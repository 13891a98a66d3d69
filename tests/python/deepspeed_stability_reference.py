#!/usr/bin/env python3
"""Reference values for the stability job on the committed DeepSpeed folders whose optimizer DeepSpeed built
itself (tests/fixtures/deepspeed/fused_zero2: FusedAdam; cpuadam_zero2: DeepSpeedCPUAdam; fused_nobc_zero2:
FusedAdam with bias_correction off; all "AdamW", lr 0.05, betas (0.9, 0.999), eps 1e-8, 3 steps). For each, in float64 with PyTorch, from DeepSpeed's own
files (the fp32 weights `zero_to_fp32` rebuilt, `<name>_fp32.safetensors`, and the Adam state DeepSpeed's
`safe_get_full_optimizer_state` gathered, `<name>_optim.safetensors`): the Hessian of the mean squared error
of deepspeed_net.py's evaluation set over the trainable parameters (reverse over reverse:
torch.autograd.functional.hessian; torch.func.hessian's forward over reverse gives this LayerNorm model an
asymmetric Hessian in PyTorch 2.13, off by up to 1.4 per entry: layer_norm's second-order forward mode
is wrong with an affine weight, pytorch/pytorch#196700, so it is not used), its λmax, and the
top eigenvalue of P^{-1/2} H P^{-1/2} with P = (1 − β1^t)(√(v/(1 − β2^t)) + ε), PyTorch Adam's denominator
(with bias_correction off both corrections are 1, as DeepSpeed's kernel takes them: csrc/includes/cpu_adam.h).
Usage: deepspeed_stability_reference.py OUT_DIR  (writes OUT_DIR/reference.json)."""

import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.autograd.functional import hessian
from torch.func import functional_call

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deepspeed_net import Net, eval_set  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "deepspeed"
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)


def figures(name):
    """λmax, the preconditioned λ1 and the loss of one DeepSpeed folder (see the module docs)."""
    net = Net().double()
    weights = load_file(str(FIXTURES / f"{name}_fp32.safetensors"))
    net.load_state_dict({k: v.double() for k, v in weights.items()}, strict=False)
    names = [n for n, p in net.named_parameters() if p.requires_grad]
    theta = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
    fixed = {n: p.detach() for n, p in net.named_parameters() if not p.requires_grad}
    fixed.update({n: b for n, b in net.named_buffers()})
    x, y = eval_set()
    x, y = x.double(), y.double()

    def loss(flat):
        ps, i = {}, 0
        for n in names:
            k = theta[n].numel()
            ps[n] = flat[i : i + k].view_as(theta[n])
            i += k
        return F.mse_loss(functional_call(net, {**ps, **fixed}, (x,)), y)

    flat = torch.cat([theta[n].reshape(-1) for n in names])
    h = hessian(loss, flat)
    assert (h - h.T).abs().max() < 1e-12, "an asymmetric Hessian"
    h = (h + h.T) / 2
    state = load_file(str(FIXTURES / f"{name}_optim.safetensors"))
    meta = json.load(open(FIXTURES / f"{name}_optim.json"))
    g = meta["groups"][0]
    (b1, b2), eps, t, lr = g["hyper"]["betas"], g["hyper"]["eps"], g["step"], g["hyper"]["lr"]
    v = torch.cat([state[f"exp_avg_sq.{n}"].double().reshape(-1) for n in names])
    bc1, bc2 = (1 - b1**t, 1 - b2**t) if g["hyper"]["bias_correction"] else (1.0, 1.0)
    p = bc1 * ((v / bc2).sqrt() + eps)
    d = p.rsqrt()
    pre = torch.linalg.eigvalsh(d[:, None] * h * d[None, :])
    return {
        "loss": loss(flat).item(),
        "lambda_max": torch.linalg.eigvalsh(h)[-1].item(),
        "preconditioned_lambda_1": pre[-1].item(),
        "lr": lr,
        "beta1": b1,
        "step": t,
        "params": names,
    }


ref = {name: figures(name) for name in ["fused_zero2", "cpuadam_zero2", "fused_nobc_zero2"]}
with open(out / "reference.json", "w") as f:
    json.dump(ref, f, indent=1)
