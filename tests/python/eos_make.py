"""Cohen et al. 2021 Fig. 1 in miniature, for tests/stability_eos.rs: full-batch gradient descent
(torch.optim.SGD, no momentum) on a tanh MLP (64-32-32-10) with the square loss ½‖f(x) − y‖² averaged over
1000 digits (scikit-learn's bundled set), from one initialization, at the learning rate given; a
checkpoint every EVERY steps (step-N.safetensors, the state dict) into OUT_DIR/ck, and the TorchScript model
whose `loss(inputs, targets)` is the same loss (OUT_DIR/model.pt) with the training set as its evaluation
set (OUT_DIR/eval.safetensors); with adam also Adam's exp_avg_sq (OUT_DIR/v-N.safetensors) and the
checkpoint with its optimizer state (OUT_DIR/state/step-N.pt). Usage: eos_make.py OUT_DIR LR STEPS EVERY [sgd|adam]."""

import sys
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file
from sklearn.datasets import load_digits

out, lr, steps, every = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
(out / "ck").mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)
d = load_digits()
x = torch.tensor(d.data[:1000], dtype=torch.float32) / 16.0
y = nn.functional.one_hot(torch.tensor(d.target[:1000]), 10).float()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 32)
        self.fc3 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))

    @torch.jit.export
    def loss(self, x, y):
        return 0.5 * ((self.forward(x) - y) ** 2).sum(1).mean()


torch.manual_seed(0)
net = Net()
torch.jit.script(net).save(str(out / "model.pt"))
save_file({"inputs": x.contiguous(), "targets": y.contiguous()}, str(out / "eval.safetensors"))
adam = len(sys.argv) > 5 and sys.argv[5] == "adam"
opt = torch.optim.Adam(net.parameters(), lr=lr) if adam else torch.optim.SGD(net.parameters(), lr=lr)
for s in range(steps + 1):
    if s % every == 0 and s > 0:
        save_file(
            {k: v.contiguous() for k, v in net.state_dict().items()}, str(out / "ck" / ("step-%d.safetensors" % s))
        )
        if adam:
            v = {n: opt.state[p]["exp_avg_sq"].contiguous() for n, p in net.named_parameters()}
            save_file(v, str(out / ("v-%d.safetensors" % s)))
            # The same checkpoint with its optimizer's own state, as a trainer saves it.
            (out / "state").mkdir(exist_ok=True)
            torch.save(
                {"model": net.state_dict(), "optimizer": opt.state_dict()}, str(out / "state" / ("step-%d.pt" % s))
            )
    opt.zero_grad()
    net.loss(x, y).backward()
    opt.step()
