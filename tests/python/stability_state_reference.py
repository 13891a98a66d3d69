"""Reference values for tests/stability_state.rs: the stability job reading the checkpoint's own optimizer
state. The tiny TorchScript model of stability_reference.py (Linear → Tanh → Linear, cross-entropy, 60
samples) is trained full-batch by real torch.optim optimizers and saved as
`torch.save({"model": state_dict, "optimizer": opt.state_dict()})` (index-keyed state, as PyTorch writes
it without named groups):

- adamw/ck.pt     AdamW, two groups as HF Trainer builds them (weights with decay 0.01, biases 0), one lr,
                  betas (0.9, 0.99), eps 1e-7, 6 steps;
- folded/ck.pt    the same with lr 0.01 for the weights and 0.004 for the biases (per-group η folded in P);
- sgd/ck.pt       SGD, momentum 0.9, weight decay 1e-3, lr 0.05, 6 steps;
- adagrad/ck.pt   torch.optim.Adagrad, 3 steps (a kind landscaped does not know);
- hf/checkpoint-6 model.safetensors + trainer_state.json (learning_rate logged), no optimizer.pt.

For each state, in float64 with PyTorch: the Hessian (torch.func.hessian), λmax, P = (1−β1^t)(√(v/(1−β2^t))+ε)
from `torch.load` of the same file (η_g folded in: P/η_g) and the top eigenvalue of P^{-1/2}HP^{-1/2}
(eigvalsh); the step PyTorch's own `optimizer.step()` takes after `load_state_dict` of that state with the
full-batch gradient set (`<case>/delta.safetensors`, θ − θ_next, by parameter name); and the brute-force
critical step along it: the smallest multiple s on a fine geometric grid at which L(θ − s·Δ) > L(θ).
Usage: stability_state_reference.py OUT_DIR  (writes OUT_DIR/reference.json)."""

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
torch.set_num_threads(1)


torch.manual_seed(0)
x = torch.randn(60, 4)
y = torch.randint(0, 3, (60,))
save_file({"inputs": x.contiguous(), "targets": y.contiguous()}, str(out / "eval.safetensors"))
x64 = x.double()
net64 = Net().double()


def groups_of(net, lr_w, lr_b, wd):
    """HF Trainer's two groups: weights (decay), then biases (no decay)."""
    w = [p for n, p in net.named_parameters() if n.endswith("weight")]
    b = [p for n, p in net.named_parameters() if n.endswith("bias")]
    return [
        {"params": w, "weight_decay": wd, "lr": lr_w},
        {"params": b, "weight_decay": 0.0, "lr": lr_b},
    ]


CASES = {
    "adamw": lambda n: torch.optim.AdamW(groups_of(n, 0.01, 0.01, 0.01), betas=(0.9, 0.99), eps=1e-7),
    "folded": lambda n: torch.optim.AdamW(groups_of(n, 0.01, 0.004, 0.01), betas=(0.9, 0.99), eps=1e-7),
    "sgd": lambda n: torch.optim.SGD(n.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3),
    "adagrad": lambda n: torch.optim.Adagrad(n.parameters(), lr=0.05),
}
STEPS = {"adamw": 6, "folded": 6, "sgd": 6, "adagrad": 3}


def loss_fn(net):
    return F.cross_entropy(net(x), y)


def flat_loss(names, shapes):
    def f(flat):
        p, i = {}, 0
        for n in names:
            k = shapes[n].numel()
            p[n] = flat[i : i + k].reshape(shapes[n])
            i += k
        return F.cross_entropy(functional_call(net64, p, (x64,)), y)

    return f


ref = {}
for case, make in CASES.items():
    torch.manual_seed(1)
    net = Net()
    opt = make(net)
    for _ in range(STEPS[case]):
        opt.zero_grad()
        loss_fn(net).backward()
        opt.step()
    (out / case).mkdir(exist_ok=True)
    ck = out / case / "ck.pt"
    torch.save({"model": net.state_dict(), "optimizer": opt.state_dict()}, ck)
    if case == "adamw":
        torch.jit.script(net.eval()).save(str(out / "model.pt"))
    # Everything below from torch.load of the file just written.
    saved = torch.load(ck, weights_only=True)
    names = [n for n, _ in net.named_parameters()]
    net2 = Net()
    net2.load_state_dict(saved["model"])
    shapes = {n: p.shape for n, p in net2.named_parameters()}
    opt2 = make(net2)
    opt2.load_state_dict(saved["optimizer"])
    # PyTorch's parameter numbering: groups in order, their params in order.
    pid = {}
    for g in opt2.param_groups:
        for p in g["params"]:
            pid[id(p)] = len(pid)
    params = dict(net2.named_parameters())
    theta = torch.cat([params[n].detach().double().reshape(-1) for n in names])
    loss_of = flat_loss(names, shapes)
    h = hessian(loss_of)(theta)
    r = {"lambda_max": float(torch.linalg.eigvalsh(h)[-1]), "dim": theta.numel()}
    group_of = {id(p): g for g in opt2.param_groups for p in g["params"]}
    if case in ("adamw", "folded"):
        st = saved["optimizer"]["state"]
        pieces = []
        for n in names:
            g = group_of[id(params[n])]
            s = st[pid[id(params[n])]]
            b1, b2 = g["betas"]
            t = float(s["step"])
            v = s["exp_avg_sq"].double().reshape(-1)
            P = (1 - b1**t) * ((v / (1 - b2**t)).sqrt() + g["eps"])
            pieces.append(P / g["lr"] if case == "folded" else P)
        d = torch.cat(pieces).rsqrt()
        r["preconditioned_lambda_1"] = float(torch.linalg.eigvalsh(d[:, None] * h * d[None, :])[-1])
        r["step"] = t
    # The step PyTorch's own optimizer takes from this state with the full-batch gradient.
    opt2.zero_grad()
    loss_fn(net2).backward()
    before = {n: p.detach().clone() for n, p in params.items()}
    opt2.step()
    delta = {n: (before[n] - params[n].detach()).contiguous() for n in names}
    save_file(delta, str(out / case / "delta.safetensors"))
    u = torch.cat([delta[n].double().reshape(-1) for n in names])
    base = float(loss_of(theta))
    s, crit = 1e-4, float("nan")
    with torch.no_grad():
        while s < 1e5:
            if float(loss_of(theta - s * u)) > base:
                crit = s
                break
            s *= 1.0005
    r["s_c"] = crit
    r["lr"] = opt2.param_groups[0]["lr"]
    ref[case] = r

# An HF folder without optimizer state: the learning rate from trainer_state.json.
hf = out / "hf" / "checkpoint-6"
hf.mkdir(parents=True, exist_ok=True)
torch.manual_seed(1)
save_file({k: v.contiguous() for k, v in Net().state_dict().items()}, str(hf / "model.safetensors"))
log = [{"step": 5, "learning_rate": 0.03, "loss": 1.0}, {"step": 6, "learning_rate": 0.025, "loss": 0.9}]
json.dump({"global_step": 6, "log_history": log}, open(hf / "trainer_state.json", "w"))
ref["hf_lr"] = 0.025
json.dump(ref, open(out / "reference.json", "w"), indent=1)
os.sync()
