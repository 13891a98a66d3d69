"""The factory contract for `landscaped --backend python` on the runs of train_digits.py: the eager
DigitsCNN (no TorchScript export needed), the run's fixed evaluation set, cross-entropy.

    PYTHONPATH=examples landscaped slice --checkpoint runs/demo/step-100.safetensors \\
        --backend python --python .venv/bin/python --factory landscape_factory:build --x=-1:1:21

`build` takes the checkpoint path (a file of the run, or its checkpoint-N/ folder) to find the run's
folder; the weights themselves come from landscaped, read from that checkpoint.
"""

import os

import torch

from train_digits import DigitsCNN, load_data


def build(checkpoint):
    run = os.path.dirname(os.path.normpath(checkpoint)) if checkpoint else "."
    exported = os.path.join(run, "landscaped", "eval.safetensors")
    if os.path.exists(exported):  # the same evaluation set as the TorchScript export
        from landscaped_worker import safetensors as st

        ev = st.load(exported)
        data = (ev["inputs"], ev["targets"])
    else:
        _, data = load_data(0)
    return DigitsCNN(), data, "cross_entropy"
