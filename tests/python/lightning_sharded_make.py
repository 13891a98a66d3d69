#!/usr/bin/env python3
"""Lightning's sharded checkpoint layout, written by Lightning itself: a LightningModule trained by
lightning.Trainer with FSDPStrategy(state_dict_type="sharded") on 2 CPU processes (gloo) for 12 steps,
checkpointed by its ModelCheckpoint callback. Run by large_runs_make.py (tests/checkpoint_large_runs.rs).

usage: lightning_sharded_make.py OUT     (Lightning starts rank 1 itself by running this script again)

Writes OUT/lightning/epoch=E-step=12.ckpt/ (what FSDPStrategy.save_checkpoint writes: a
torch.distributed.checkpoint folder of {"model": sharded state dict, "optimizer_0": sharded Adam state},
one __R_0.distcp per rank, plus meta.pt with global_step), and, from rank 0:
- OUT/lightning.safetensors: the module's full state dict as FSDP gathers it (FULL_STATE_DICT), keys
  prefixed "model." as Lightning writes them: what landscaped must read back exactly;
- OUT/reference_lightning.json: the folder, its step (trainer.global_step) and its number of state-dict entries.

Two things stand between Lightning's FSDP and a CPU, both worked around without touching how it saves:
- Trainer refuses FSDPStrategy without a GPU accelerator, by an exact type check
  (`type(strategy) is FSDPStrategy`, accelerator_connector._check_strategy_and_fallback); a subclass
  that changes nothing passes it.
- Lightning wraps the root module with FullyShardedDataParallel(device_id=root_device.index), None on a
  CPU, and torch's FSDP then refuses ("FSDP needs a non-CPU accelerator device"); with
  device_id=torch.device("cpu") it runs on CPU/gloo. So the module wraps its own layers in
  configure_model (Lightning's documented manual wrapping: it then leaves the root unwrapped).
Lightning's own save path (FSDPStrategy.save_checkpoint: the sharded state-dict context, its
_distributed_checkpoint_save, meta.pt) is what writes the folder.
"""

import glob
import json
import os
import sys
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import FSDPStrategy
from safetensors.torch import save_file
from torch.distributed.fsdp import FullStateDictConfig, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

warnings.filterwarnings("ignore")
OUT = os.path.abspath(sys.argv[1])
STEPS = 12


class CpuFSDPStrategy(FSDPStrategy):
    """FSDPStrategy as it is; only its type differs, which is what Trainer's GPU check looks at."""


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        # 24 x 700 = 16,800 values: more than the smallest ingest chunk, so it streams in ranges.
        self.embed = torch.nn.Linear(700, 24)
        self.norm = torch.nn.LayerNorm(24)
        self.head = torch.nn.Linear(24, 5)  # 5 rows: uneven shards (3 + 2) over 2 ranks
        # Buffers, the same on every rank: DCP keeps one rank's copy of a replicated tensor, and FSDP
        # does not synchronise buffers (BatchNorm's running statistics would differ between ranks,
        # so the checkpoint would hold whichever rank DCP picked).
        self.register_buffer("scale", torch.linspace(0.5, 2.0, 24))
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        if self.training:
            self.steps_seen += 1
        return self.head(F.relu(self.norm(self.embed(x)) * self.scale))


class Lit(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = Net()

    def configure_model(self):
        if not isinstance(self.net, FSDP):
            self.net = FSDP(self.net, device_id=torch.device("cpu"))

    def training_step(self, batch, _):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)

    def on_train_end(self):
        # The module's state dict as FSDP gathers it whole (a collective: every rank takes part), taken
        # here, after the last step and its checkpoint, before the strategy's teardown frees the shards
        # (offload_to_cpu=True fails on CPU-resident parameters: "storage of size 0").
        cfg = FullStateDictConfig(offload_to_cpu=False, rank0_only=False)
        with FSDP.state_dict_type(self.net, StateDictType.FULL_STATE_DICT, cfg):
            self.full_state_dict = {k: v.detach().clone() for k, v in self.state_dict().items()}


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.randn(96, 700)
    y = (x[:, :5].sum(1) > 0).long() + 2 * (x[:, 5:9].mean(1) > 0).long()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    run = os.path.join(OUT, "lightning")
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=CpuFSDPStrategy(state_dict_type="sharded", process_group_backend="gloo"),
        max_steps=STEPS,
        callbacks=[ModelCheckpoint(dirpath=run, every_n_train_steps=STEPS, save_top_k=-1)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=run,
    )
    module = Lit()
    trainer.fit(module, data)
    sd = module.full_state_dict
    if trainer.global_rank != 0:
        return
    folders = glob.glob(os.path.join(run, "*.ckpt"))
    assert len(folders) == 1 and os.path.isdir(folders[0]), folders
    assert os.path.isfile(os.path.join(folders[0], "meta.pt")), os.listdir(folders[0])
    sd = {"model." + k: v.detach().clone().contiguous() for k, v in sd.items()}
    save_file(sd, os.path.join(OUT, "lightning.safetensors"))
    with open(os.path.join(OUT, "reference_lightning.json"), "w") as fh:
        json.dump({"path": folders[0], "step": trainer.global_step, "tensors_listed": len(sd)}, fh)


if __name__ == "__main__":
    main()
