"""Factories that go wrong in the ways a user's factory can (for the Python-worker tests), and one whose
model's output doesn't fit the targets."""

import os
import sys

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
