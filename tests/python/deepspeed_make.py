#!/usr/bin/env python3
"""Writes tests/fixtures/deepspeed/ with DeepSpeed itself (CPU, gloo). Not run by the tests: DeepSpeed is
not in python/requirements.txt (it builds from source and pulls in pydantic etc.); the small files it
writes are committed instead. To regenerate:

    pip install --target /tmp/dspkgs deepspeed hjson py-cpuinfo ninja einops msgpack pydantic psutil tqdm
    PYTHONPATH=/tmp/dspkgs .venv/bin/python tests/python/deepspeed_make.py tests/fixtures/deepspeed

It writes OUT/zero2/ (ZeRO-2, world size 1) and OUT/zero3/ (ZeRO-3, world size 2, with a frozen
parameter and a buffer), each after 3 optimizer steps of a small model, and beside each
OUT/<name>.safetensors: the state dict DeepSpeed's own zero_to_fp32 rebuilds from it
(get_fp32_state_dict_from_zero_checkpoint), plus for ZeRO-2 the module weights (`module.*` keys).
zero_to_fp32.py / zero_to_torch.py copies DeepSpeed drops into the save dir are removed.
"""

import importlib
import os
import subprocess
import sys

import torch
from safetensors.torch import save_file

OUT = os.path.abspath(sys.argv[1])


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(5, 3)
        self.norm = torch.nn.LayerNorm(3)
        self.fc2 = torch.nn.Linear(3, 2)
        self.frozen = torch.nn.Parameter(torch.linspace(-1, 1, 7), requires_grad=False)
        self.register_buffer("scale", torch.tensor([0.5, 2.0, 3.0]))

    def forward(self, x):
        return self.fc2(self.norm(self.fc1(x)) * self.scale) + self.frozen.sum()


def train(stage, save_dir):
    import deepspeed

    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None  # no JIT op build on CPU
    torch.manual_seed(0)
    m = Net()
    cfg = {
        "train_micro_batch_size_per_gpu": 2,
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,
    }
    params = [p for p in m.parameters() if p.requires_grad]
    eng, _, _, _ = deepspeed.initialize(model=m, optimizer=torch.optim.Adam(params, lr=0.05), config=cfg)
    g = torch.Generator().manual_seed(1 + int(os.environ.get("RANK", "0")))
    for _ in range(3):
        loss = eng(torch.randn(2, 5, generator=g)).pow(2).sum()
        eng.backward(loss)
        eng.step()
    eng.save_checkpoint(save_dir)
    return eng


def main():
    if "--zero3" in sys.argv:
        train(3, os.path.join(OUT, "zero3"))
        return
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29561", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    eng = train(2, os.path.join(OUT, "zero2"))
    sd = {"module." + k: v.contiguous() for k, v in eng.module.state_dict().items()}
    save_file(sd, os.path.join(OUT, "zero2_module.safetensors"))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            "29562",
            __file__,
            OUT,
            "--zero3",
        ],
        check=True,
        env=env,
    )
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    for name in ["zero2", "zero3"]:
        d = os.path.join(OUT, name)
        sd = get_fp32_state_dict_from_zero_checkpoint(d)
        save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(OUT, f"{name}_fp32.safetensors"))
        for extra in ["zero_to_fp32.py", "zero_to_torch.py"]:
            if os.path.exists(os.path.join(d, extra)):
                os.remove(os.path.join(d, extra))


if __name__ == "__main__":
    main()
