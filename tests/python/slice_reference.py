"""Reference for landscaped's model contract and slices: a small conv net with batch norm, two checkpoints,
and the values the paper's reference code (Li et al. 2018, net_plotter.py / evaluation.py) computes.

usage: slice_reference.py OUT_DIR [--seed S] [--norm filter|layer|none] [--ignore biasbn|none]

Writes into OUT_DIR: model/ (examples/landscaped_export.py output), ckpt_a.safetensors and
ckpt_b.safetensors (state dicts saved as DataParallel would, with `module.` prefixes and
num_batches_tracked), dirs.safetensors (x.NAME / y.NAME directions), reference.json (losses, grids).
"""

import argparse
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
from landscaped_export import export  # noqa: E402


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 4)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


# --- the reference code's direction functions (net_plotter.py), verbatim in substance -----------------
def get_random_weights(weights):
    return [torch.randn(w.size()) for w in weights]


def normalize_direction(direction, weights, norm="filter"):
    if norm == "filter":
        for d, w in zip(direction, weights):
            d.mul_(w.norm() / (d.norm() + 1e-10))
    elif norm == "layer":
        direction.mul_(weights.norm() / direction.norm())


def normalize_directions_for_weights(direction, weights, norm="filter", ignore="biasbn"):
    for d, w in zip(direction, weights):
        if d.dim() <= 1:
            if ignore == "biasbn":
                d.fill_(0)
            else:
                d.copy_(w)
        else:
            normalize_direction(d, w, norm)


def create_random_direction(weights, ignore, norm):
    direction = get_random_weights(weights)
    normalize_directions_for_weights(direction, weights, norm, ignore)
    return direction


# --- evaluation (evaluation.py, but averaged per sample, batches weighted by size) --------------------
def evaluate(model, x, y, batch_size):
    model.eval()
    total, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            out = model(xb)
            total += F.cross_entropy(out, yb).item() * xb.shape[0]
            correct += (out.argmax(1) == yb).sum().item()
    return total / x.shape[0], correct / x.shape[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--norm", default="filter")
    ap.add_argument("--ignore", default="biasbn")
    ap.add_argument("--batch-size", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)

    torch.manual_seed(0)
    n = 200
    x = torch.randn(n, 1, 8, 8)
    y = (x[:, 0, 2:5, 2:5].sum((1, 2)) > 0).long() + 2 * (x[:, 0, 4:7, 1:4].mean((1, 2)) > 0).long()
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def train(steps):
        model.train()
        for s in range(steps):
            i = (s * 32) % n
            opt.zero_grad()
            F.cross_entropy(model(x[i : i + 32]), y[i : i + 32]).backward()
            opt.step()

    def save_ckpt(path):
        sd = {"module." + k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        save_file(sd, path)

    train(10)
    save_ckpt(os.path.join(a.out, "ckpt_a.safetensors"))
    state_a = {k: v.clone() for k, v in model.state_dict().items()}
    train(30)
    save_ckpt(os.path.join(a.out, "ckpt_b.safetensors"))
    state_b = {k: v.clone() for k, v in model.state_dict().items()}
    export(model, x, y, os.path.join(a.out, "model"))
    # The export shuffles the set; evaluate on exactly what was written.
    from safetensors.torch import load_file

    ev = load_file(os.path.join(a.out, "model", "eval.safetensors"))
    x, y = ev["inputs"], ev["targets"]

    ref = {"batch_size": a.batch_size, "seed": a.seed, "norm": a.norm, "ignore": a.ignore}
    model.load_state_dict(state_a)
    ref["loss_a"], ref["acc_a"] = evaluate(model, x, y, a.batch_size)
    model.load_state_dict(state_b)
    ref["loss_b"], ref["acc_b"] = evaluate(model, x, y, a.batch_size)

    # Random directions about checkpoint b: x then y from one seeded stream, parameters only.
    params = [p.data for p in model.parameters()]
    torch.manual_seed(a.seed)
    dx = create_random_direction(params, a.ignore, a.norm)
    dy = create_random_direction(params, a.ignore, a.norm)
    names = [k for k, _ in model.named_parameters()]
    dirs = {}
    for k, d in zip(names, dx):
        dirs["x." + k] = d.contiguous()
    for k, d in zip(names, dy):
        dirs["y." + k] = d.contiguous()
    save_file(dirs, os.path.join(a.out, "dirs.safetensors"))
    flat_x = torch.cat([d.flatten() for d in dx]).double()
    flat_y = torch.cat([d.flatten() for d in dy]).double()
    ref["cosine"] = (flat_x @ flat_y / (flat_x.norm() * flat_y.norm())).item()

    # A non-square 2D grid, Z[iy][ix]: x = -0.5:0.5:3, y = 0:1:2.
    xs = torch.linspace(-0.5, 0.5, 3).tolist()
    ys = torch.linspace(0, 1, 2).tolist()
    centre = [p.clone() for p in params]
    loss_grid, acc_grid = [], []
    for b in ys:
        row_l, row_a = [], []
        for a_ in xs:
            with torch.no_grad():
                for p, c, d0, d1 in zip(model.parameters(), centre, dx, dy):
                    p.copy_(c + d0 * a_ + d1 * b)
            loss, acc = evaluate(model, x, y, a.batch_size)
            row_l.append(loss)
            row_a.append(acc)
        loss_grid.append(row_l)
        acc_grid.append(row_a)
    ref["grid"] = {"xs": xs, "ys": ys, "loss": loss_grid, "acc": acc_grid}

    # Interpolation a -> b: parameters and float buffers move; num_batches_tracked never does.
    alphas = [-0.5, 0.0, 0.5, 1.0, 1.5]
    interp = []
    for al in alphas:
        sd = {}
        for k in state_a:
            if state_a[k].is_floating_point():
                sd[k] = state_a[k] + al * (state_b[k] - state_a[k])
            else:
                sd[k] = state_a[k]
        model.load_state_dict(sd)
        interp.append(evaluate(model, x, y, a.batch_size)[0])
    ref["interpolation"] = {"alphas": alphas, "loss": interp}
    with open(os.path.join(a.out, "reference.json"), "w") as f:
        json.dump(ref, f)


if __name__ == "__main__":
    main()
