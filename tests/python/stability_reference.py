"""Reference values for tests/stability_cli.rs: a tiny TorchScript model (Linear → Tanh → Linear,
cross-entropy, 60 samples) trained for 6 full-batch steps by torch.optim.Adam; writes the checkpoint
(ck.safetensors), Adam's own exp_avg_sq per parameter name (v.safetensors), the model and the evaluation
set; then in float64 with PyTorch: the full Hessian (torch.func.hessian), its top eigenvalue, Adam's
preconditioner P = (1−β1^t)(√(v/(1−β2^t)) + ε) from the optimizer's state and the top eigenvalue of the
dense P^{-1/2} H P^{-1/2} (eigvalsh); and brute-force critical step sizes: the smallest η on a fine
geometric grid at which L(θ − η u) > L(θ), for u = ∇L and u = P⁻¹∇L.
Usage: stability_reference.py OUT_DIR  (writes OUT_DIR/reference.json)."""

import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.func import functional_call, hessian

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tanh_mlp import Net  # noqa: E402

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
torch.set_num_threads(1)


net = Net()
x = torch.randn(60, 4)
y = torch.randint(0, 3, (60,))
LR, BETAS, EPS, STEPS = 0.01, (0.9, 0.999), 1e-8, 6
opt = torch.optim.Adam(net.parameters(), lr=LR, betas=BETAS, eps=EPS)
for _ in range(STEPS):
    opt.zero_grad()
    F.cross_entropy(net(x), y).backward()
    opt.step()
net.eval()
torch.jit.script(net).save(str(out / "model.pt"))
save_file({"inputs": x.contiguous(), "targets": y.contiguous()}, str(out / "eval.safetensors"))
save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "ck.safetensors"))
names = [n for n, _ in net.named_parameters()]
params = dict(net.named_parameters())
state = {n: opt.state[params[n]] for n in names}
save_file({n: state[n]["exp_avg_sq"].contiguous() for n in names}, str(out / "v.safetensors"))
t = int(state[names[0]]["step"])

# Float64 reference.
shapes = {n: params[n].shape for n in names}
theta = torch.cat([params[n].detach().double().reshape(-1) for n in names])
x64 = x.double()
net64 = Net().double()


def loss_of(flat):
    p, i = {}, 0
    for n in names:
        k = shapes[n].numel()
        p[n] = flat[i : i + k].reshape(shapes[n])
        i += k
    return F.cross_entropy(functional_call(net64, p, (x64,)), y)


h = hessian(loss_of)(theta)
v = torch.cat([state[n]["exp_avg_sq"].double().reshape(-1) for n in names])
b1, b2 = BETAS
P = (1 - b1**t) * ((v / (1 - b2**t)).sqrt() + EPS)
d = P.rsqrt()
dhd = d[:, None] * h * d[None, :]
tt = theta.clone().requires_grad_(True)
g = torch.autograd.grad(loss_of(tt), tt)[0]
base = float(loss_of(theta))


def critical(u):
    """The smallest η on a geometric grid (ratio 1.0005) from 1e-5 at which the loss rises."""
    eta = 1e-5
    with torch.no_grad():
        while eta < 1e4:
            if float(loss_of(theta - eta * u)) > base:
                return eta
            eta *= 1.0005
    return float("nan")


json.dump(
    {
        "step": t,
        "lr": LR,
        "dim": theta.numel(),
        "loss": base,
        "lambda_max": float(torch.linalg.eigvalsh(h)[-1]),
        "preconditioned_lambda_1": float(torch.linalg.eigvalsh(dhd)[-1]),
        "eta_c_gradient": critical(g),
        "eta_c_preconditioned": critical(g / P),
    },
    open(out / "reference.json", "w"),
    indent=1,
)
