"""An HF ``Trainer`` run with ``save_total_limit=1`` into OUT (tests/daemon_jobs.rs): a tiny GPT-2, a
checkpoint every step for 3 steps, so each save rotates the one before away. After the first save it
waits (at most 120 s) until the daemon's worker for that checkpoint has started
(``PIDS/slow_start.pid``), so the rotation happens while that worker is still starting."""

import os
import sys
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments


class WaitForWorker(TrainerCallback):
    def __init__(self, pids):
        self.pids = pids

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 1:
            deadline = time.time() + 120
            while not os.path.exists(os.path.join(self.pids, "slow_start.pid")) and time.time() < deadline:
                time.sleep(0.05)
        return control


def main(out, pids):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2))
    ids = torch.arange(64).remainder(50).view(4, 16)
    data = [{"input_ids": r, "labels": r} for r in ids]
    args = TrainingArguments(
        output_dir=out,
        max_steps=3,
        save_steps=1,
        save_total_limit=1,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        use_cpu=True,
        logging_strategy="no",
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=data, callbacks=[WaitForWorker(pids)]).train()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
