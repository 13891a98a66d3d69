"""Runs PyTorch's own optimizers on a 1-D quadratic L = ½λx² at λ = factor·threshold for each case given
as JSON on argv[1] ([{"lr", "momentum", "dampening", "nesterov", "threshold"}]), factor 0.98 and 1.02,
2000 steps from x = 1, and prints one JSON line per case: |x| at the end below and above (null: diverged).
torch.optim.SGD(momentum=β1, dampening=β1) is Adam's frozen-preconditioner dynamics."""

import json
import math
import sys

import torch

torch.set_num_threads(1)


def run(case, lam):
    x = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = torch.optim.SGD(
        [x], lr=case["lr"], momentum=case["momentum"], dampening=case["dampening"], nesterov=case["nesterov"]
    )
    for _ in range(2000):
        opt.zero_grad()
        (0.5 * lam * x * x).sum().backward()
        opt.step()
        if not math.isfinite(float(x)) or abs(float(x)) > 1e12:
            return float("inf")
    return abs(float(x))


for case in json.loads(sys.argv[1]):
    thr = case["threshold"]
    below, above = run(case, 0.98 * thr), run(case, 1.02 * thr)
    # null: diverged (JSON has no infinity)
    print(json.dumps({k: (v if math.isfinite(v) else None) for k, v in (("below", below), ("above", above))}))
