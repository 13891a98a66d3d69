"""References for tests/spectra.rs: checkpoints of real networks and, for each, what the installed
WeightWatcher (0.7.7, `analyze()` with its defaults: pool=True, conv2d_norm=True, pl_package="ww") reports
per layer, plus the eigenvalues of chosen weights by `torch.linalg.svdvals(W.double())**2`.

usage: spectra_reference.py OUT_DIR [--hf CHECKPOINT_DIR] [--only small_cnn]

Writes OUT_DIR/<case>.{pt,safetensors} and OUT_DIR/reference.json:
  {"cases": [{"name", "checkpoint", "seconds" (WeightWatcher's analyze() wall time),
              "selected": [the tensors of every layer WeightWatcher's filter keeps (describe())],
              "layers": [{"tensor", "N", "M", "rf", "num_evals", "alpha", "xmin", "D", "sigma",
                          "num_pl_spikes", "alpha_weighted", "log_norm", "log_spectral_norm",
                          "stable_rank", "log_alpha_norm", "entropy", "matrix_rank", "rank_loss",
                          "weak_rank_loss", "sv_max", "sv_min", "lambda_max"}],
              "evals": {tensor: [ascending eigenvalues]}}]}
Cases: a small CNN (torch.save), the digits CNN of slice_reference.py, torchvision's ResNet-18 (random
init, torch.save), the tiny GPT-2 of gpt2_make.py from its config (torch.save: lm_head.weight tied to
wte, both stored), the same in bfloat16 (safetensors, tied weight stored once), and with --hf a Hugging
Face Trainer checkpoint folder (model.safetensors, lm_head tied and not stored).
Conv2d eigenvalues pool every kernel position's slice W[:, :, i, j] and carry WeightWatcher's default
conv2d_norm factor 1/2 (the slices are scaled by sqrt(1/2) before the SVD).
"""

import argparse
import json
import logging
import os
import sys
import time

import torch
import torch.nn as nn
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
logging.disable(logging.WARNING)

COLUMNS = [
    "N",
    "M",
    "rf",
    "num_evals",
    "alpha",
    "xmin",
    "D",
    "sigma",
    "num_pl_spikes",
    "alpha_weighted",
    "log_norm",
    "log_spectral_norm",
    "stable_rank",
    "log_alpha_norm",
    "entropy",
    "matrix_rank",
    "rank_loss",
    "weak_rank_loss",
    "sv_max",
    "sv_min",
    "lambda_max",
]


