"""A LightningModule around the digits CNN of slice_reference.py (as `self.model`, so its state-dict keys
read `model.conv.weight`, ...), trained by lightning.Trainer in lightning_make.py; the factory returns
the module as it is and a DataLoader (an iterable of batches) over the fixture's evaluation set."""

import os
import sys

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from slice_reference import Net  # noqa: E402

from landscaped_worker import safetensors as st  # noqa: E402


class LitDigits(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = Net()

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, _):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def eval_loader(fixture_dir):
    ev = st.load(os.path.join(fixture_dir, "model", "eval.safetensors"))
    ds = torch.utils.data.TensorDataset(ev["inputs"], ev["targets"])
    return torch.utils.data.DataLoader(ds, batch_size=50)


def build(checkpoint):
    return LitDigits(), eval_loader(os.path.dirname(checkpoint)), "cross_entropy"


def build_compiled(checkpoint):
    """The plain CNN, torch.compile'd (names gain `_orig_mod.`), on the fixture's tensors."""
    ev = st.load(os.path.join(os.path.dirname(checkpoint), "model", "eval.safetensors"))
    return torch.compile(Net(), backend="eager"), (ev["inputs"], ev["targets"]), "cross_entropy"
