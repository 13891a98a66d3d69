"""A torchvision ResNet-18 whose interpolation drives batch-norm variances negative (tests/slice_nan.rs).

Writes into DIR: step_00100.pt (the network as initialized: running variances 1), step_00200.pt (the same
weights after train-mode passes over inputs of small spread: running variances below 1), eval.pt (a
tiny batch), and reference.json: PyTorch's loss of L(θ + α(θ' − θ)) (parameters and float buffers alike,
as `landscaped interpolate` moves them) at every α of the grid, NaN where a variance went negative."""

import json
import math
import sys

import torch
import torch.nn.functional as F
import torchvision

ALPHAS = [0.0, 0.5, 1.0, 1.5, 2.0]


def main(out):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    a = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(a, f"{out}/step_00100.pt")
    inputs = torch.randn(4, 3, 32, 32)
    targets = torch.tensor([0, 1, 2, 3])
    torch.save({"inputs": inputs, "targets": targets}, f"{out}/eval.pt")
    model.train()
    with torch.no_grad():
        for _ in range(30):
            model(0.05 * torch.randn(8, 3, 32, 32))
    b = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(b, f"{out}/step_00200.pt")
    model.eval()
    losses, min_var = [], []
    for alpha in ALPHAS:
        state = {k: (a[k] + alpha * (b[k] - a[k]) if a[k].is_floating_point() else a[k]) for k in a}
        model.load_state_dict(state)
        with torch.inference_mode():
            loss = F.cross_entropy(model(inputs), targets).item()
        losses.append(None if math.isnan(loss) else loss)
        min_var.append(min(v.min().item() for k, v in state.items() if k.endswith("running_var")))
    json.dump({"alphas": ALPHAS, "loss": losses, "min_running_var": min_var}, open(f"{out}/reference.json", "w"))


if __name__ == "__main__":
    main(sys.argv[1])
