"""Factories that go wrong in the ways a user's factory can (for the Python-worker tests), one whose
model's output doesn't fit the targets, and models that hang or run away in their loss (daemon job tests)."""

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from digits_factory import build as digits  # noqa: E402


def wrong_return():
    return "a model"


def not_a_module():
    return [1, 2, 3], (torch.zeros(2, 1), torch.zeros(2, dtype=torch.long)), "cross_entropy"


def raises():
    raise RuntimeError("the data folder /data/eval is not mounted")


class SequenceOutput(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l = torch.nn.Linear(64, 30)

    def forward(self, x):
        return self.l(x.flatten(1)).view(-1, 10, 3)


def lm_shapes(checkpoint):
    _, data, loss = digits(checkpoint)
    return SequenceOutput(), data, loss


def nan_loss(checkpoint):
    model, data, _ = digits(checkpoint)
    return model, data, lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]) * float("nan")


def _tiny():
    """A linear classifier on 32 fixed samples: its checkpoints hold weight [3, 4] and bias [3]."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    y = torch.randint(0, 3, (32,), generator=g)
    return torch.nn.Linear(4, 3), (x, y)


def _at_step_10(checkpoint):
    return os.path.basename(str(checkpoint)).startswith("step-10.")


def _note_pid(what):
    """Writes this worker's pid to $LANDSCAPED_TEST_PID_DIR/<what>.pid (whole, by rename)."""
    d = os.environ.get("LANDSCAPED_TEST_PID_DIR")
    if d:
        tmp = os.path.join(d, "%s.pid.tmp" % what)
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.rename(tmp, os.path.join(d, "%s.pid" % what))


def hangs_at_step_10(checkpoint):
    """A model that hangs: at the checkpoint step-10.* its loss sleeps forever (after noting its pid)."""
    model, data = _tiny()
    hang = _at_step_10(checkpoint)

    def loss(m, batch):
        if hang:
            _note_pid("hang")
            time.sleep(10**9)
        return torch.nn.functional.cross_entropy(m(batch[0]), batch[1])

    return model, data, loss


def allocates_at_step_10(checkpoint):
    """A runaway loss: at the checkpoint step-10.* it allocates 1 GiB after 1 GiB, 16 GiB in all, untouched
    (so without a limit it gets them and goes on, costing no memory; under an address-space limit an
    allocation fails)."""
    model, data = _tiny()
    runaway = _at_step_10(checkpoint)

    def loss(m, batch):
        if runaway:
            _note_pid("runaway")
            hold = [torch.empty(1 << 30, dtype=torch.uint8) for _ in range(16)]
            del hold
        return torch.nn.functional.cross_entropy(m(batch[0]), batch[1])

    return model, data, loss


def _wait_for_rotation(checkpoint, name):
    """At the folder ``name``: notes this worker's pid as ``slow_start`` and waits (at most 120 s) until
    the test says the trainer has rotated that folder away (``$LANDSCAPED_TEST_PID_DIR/rotated``), as a
    worker importing torch on a busy machine may find it."""
    d = os.environ.get("LANDSCAPED_TEST_PID_DIR")
    if d and os.path.basename(str(checkpoint).rstrip("/")) == name:
        _note_pid("slow_start")
        deadline = time.time() + 120
        while not os.path.exists(os.path.join(d, "rotated")) and time.time() < deadline:
            time.sleep(0.05)


def from_pretrained_after_rotation(checkpoint):
    """A Hugging Face factory (``AutoConfig.from_pretrained(checkpoint)`` for the model's config) in a worker
    that starts slowly: at ``checkpoint-10`` it waits until the trainer has rotated the folder away, then
    reads the config as usual."""
    from transformers import AutoConfig

    _wait_for_rotation(checkpoint, "checkpoint-10")
    AutoConfig.from_pretrained(checkpoint)
    model, data = _tiny()
    return model, data, "cross_entropy"


def hf_trainer_slow_start(checkpoint):
    """The factory of tests/python/hf_trainer_rotate.py's tiny GPT-2 (model from the folder's config.json,
    fixed token ids), slow at ``checkpoint-1`` until the Trainer's ``save_total_limit`` has rotated it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    _wait_for_rotation(checkpoint, "checkpoint-1")
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(checkpoint))
    ids = torch.arange(64).remainder(50).view(4, 16)
    return model, ids, "causal_lm"
