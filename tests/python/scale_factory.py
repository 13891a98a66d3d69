"""The digits-CNN factory of digits_factory.py with a loss callable that can misbehave on purpose, for the
scale-out tests: SCALE_TEST_DIE_AFTER=N ends the worker process (as a lost node would) at its N+1-th
batch, SCALE_TEST_SLOW=S sleeps S seconds per batch (a straggler). Unset, it is plain cross-entropy, so
every worker of a test computes the same values."""

import os
import time

import torch.nn.functional as F
from digits_factory import build as digits_build

_calls = 0


def build(checkpoint):
    model, data, _ = digits_build(checkpoint)
    die_after = int(os.environ.get("SCALE_TEST_DIE_AFTER", "0"))
    slow = float(os.environ.get("SCALE_TEST_SLOW", "0"))

    def loss(model, batch):
        global _calls
        _calls += 1
        if die_after and _calls > die_after:
            os._exit(9)
        if slow:
            time.sleep(slow)
        x, y = batch
        return F.cross_entropy(model(x), y)

    return model, data, loss
