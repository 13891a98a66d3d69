#!/usr/bin/env python3
"""The digits CNN's loss at checkpoint b evaluated by PyTorch itself under CPU autocast to bfloat16 (the
reference for tests/python_worker.rs's reduced-precision test): eval mode, inference mode, the exported
evaluation set in batches of BATCH in order, each batch's mean cross-entropy weighted by its size.

usage: autocast_reference.py FIXTURE_DIR BATCH   (prints one JSON line: loss_bf16, loss_f32)
"""

import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from slice_reference import Net  # noqa: E402

fixture, batch = sys.argv[1], int(sys.argv[2])
sd = {k.removeprefix("module."): v for k, v in load_file(os.path.join(fixture, "ckpt_b.safetensors")).items()}
ev = load_file(os.path.join(fixture, "model", "eval.safetensors"))
x, y = ev["inputs"], ev["targets"]
net = Net()
net.load_state_dict(sd)
net.eval()


def loss(dtype):
    total = 0.0
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch):
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                total += float(F.cross_entropy(net(x[i : i + batch]), y[i : i + batch]).float()) * len(y[i : i + batch])
    return total / x.shape[0]


print(json.dumps({"loss_bf16": loss(torch.bfloat16), "loss_f32": loss(None)}))
