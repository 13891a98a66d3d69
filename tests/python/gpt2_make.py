"""A tiny GPT-2 (GPT2Config(n_layer=2, n_head=2, n_embd=64), a 96-token vocabulary, built from the config:
no downloads) trained for a few steps on a synthetic next-token task by the Hugging Face Trainer itself
(checkpoint-N/ folders with model.safetensors — lm_head.weight tied to wte and not stored —, config.json,
trainer_state.json and the optimizer's files; save_total_limit=2), plus the fixed evaluation token ids
and plain-PyTorch reference values.

usage: gpt2_make.py OUT_DIR [--trainer-out DIR] [--steps N] [--power-iterations K] [--tensorboard]

Writes OUT_DIR/checkpoint-N/, OUT_DIR/eval_ids.safetensors (input_ids [8, 16]) and OUT_DIR/reference.json:
`own_loss` (the mean of model(input_ids, labels=input_ids).loss over the evaluation batches of 4) and
`lambda_power` (a power iteration on the Hessian of that loss, double backward in plain PyTorch, from
torch.manual_seed(0); torch.randn(d), after --power-iterations steps) and `lambda_converged` (the same
iteration continued until λ changes by < 1e-6 relative), with the math attention kernel (the fused ones
have no double backward). With --tensorboard the Trainer logs to TensorBoard every step
(`report_to=["tensorboard"]`, into $TENSORBOARD_LOGGING_DIR, as a user's run does).
"""

import argparse
import json
import os

import torch
from safetensors.torch import save_file
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import GPT2Config, GPT2LMHeadModel

VOCAB, T = 96, 16


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, VOCAB, (n, 1), generator=g)
    step = torch.randint(1, 4, (n, 1), generator=g)
    return (start + step * torch.arange(T)) % VOCAB  # arithmetic sequences: learnable next tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--trainer-out", help="where the Trainer writes checkpoint-N/ (default OUT_DIR)")
    ap.add_argument("--power-iterations", type=int, default=20)
    ap.add_argument("--tensorboard", action="store_true", help="report_to tensorboard, logging every step")
    ap.add_argument("--converge", type=int, default=300, help="further iterations at most, until λ changes < 1e-6")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=VOCAB, n_positions=32, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    train = data(256, 1)
    # The evaluation ids first: a daemon watching the Trainer's folder evaluates checkpoints as they come.
    ev = data(8, 2)
    os.makedirs(a.out, exist_ok=True)
    save_file({"input_ids": ev.contiguous()}, os.path.join(a.out, "eval_ids.safetensors"))
    out = a.trainer_out or a.out
    # The real Hugging Face Trainer on the CPU, as a user runs it: it writes checkpoint-N/ folders
    # (model.safetensors without the tied lm_head.weight, config.json, trainer_state.json, optimizer.pt,
    # scheduler.pt, rng_state.pth, training_args.bin) and keeps the last `save_total_limit` of them.
    from transformers import Trainer, TrainingArguments

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return train.shape[0]

        def __getitem__(self, i):
            return {"input_ids": train[i], "labels": train[i]}

    args = TrainingArguments(
        output_dir=out,
        max_steps=a.steps,
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        save_strategy="steps",
        save_steps=max(1, a.steps // 3),
        save_total_limit=2,
        logging_strategy="steps" if a.tensorboard else "no",
        logging_steps=1,
        report_to=["tensorboard"] if a.tensorboard else [],
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=Rows()).train()
    ck = os.path.join(out, "checkpoint-%d" % a.steps)
    assert os.path.isfile(os.path.join(ck, "model.safetensors")), os.listdir(out)
    model.eval()
    batches = [ev[0:4], ev[4:8]]
    with torch.no_grad():
        own = sum(model(input_ids=b, labels=b).loss.item() for b in batches) / len(batches)
    params = [p for p in model.parameters() if p.requires_grad]
    dim = sum(p.numel() for p in params)

    def hvp(v):
        vs, off = [], 0
        for p in params:
            vs.append(v[off : off + p.numel()].float().view_as(p))
            off += p.numel()
        acc = torch.zeros(dim, dtype=torch.float64)
        with sdpa_kernel([SDPBackend.MATH]):
            for b in batches:
                loss = model(input_ids=b, labels=b).loss
                g = torch.autograd.grad(loss, params, create_graph=True)
                dot = sum((gi * vi).sum() for gi, vi in zip(g, vs))
                hv = torch.autograd.grad(dot, params)
                acc += torch.cat([h.reshape(-1) for h in hv]).double() / len(batches)
        return acc

    torch.manual_seed(0)
    v = torch.randn(dim).double()
    v /= v.norm()
    lam, converged = 0.0, float("nan")
    for i in range(a.power_iterations + (a.converge if a.power_iterations else 0)):
        hv = hvp(v)
        prev, lam_i = converged, float(v @ hv)
        if i < a.power_iterations:
            lam = lam_i  # after exactly --power-iterations steps (the worker's run repeats them)
        converged = lam_i
        v = hv / hv.norm()
        if i >= a.power_iterations and abs(lam_i - prev) <= 1e-6 * abs(lam_i):
            break
    with open(os.path.join(a.out, "reference.json"), "w") as f:
        json.dump(
            {"own_loss": own, "lambda_power": lam, "lambda_converged": converged, "dim": dim, "checkpoint": ck}, f
        )


if __name__ == "__main__":
    main()
