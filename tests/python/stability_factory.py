"""The factory contract for the tiny model of stability_reference.py (tests/stability_cli.rs runs the
stability job on the Python backend with it): the TorchScript model and evaluation set beside the
checkpoint."""

import os

import torch

from landscaped_worker import safetensors as st


def build(checkpoint):
    d = os.path.dirname(checkpoint)
    ev = st.load(os.path.join(d, "eval.safetensors"))
    return torch.jit.load(os.path.join(d, "model.pt")), (ev["inputs"], ev["targets"]), "cross_entropy"
