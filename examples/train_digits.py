#!/usr/bin/env python3
"""Train a small CNN on scikit-learn's 8x8 digits (nothing is downloaded) and write checkpoints as it
trains, in the layout of your choice, for landscaped to watch or ingest.

    python examples/train_digits.py --out runs/demo --format safetensors --epochs 20

Formats (--format):
  pt           <out>/step-<N>.pt             torch.save({"model": state_dict, "optimizer": ..., "step": N})
  safetensors  <out>/step-<N>.safetensors    safetensors.torch.save_file(state_dict)
  hf           <out>/checkpoint-<N>/         model.safetensors + trainer_state.json (Hugging Face Trainer)
  lightning    <out>/epoch=<E>-step=<N>.ckpt {"state_dict": {"model.<name>": ...}, "global_step": N, ...}

Before training, if examples/landscaped_export.py is present, the model and a fixed evaluation set are
exported to <out>/landscaped/ (TorchScript model.pt + eval.safetensors) for loss-landscape slices.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits


class DigitsCNN(nn.Module):
    """conv(1→16) BN ReLU, conv(16→32) BN ReLU, maxpool, fc(512→64) ReLU, fc(64→10)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def load_data(seed):
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    y = torch.tensor(d.target, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    x, y = x[perm], y[perm]
    n_train = 1500
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def atomic_torch_save(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(model, opt, fmt, out, step, epoch):
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if fmt == "pt":
        atomic_torch_save({"model": sd, "optimizer": opt.state_dict(), "step": step}, os.path.join(out, f"step-{step}.pt"))
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        tmp = os.path.join(out, f".step-{step}.safetensors.tmp")
        save_file(sd, tmp, metadata={"step": str(step)})
        os.replace(tmp, os.path.join(out, f"step-{step}.safetensors"))
    elif fmt == "hf":
        from safetensors.torch import save_file

        final = os.path.join(out, f"checkpoint-{step}")
        tmp = os.path.join(out, f"tmp-checkpoint-{step}")
        os.makedirs(tmp, exist_ok=True)
        save_file(sd, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(tmp, "trainer_state.json"), "w") as f:
            json.dump({"global_step": step, "epoch": float(epoch)}, f)
        torch.save(opt.state_dict(), os.path.join(tmp, "optimizer.pt"))
        os.replace(tmp, final)
    elif fmt == "lightning":
        ckpt = {
            "epoch": epoch,
            "global_step": step,
            "pytorch-lightning_version": "2.4.0",
            "state_dict": {f"model.{k}": v for k, v in sd.items()},
            "optimizer_states": [opt.state_dict()],
            "lr_schedulers": [],
        }
        atomic_torch_save(ckpt, os.path.join(out, f"epoch={epoch}-step={step}.ckpt"))
    else:
        raise ValueError(fmt)


def export_for_landscaped(model, xte, yte, out_dir):
    """Hands the model and a fixed evaluation set to landscaped (loss-landscape slices), once, before
    training, if the helper exists: the daemon can slice from the first checkpoint on. The weights come
    from each checkpoint, so exporting the untrained model is enough."""
    here = os.path.dirname(os.path.abspath(__file__))
    if not os.path.exists(os.path.join(here, "landscaped_export.py")):
        return
    sys.path.insert(0, here)
    try:
        from landscaped_export import export

        export(model, xte, yte, out_dir, loss="cross_entropy")
        print(f"exported model and eval set to {out_dir}", flush=True)
    except Exception as e:  # the export is an extra: never lose the training run over it
        print(f"warning: landscaped export failed: {e}", file=sys.stderr)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--format", choices=["pt", "safetensors", "hf", "lightning"], default="safetensors")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (default: every epoch)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    (xtr, ytr), (xte, yte) = load_data(args.seed)
    model = DigitsCNN()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    g = torch.Generator().manual_seed(args.seed + 1)
    step = 0
    export_for_landscaped(model, xte, yte, os.path.join(args.out, "landscaped"))
    t0 = time.time()
    save_checkpoint(model, opt, args.format, args.out, step, 0)
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(len(ytr), generator=g)
        for i in range(0, len(ytr), args.batch_size):
            idx = perm[i : i + args.batch_size]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if args.save_every and step % args.save_every == 0:
                save_checkpoint(model, opt, args.format, args.out, step, epoch)
        if not args.save_every:
            save_checkpoint(model, opt, args.format, args.out, step, epoch)
        model.eval()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
            norm = torch.sqrt(sum((p.double() ** 2).sum() for p in model.parameters())).item()
        print(f"epoch {epoch:3d} step {step:5d} loss {loss.item():.4f} test acc {acc:.3f} ‖θ‖ {norm:.3f}", flush=True)
    print(f"trained in {time.time() - t0:.1f} s; checkpoints in {args.out}")



if __name__ == "__main__":
    main()
