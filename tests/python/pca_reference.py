"""Reference values for trajectory PCA (tests/trajectory_pca.rs), from PyTorch + scikit-learn.

make OUTDIR N SEED DTYPE [HIDDEN]
    Writes N checkpoints OUTDIR/step_<s>.safetensors of a small conv net (conv, batch norm, linear)
    whose parameters follow a random walk with a low-rank drift (so PCA has structure), DTYPE f32 or bf16.
    Batch-norm running statistics and the integer num_batches_tracked are saved too, as a state dict has.
    With HIDDEN > 0 the head is Linear(96, HIDDEN) + Linear(HIDDEN, 10) (HIDDEN = 1050: d = 112,540, a
    100,800-element weight spanning four of the Gram pass's 32 Ki-element chunks).

reference CKDIR OUT.json K CENTER EXCLUDE_1D PRECISION [PCDIR]
    Builds the n x d matrix of rows theta_i - theta_c from the same checkpoints in float64, with the
    same tensor selection as landscaped (float parameters, no running stats, optionally no 1-D tensors),
    values rounded to bf16 first when PRECISION is bf16; fits sklearn PCA(K, svd_solver="full") and
    writes explained variance, ratios, singular values, components (flattened in parameter order),
    coordinates <theta_i - theta_c, v_k> and residual distances from the plane. With PCDIR, also loads
    landscaped's pc<k>.safetensors with safetensors.torch.load_file and reports their cosines with
    sklearn's components.
"""

import json
import os
import re
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.decomposition import PCA


def make_model(hidden=0):
    if hidden:
        head = [torch.nn.Linear(6 * 4 * 4, hidden), torch.nn.Linear(hidden, 10)]
    else:
        head = [torch.nn.Linear(6 * 4 * 4, 10)]
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3),
        torch.nn.BatchNorm2d(6),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        *head,
    )


def make(outdir, n, seed, dtype, hidden=0):
    torch.manual_seed(seed)
    model = make_model(hidden)
    with torch.no_grad():
        model[1].running_mean.normal_()
        model[1].running_var.uniform_(0.5, 2.0)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    floats = [k for k, v in sd.items() if v.is_floating_point()]
    drift1 = {k: torch.randn_like(sd[k]) * 0.05 for k in floats}
    drift2 = {k: torch.randn_like(sd[k]) * 0.02 for k in floats}
    os.makedirs(outdir, exist_ok=True)
    walk = {k: torch.zeros_like(sd[k]) for k in floats}
    for i in range(n):
        step = 100 * (i + 1)
        t = i / max(n - 1, 1)
        out = {}
        for k, v in sd.items():
            if k in floats:
                walk[k] += torch.randn_like(v) * 0.004
                val = v + (3 * t) * drift1[k] + np.sin(3 * t) * drift2[k] + walk[k]
                out[k] = val.to(torch.bfloat16 if dtype == "bf16" else torch.float32).contiguous()
            else:
                out[k] = (v + i).contiguous()
        save_file(out, os.path.join(outdir, f"step_{step}.safetensors"))


def selected(name, t, exclude_1d):
    if not t.is_floating_point():
        return False
    if name.endswith("running_mean") or name.endswith("running_var"):
        return False
    if exclude_1d and t.dim() <= 1:
        return False
    return True


def reference(ckdir, out, k, center, exclude_1d, precision, pcdir=None):
    files = sorted(
        (int(re.search(r"step_(\d+)", f).group(1)), f) for f in os.listdir(ckdir) if f.endswith(".safetensors")
    )
    steps = [s for s, _ in files]
    rows, names = [], None
    for _, f in files:
        sd = load_file(os.path.join(ckdir, f))
        keep = [(n, t) for n, t in sd.items() if selected(n, t, exclude_1d)]
        # parameter order = file order of the state dict (safetensors sorts keys; landscaped keeps the
        # checkpoint's order, which for safetensors is data-offset order): compare by name below.
        if names is None:
            names = [(n, list(t.shape)) for n, t in keep]
        parts = []
        for _n, t in keep:
            x = t.float()
            if precision == "bf16":
                x = x.to(torch.bfloat16).float()
            parts.append(x.double().flatten().numpy())
        rows.append(np.concatenate(parts))
    X = np.stack(rows)
    c = steps.index(center) if center >= 0 else len(steps) - 1
    M = X - X[c]
    pca = PCA(n_components=k, svd_solver="full").fit(M)
    V = pca.components_
    coords = M @ V.T
    resid = np.sqrt(np.maximum((M * M).sum(1) - (coords**2).sum(1), 0))
    res = {
        "steps": steps,
        "center_step": steps[c],
        "names": [n for n, _ in names],
        "shapes": [s for _, s in names],
        "explained_variance": pca.explained_variance_.tolist(),
        "explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
        "singular_values": pca.singular_values_.tolist(),
        "components": V.tolist(),
        "coords": coords.tolist(),
        "transform": pca.transform(M).tolist(),
        "residuals": resid.tolist(),
    }
    if pcdir:
        cos = []
        for j in range(k):
            sd = load_file(os.path.join(pcdir, f"pc{j + 1}.safetensors"))
            v = np.concatenate([sd[n].double().flatten().numpy() for n, _ in names])
            assert sorted(sd.keys()) == sorted(n for n, _ in names), "direction file tensors differ"
            for n, s in names:
                assert list(sd[n].shape) == s, f"{n}: shape {list(sd[n].shape)} != {s}"
            cos.append(float(v @ V[j] / np.linalg.norm(v) / np.linalg.norm(V[j])))
        res["torch_cosines"] = cos
    with open(out, "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        hidden = int(sys.argv[6]) if len(sys.argv) > 6 else 0
        make(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], hidden)
    elif cmd == "reference":
        a = sys.argv
        reference(a[2], a[3], int(a[4]), int(a[5]), a[6] == "1", a[7], a[8] if len(a) > 8 else None)
    else:
        sys.exit(f"unknown command {cmd}")
