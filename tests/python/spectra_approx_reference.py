"""References for tests/spectra_approx.rs: matrices the test forces over a small exact-SVD budget, and
their eigenvalues by `torch.linalg.svdvals(W.double())**2` (Conv2d: every kernel position's slice pooled,
times WeightWatcher's conv2d_norm factor 1/2).

usage: spectra_approx_reference.py OUT_DIR

Writes OUT_DIR/approx.pt (a state dict) and OUT_DIR/reference.json: {"checkpoint", "evals": {tensor:
[ascending eigenvalues]}}. The tensors: a heavy-tailed random matrix (Student-t entries, 3 degrees of
freedom, 1200 × 500: a tall slice), a GPT-2-small MLP projection shape at its initialization (768 × 3072,
N(0, 0.02²): a wide slice, Marchenko–Pastur bulk, the hard case for Lanczos), and torchvision ResNet-18's
layer3.0.conv1 at its initialization (256 × 128 × 3 × 3: nine pooled slices).
"""

import json
import os
import sys

import torch


def conv_evals(w):
    o, i, kh, kw = w.shape
    slices = w.double().permute(2, 3, 0, 1).reshape(-1, o, i)
    return (torch.linalg.svdvals(slices) ** 2 / 2).flatten()


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(23)
    g = torch.Generator().manual_seed(23)
    heavy = torch.distributions.StudentT(3.0).sample((1200, 500)).float() / 30.0
    wide = (torch.randn(768, 3072, generator=g) * 0.02).float()
    import torchvision

    torch.manual_seed(5)
    conv = torchvision.models.resnet18(weights=None).layer3[0].conv1.weight.detach().clone()
    state = {"heavy.weight": heavy, "mlp.c_fc.weight": wide, "layer3.0.conv1.weight": conv}
    path = os.path.join(out, "approx.pt")
    torch.save(state, path)
    evals = {}
    for name, w in state.items():
        e = conv_evals(w) if w.dim() == 4 else torch.linalg.svdvals(w.double()) ** 2
        evals[name] = sorted(e.tolist())
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({"checkpoint": path, "evals": evals}, f)


if __name__ == "__main__":
    main()
