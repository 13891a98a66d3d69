"""The tiny model of the stability references (stability_reference.py, stability_state_reference.py):
Linear(4, 6) → tanh → Linear(6, 3), scripted to TorchScript there for the tch worker."""

import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))
