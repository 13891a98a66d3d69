"""Trains lightning_factory.LitDigits with lightning.Trainer for a few steps on the fixture of
slice_reference.py and saves the Trainer's checkpoint (a .ckpt: a torch zip whose state_dict has the
module's keys). Prints the module's own evaluation loss on the factory's DataLoader as JSON.

usage: lightning_make.py FIXTURE_DIR OUT.ckpt
"""

import json
import os
import sys

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lightning_factory import LitDigits, eval_loader  # noqa: E402

from landscaped_worker import safetensors as st  # noqa: E402


def main():
    fixture, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ev = st.load(os.path.join(fixture, "model", "eval.safetensors"))
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ev["inputs"], ev["targets"]), batch_size=32)
    model = LitDigits()
    trainer = L.Trainer(
        max_steps=12,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=os.path.dirname(out),
    )
    trainer.fit(model, train)
    trainer.save_checkpoint(out)
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in eval_loader(fixture):
            total += F.cross_entropy(model(x), y).item() * x.shape[0]
            n += x.shape[0]
    print(json.dumps({"own_loss": total / n}))


if __name__ == "__main__":
    main()
