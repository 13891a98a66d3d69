"""Reference values for tests/sharpness_hessian.rs: writes a tiny TorchScript model (Linear → BatchNorm1d
(eval mode, non-trivial running statistics) → Tanh → Linear, cross-entropy) with an evaluation set of 50
samples and its state dict as a checkpoint (ck.safetensors), and computes in float64 with PyTorch: the full Hessian of the mean loss over all samples
(torch.autograd.functional.hessian) and its eigvalsh extremes and trace, for all parameters and for the
≥2-dimensional ones; a Hessian-vector product with torch.autograd.functional.hvp; and the loss and
gradient. Also writes two broken models: one whose loss depends on no parameter, and an evaluation set
with a NaN. Usage: sharpness_reference.py OUT_DIR  (prints nothing; writes OUT_DIR/reference.json)."""

import json
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.func import functional_call

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.bn = nn.BatchNorm1d(6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.bn(self.fc1(x))))


net = Net()
with torch.no_grad():
    net.bn.running_mean.copy_(torch.randn(6) * 0.3)
    net.bn.running_var.copy_(torch.rand(6) + 0.5)
    net.bn.weight.copy_(1.0 + 0.2 * torch.randn(6))
    net.bn.bias.copy_(0.1 * torch.randn(6))
net.eval()
x = torch.randn(50, 4)
y = torch.randint(0, 3, (50,))
torch.jit.script(net).save(str(out / "model.pt"))
save_file({"inputs": x.contiguous(), "targets": y.contiguous()}, str(out / "eval.safetensors"))

save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "ck.safetensors"))

xn = x.clone()
xn[7, 2] = float("nan")
save_file({"inputs": xn.contiguous(), "targets": y.contiguous()}, str(out / "eval_nan.safetensors"))


class NoParam(nn.Module):
    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.ones(3, 4))

    def forward(self, x):
        return x[:, :3] * 2.0


torch.jit.script(NoParam()).save(str(out / "noparam.pt"))

# Float64 reference.
net64 = Net().double()
net64.load_state_dict({k: v.double() for k, v in net.state_dict().items()})
net64.eval()
names = [n for n, _ in net64.named_parameters()]
shapes = {n: p.shape for n, p in net64.named_parameters()}
buffers = dict(net64.named_buffers())
x64 = x.double()


def reference(subset):
    fixed = {n: p.detach() for n, p in net64.named_parameters() if n not in subset}
    theta = torch.cat([dict(net64.named_parameters())[n].detach().reshape(-1) for n in subset])

    def loss_of(flat):
        params, i = {}, 0
        for n in subset:
            k = shapes[n].numel()
            params[n] = flat[i : i + k].reshape(shapes[n])
            i += k
        params.update(fixed)
        params.update(buffers)
        return F.cross_entropy(functional_call(net64, params, (x64,)), y)

    h = torch.autograd.functional.hessian(loss_of, theta)
    ev = torch.linalg.eigvalsh(h)
    g = torch.Generator().manual_seed(1)
    v = torch.randn(theta.numel(), generator=g, dtype=torch.float64)
    _, hv = torch.autograd.functional.hvp(loss_of, theta, v)
    loss = loss_of(theta)
    t = theta.clone().requires_grad_(True)
    grad = torch.autograd.grad(loss_of(t), t)[0]
    return {
        "names": subset,
        "dim": theta.numel(),
        "lambda_max": ev[-1].item(),
        "lambda_min": ev[0].item(),
        "top3": ev[-3:].flip(0).tolist(),
        "trace": torch.trace(h).item(),
        "v": v.tolist(),
        "hv": hv.tolist(),
        "loss": loss.item(),
        "grad": grad.tolist(),
    }


ref = {
    "samples": 50,
    "all": reference(names),
    "matrices": reference([n for n in names if len(shapes[n]) >= 2]),
}
(out / "reference.json").write_text(json.dumps(ref))
