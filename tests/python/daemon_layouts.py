#!/usr/bin/env python3
"""Checkpoint folders for the daemon tests, written by PyTorch itself:

  python daemon_layouts.py OUT hf:checkpoint-5 dcp:epoch=0-step=7.ckpt ...

hf:NAME   OUT/NAME/: a Hugging Face folder (two safetensors shards + model.safetensors.index.json +
          trainer_state.json with global_step = the N of NAME)
dcp:NAME  OUT/NAME/: torch.distributed.checkpoint.save of {"model": state dict} (one process) plus
          Lightning's meta.pt (global_step = the step in NAME)

Prints one JSON line per folder: {"path": ..., "step": N, "norm": global L2 norm (float64)}.
"""

import json
import os
import re
import sys
import warnings

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file

warnings.filterwarnings("ignore")


def state(step):
    g = torch.Generator().manual_seed(100 + step)
    return {
        "fc1.weight": torch.randn(8, 4, generator=g),
        "fc1.bias": torch.randn(8, generator=g),
        "fc2.weight": torch.randn(3, 8, generator=g) * (1 + 0.01 * step),
    }


def norm(sd):
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in sd.values())))


def main():
    out = sys.argv[1]
    for spec in sys.argv[2:]:
        kind, name = spec.split(":", 1)
        step = int(re.findall(r"\d+", name)[-1])
        sd = state(step)
        path = os.path.join(out, name)
        os.makedirs(path, exist_ok=True)
        if kind == "hf":
            names = sorted(sd)
            shards = {"model-00001-of-00002.safetensors": names[:1], "model-00002-of-00002.safetensors": names[1:]}
            weight_map = {}
            for shard, keys in shards.items():
                save_file({k: sd[k].contiguous() for k in keys}, os.path.join(path, shard))
                weight_map.update({k: shard for k in keys})
            with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {}, "weight_map": weight_map}, f)
            with open(os.path.join(path, "trainer_state.json"), "w") as f:
                json.dump({"global_step": step}, f)
        elif kind == "dcp":
            dcp.save({"model": sd}, checkpoint_id=path)
            torch.save({"epoch": 0, "global_step": step}, os.path.join(path, "meta.pt"))
        else:
            raise SystemExit(f"unknown kind {kind}")
        print(json.dumps({"path": path, "step": step, "norm": norm(sd)}))


if __name__ == "__main__":
    main()
