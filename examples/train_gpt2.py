#!/usr/bin/env python3
"""Train a tiny GPT-2 (GPT2Config(n_layer=2, n_head=2, n_embd=64), built from its config: nothing is
downloaded) on a synthetic next-token task and save checkpoints as the Hugging Face Trainer does
(<out>/checkpoint-<N>/ with model.safetensors, config.json and trainer_state.json; the tied lm_head.weight
is not stored), keeping the last --keep of them (the Trainer's save_total_limit). Also writes the fixed
evaluation text, <out>/eval_ids.safetensors (input_ids [N, T]), which examples/gpt2_factory.py reads.

    python examples/train_gpt2.py --out runs/gpt2 --steps 120 --save-every 20
    landscaped slice --checkpoint runs/gpt2/checkpoint-120 --backend python --python .venv/bin/python \\
        --factory gpt2_factory:build --loss causal_lm --batch-size 8 --x=-1:1:21   # PYTHONPATH=examples
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

VOCAB, T = 96, 16


def sequences(n, seed):
    """Arithmetic sequences mod VOCAB: the next token follows from the last two."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, VOCAB, (n, 1), generator=g)
    step = torch.randint(1, 4, (n, 1), generator=g)
    return (start + step * torch.arange(T)) % VOCAB


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--save-every", type=int, default=20)
    p.add_argument("--keep", type=int, default=4, help="checkpoints kept (save_total_limit)")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    os.makedirs(a.out, exist_ok=True)
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=VOCAB, n_positions=32, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    save_file({"input_ids": sequences(32, 2).contiguous()}, os.path.join(a.out, "eval_ids.safetensors"))
    train = sequences(1024, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    saved = []
    for step in range(1, a.steps + 1):
        model.train()
        b = train[((step - 1) * 16) % 1024 :][:16]
        loss = model(input_ids=b, labels=b).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % a.save_every == 0:
            ck = os.path.join(a.out, "checkpoint-%d" % step)
            model.save_pretrained(ck)
            with open(os.path.join(ck, "trainer_state.json"), "w") as f:
                json.dump({"global_step": step, "log_history": [{"step": step, "loss": loss.item()}]}, f)
            saved.append(ck)
            while len(saved) > a.keep:
                shutil.rmtree(saved.pop(0))
            print(f"step {step:4d} loss {loss.item():.4f} saved {ck}", flush=True)


if __name__ == "__main__":
    main()