class SmallCnn(nn.Module):
    """Convolutions of several shapes (3×3 with out > in, out < in, 1×1, 2×2 with out < in) and Linears."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3)
        self.c2 = nn.Conv2d(16, 32, 3)
        self.c3 = nn.Conv2d(32, 12, 1)
        self.c4 = nn.Conv2d(12, 24, 2)
        self.c5 = nn.Conv2d(24, 10, 2)
        self.bn = nn.BatchNorm2d(10)
        self.fc1 = nn.Linear(40, 64)
        self.fc2 = nn.Linear(64, 10)
        self.tiny = nn.Linear(64, 5)  # M = 5 < min_evals: left out by WeightWatcher


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=96, n_positions=32, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg)


def selected(model):
    """The layers WeightWatcher selects (describe(): its layer filter, no SVD), as tensor names and ids."""
    import weightwatcher as ww

    d = ww.WeightWatcher(model=model).describe()
    return {row["longname"] + ".weight": int(row["layer_id"]) for _, row in d.iterrows()}


def analyze(model, subset=None):
    """analyze() with its defaults, on every selected layer or only those named in `subset`."""
    import weightwatcher as ww

    ids = [] if subset is None else [i for n, i in selected(model).items() if n in subset]
    t = time.perf_counter()
    details = ww.WeightWatcher(model=model).analyze(layers=ids)
    seconds = time.perf_counter() - t
    layers = []
    for _, row in details.iterrows():
        entry = {"tensor": row["longname"] + ".weight"}
        for c in COLUMNS:
            v = row[c]
            entry[c] = None if v is None else float(v)
        layers.append(entry)
    return layers, seconds


def conv_evals(w):
    """Every kernel position's out × in slice, pooled, times WeightWatcher's conv2d_norm factor 1/2."""
    o, i, kh, kw = w.shape
    slices = w.double().permute(2, 3, 0, 1).reshape(-1, o, i)
    return (torch.linalg.svdvals(slices) ** 2 / 2).flatten()


def evals_of(state, names):
    out = {}
    for n in names:
        w = state[n]
        e = conv_evals(w) if w.dim() == 4 else torch.linalg.svdvals(w.double()) ** 2
        out[n] = sorted(e.tolist())
    return out


def case(out, name, model, ckpt, eval_names, save="pt", dtype=None, subset=None):
    if dtype is not None:
        model = model.to(dtype)
    state = model.state_dict()
    path = os.path.join(out, ckpt)
    if save == "pt":
        torch.save(state, path)
    else:
        seen, flat = set(), {}
        for k, v in state.items():  # safetensors refuses shared storage: tied weights stored once
            if v.data_ptr() in seen:
                continue
            seen.add(v.data_ptr())
            flat[k] = v.contiguous()
        save_file(flat, path)
    layers, seconds = analyze(model, subset)
    return {
        "name": name,
        "checkpoint": path,
        "seconds": seconds,
        "selected": sorted(selected(model)),
        "layers": layers,
        "evals": evals_of(state, eval_names),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--hf", help="a Hugging Face checkpoint-N/ folder (model.safetensors + config.json)")
    ap.add_argument("--only", choices=["small_cnn"], help="only this case (the CLI and daemon tests)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    cases = []

    torch.manual_seed(0)
    cnn = SmallCnn()
    cases.append(case(a.out, "small_cnn", cnn, "small_cnn.pt", ["c1.weight", "c3.weight", "c5.weight", "fc1.weight"]))
    if a.only:
        with open(os.path.join(a.out, "reference.json"), "w") as f:
            json.dump({"cases": cases}, f)
        return

    from slice_reference import Net

    torch.manual_seed(1)
    cases.append(case(a.out, "digits_cnn", Net(), "digits_cnn.pt", ["conv.weight"]))  # fc: M = 4, left out

    import torchvision

    torch.manual_seed(2)
    resnet = torchvision.models.resnet18(weights=None)
    # WeightWatcher's fit is O(n²) in Python: its metrics on every ResNet-18 layer take minutes (a 512×512×3×3
    # conv alone, 4608 eigenvalues, ~35 s on the 2-core machine), so they are compared on a subset of
    # layers of every kind (7×7 with 3 inputs, 3×3, 1×1 downsample, the Linear); the selection of all 21
    # and the eigenvalues of the largest conv are still compared.
    subset = [
        "conv1.weight",
        "layer1.0.conv1.weight",
        "layer2.0.downsample.0.weight",
        "layer3.0.conv1.weight",
        "fc.weight",
    ]
    evs = ["conv1.weight", "layer4.1.conv2.weight", "fc.weight"]
    cases.append(case(a.out, "resnet18", resnet, "resnet18.pt", evs, subset=subset))

    torch.manual_seed(3)
    g = gpt2()
    names = ["transformer.wte.weight", "lm_head.weight", "transformer.h.0.attn.c_attn.weight"]
    cases.append(case(a.out, "gpt2_tied", g, "gpt2_tied.pt", names))
    cases.append(case(a.out, "gpt2_bf16", g, "gpt2_bf16.safetensors", names[:1] + names[2:], "st", torch.bfloat16))

    if a.hf:
        from transformers import GPT2LMHeadModel

        m = GPT2LMHeadModel.from_pretrained(a.hf)
        layers, seconds = analyze(m)
        ev = evals_of(m.state_dict(), ["transformer.h.1.mlp.c_fc.weight"])
        sel = sorted(selected(m))
        cases.append(
            {
                "name": "hf_folder",
                "checkpoint": a.hf,
                "seconds": seconds,
                "selected": sel,
                "layers": layers,
                "evals": ev,
            }
        )

    with open(os.path.join(a.out, "reference.json"), "w") as f:
        json.dump({"cases": cases}, f)


if __name__ == "__main__":
    main()
