"""Reference values for tests/sharpness_cli.rs and tests/daemon_sharpness.rs: writes a tiny TorchScript model (Linear → BatchNorm1d
(eval mode, non-trivial running statistics) → Tanh → Linear, cross-entropy) with an evaluation set of 50
samples and its state dict as a checkpoint (ck.safetensors), and computes in float64 with PyTorch: the full Hessian of the mean loss over all samples
(torch.autograd.functional.hessian) and its eigvalsh extremes and trace, for all parameters and for the
≥2-dimensional ones; a Hessian-vector product with torch.autograd.functional.hvp; and the loss and
gradient. For the sharpness measures, brute-force float64 maxima on the same model (SAM and ASAM balls:
projected gradient ascent from 65 starts plus 20000 uniform samples; Keskar's box: scipy L-BFGS-B, as
Keskar et al. solve it, from 10 starts among 20000 random corners), the first-order SAM/ASAM rises, the filter-normalized
loss rise by Monte Carlo over 20000 directions, and the exact spectrum's moments (1/d) tr(Hᵏ) with the
variance of one Rademacher probe (what SLQ estimates). Also writes two broken models: one whose loss depends on no parameter, and an evaluation set
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
torch.set_num_threads(1)  # tiny tensors: threads only add overhead (and the test machine is shared)


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


def loss_over(subset):
    """The float64 loss as a function of the flat vector of the parameters in `subset` (the others fixed)."""
    fixed = {n: p.detach() for n, p in net64.named_parameters() if n not in subset}

    def loss_of(flat):
        params, i = {}, 0
        for n in subset:
            k = shapes[n].numel()
            params[n] = flat[i : i + k].reshape(shapes[n])
            i += k
        params.update(fixed)
        params.update(buffers)
        return F.cross_entropy(functional_call(net64, params, (x64,)), y)

    return loss_of


def reference(subset):
    theta = torch.cat([dict(net64.named_parameters())[n].detach().reshape(-1) for n in subset])
    loss_of = loss_over(subset)
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


# --- Sharpness measures and the spectral density by brute force, in float64 (subset "all") ------------
KESKAR_EPS, SAM_RHO, ASAM_RHO, ASAM_ETA, FN_RADIUS = 1e-3, 0.05, 0.5, 0.01, 0.1
params64 = dict(net64.named_parameters())
theta0 = torch.cat([params64[n].detach().reshape(-1) for n in names])
dim = theta0.numel()


loss_flat = loss_over(names)  # every parameter


assert names == ["fc1.weight", "fc1.bias", "bn.weight", "bn.bias", "fc2.weight", "fc2.bias"], names
bn_scale = (buffers["bn.running_var"] + net64.bn.eps).rsqrt()


def batch_loss(pts):
    """The same loss at K points at once (pts: K × dim), the network written out with einsum."""
    k = pts.shape[0]
    w1, b1, g, b, w2, b2 = torch.split(pts, [24, 6, 6, 6, 18, 3], dim=1)
    h = torch.einsum("kij,nj->kni", w1.reshape(k, 6, 4), x64) + b1[:, None]
    h = torch.tanh((h - buffers["bn.running_mean"]) * bn_scale * g[:, None] + b[:, None])
    out = torch.einsum("kij,knj->kni", w2.reshape(k, 3, 6), h) + b2[:, None]
    return F.cross_entropy(out.reshape(-1, 3), y.repeat(k), reduction="none").reshape(k, -1).mean(1)


def batch_grad(pts):
    pts = pts.detach().requires_grad_(True)
    return torch.autograd.grad(batch_loss(pts).sum(), pts)[0]  # each point's loss has its own parameters


L0 = loss_flat(theta0).item()
g0 = torch.func.grad(loss_flat)(theta0)
assert abs(batch_loss(theta0[None]).item() - L0) < 1e-14 and (batch_grad(theta0[None])[0] - g0).abs().max() < 1e-14
gen = torch.Generator().manual_seed(2024)


def ball_max(t, rho, starts=64, iters=300, samples=20000):
    """max_{‖u‖ ≤ ρ} L(θ + t⊙u) − L(θ): projected normalized-gradient ascent from the first-order point and
    `starts` random points of the sphere, step ρ/2 shrinking geometrically to ρ·1e-4 over `iters` steps, then `samples`
    points drawn uniformly in the ball; returns the largest rise seen and the first-order rise."""
    gu = g0 * t
    first = rho * gu / gu.norm()
    rise_first = loss_flat(theta0 + t * first).item() - L0
    u = torch.randn(starts, dim, generator=gen, dtype=torch.float64)
    u = torch.cat([first[None], rho * u / u.norm(dim=1, keepdim=True)])
    best = torch.tensor(-float("inf"), dtype=torch.float64)
    for k in range(iters):
        step = 0.5 * rho * (2e-4 ** (k / (iters - 1)))
        x = theta0 + t * u
        best = torch.maximum(best, batch_loss(x).max().detach())
        gr = batch_grad(x) * t
        u = u + step * gr / gr.norm(dim=1, keepdim=True).clamp_min(1e-300)
        u = u * (rho / u.norm(dim=1, keepdim=True)).clamp(max=1.0)
    best = torch.maximum(best, batch_loss(theta0 + t * u).max())
    r = torch.randn(samples, dim, generator=gen, dtype=torch.float64)
    r = r / r.norm(dim=1, keepdim=True) * rho * torch.rand(samples, 1, generator=gen, dtype=torch.float64) ** (1 / dim)
    sampled = batch_loss(theta0 + t * r).max()
    return max(best.item(), sampled.item()) - L0, rise_first, best.item() - L0, sampled.item() - L0


def keskar_max():
    """Keskar's own solver, scipy's L-BFGS-B on the box |z_i| ≤ ε(|θ_i| + 1), from z = 0 and from the
    corner sign(∇L), from the 8 best of 20000 random corners: 100 · (max L − L(θ)) / (1 + L(θ))."""
    from scipy.optimize import minimize

    w = KESKAR_EPS * (theta0.abs() + 1.0)
    lo, hi = (theta0 - w).numpy(), (theta0 + w).numpy()

    def f(z):
        t = torch.tensor(z, dtype=torch.float64, requires_grad=True)
        loss = loss_flat(t)
        (gr,) = torch.autograd.grad(loss, t)
        return -loss.item(), -gr.numpy()

    corners = theta0 + w * torch.sign(torch.randn(20000, dim, generator=gen, dtype=torch.float64))
    with torch.no_grad():
        losses = batch_loss(corners)
    best = max(L0, losses.max().item())
    starts = [theta0, theta0 + w * torch.sign(g0)] + list(corners[losses.argsort(descending=True)[:8]])
    for start in starts:
        res = minimize(
            f,
            start.numpy(),
            jac=True,
            method="L-BFGS-B",
            bounds=list(zip(lo, hi)),
            options={"maxiter": 200, "ftol": 1e-15, "gtol": 1e-12},
        )
        best = max(best, -res.fun)
    return 100.0 * (best - L0) / (1.0 + L0)


def asam_t():
    return torch.cat(
        [
            (params64[n].detach().abs() + ASAM_ETA).reshape(-1)
            if n.endswith("weight")
            else torch.ones(shapes[n].numel(), dtype=torch.float64)
            for n in names
        ]
    )


def fn_loss_rise(n=20000):
    """E[L(θ + r·d) − L(θ)] over filter-normalized Gaussian directions d (each dim-0 slice of a ≥2-D tensor
    scaled to the norm of θ's slice; 1-D tensors 0), by Monte Carlo: mean and standard error."""
    parts = []
    for name in names:
        p = params64[name].detach()
        if p.dim() <= 1:
            parts.append(torch.zeros(n, p.numel(), dtype=torch.float64))
            continue
        d = torch.randn(n, *p.shape, generator=gen, dtype=torch.float64)
        dn = d.flatten(2).norm(dim=2)
        pn = p.flatten(1).norm(dim=1)
        parts.append((d * (pn / (dn + 1e-10)).reshape(n, -1, *([1] * (p.dim() - 1)))).reshape(n, -1))
    rises = batch_loss(theta0 + FN_RADIUS * torch.cat(parts, dim=1)) - L0
    return rises.mean().item(), (rises.std() / n**0.5).item()


sam_best, sam_first, sam_pga, sam_sampled = ball_max(torch.ones(dim, dtype=torch.float64), SAM_RHO)
asam_best, asam_first, asam_pga, asam_sampled = ball_max(asam_t(), ASAM_RHO)
fn_mean, fn_se = fn_loss_rise()

# The spectral density's moments: (1/d) tr(Hᵏ) from the exact Hessian's eigenvalues, and the variance of
# one Rademacher probe's vᵀHᵏv/d (2 Σ_{i≠j} (Hᵏ)ᵢⱼ² / d²), which is what SLQ's k-th moment estimates.
h_all = torch.autograd.functional.hessian(loss_flat, theta0)
h_all = 0.5 * (h_all + h_all.T)
evals = torch.linalg.eigvalsh(h_all)
moments, probe_var = [], []
for k in range(1, 5):
    a = torch.linalg.matrix_power(h_all, k)
    moments.append((evals**k).mean().item())
    probe_var.append((2.0 * ((a**2).sum() - (a.diagonal() ** 2).sum()) / dim**2).item())

# Each SLQ run's own moments: the start vector of run r is the documented Rademacher draw
# (docs/worker-protocol.md: randint(0, 2, dim) mapped to ±1 right after manual_seed(seed)) with
# seed = 0x736c71 + r for `--seed 0`; its quadrature must reproduce vᵀHᵏv / d exactly for k ≤ 2·steps − 1.
slq_moments = []
for r in range(32):
    torch.manual_seed(0x736C71 + r)
    v = (torch.randint(0, 2, (dim,)) * 2 - 1).double()
    slq_moments.append([(v @ torch.linalg.matrix_power(h_all, k) @ v).item() / dim for k in range(1, 5)])

ref = {
    "samples": 50,
    "all": reference(names),
    "matrices": reference([n for n in names if len(shapes[n]) >= 2]),
    "measures": {
        "keskar_eps": KESKAR_EPS,
        "sam_rho": SAM_RHO,
        "asam_rho": ASAM_RHO,
        "asam_eta": ASAM_ETA,
        "fn_radius": FN_RADIUS,
        "loss": L0,
        "keskar_max": keskar_max(),
        "sam_first_order": sam_first,
        "sam_max": sam_best,
        "sam_max_ascent": sam_pga,
        "sam_max_sampled": sam_sampled,
        "asam_first_order": asam_first,
        "asam_max": asam_best,
        "asam_max_ascent": asam_pga,
        "asam_max_sampled": asam_sampled,
        "fn_loss_rise": fn_mean,
        "fn_loss_rise_se": fn_se,
    },
    "spectrum": {"eigenvalues": evals.tolist(), "moments": moments, "probe_var": probe_var, "run_moments": slq_moments},
}
(out / "reference.json").write_text(json.dumps(ref))
