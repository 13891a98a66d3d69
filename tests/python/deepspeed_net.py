"""The factory contract for the `Net` of deepspeed_make.py (tests/optimizer_state.rs runs the stability job
on the committed DeepSpeed folders with it): the same module, and an evaluation set made here from a fixed
seed (16 samples, zero targets, mean squared error: the training loss of deepspeed_make.py)."""

import torch


class Net(torch.nn.Module):
    """deepspeed_make.py's `Net` (a frozen parameter and a buffer beside the trained ones)."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(5, 3)
        self.norm = torch.nn.LayerNorm(3)
        self.fc2 = torch.nn.Linear(3, 2)
        self.frozen = torch.nn.Parameter(torch.linspace(-1, 1, 7), requires_grad=False)
        self.register_buffer("scale", torch.tensor([0.5, 2.0, 3.0]))

    def forward(self, x):
        return self.fc2(self.norm(self.fc1(x)) * self.scale) + self.frozen.sum()

    @staticmethod
    def batch(g):
        """A training batch of deepspeed_make.py."""
        return torch.randn(2, 5, generator=g)


def eval_set():
    g = torch.Generator().manual_seed(7)
    return torch.randn(16, 5, generator=g), torch.zeros(16, 2)


def build(checkpoint):
    return Net(), eval_set(), "mse"
