#!/usr/bin/env python3
"""Writes tests/fixtures/deepspeed/ with DeepSpeed itself (CPU, gloo). Not run by the tests: DeepSpeed is
not in python/requirements.txt (it builds from source and pulls in pydantic etc.); the small files it
writes are committed instead. To regenerate:

    pip install --no-deps --target /tmp/dspkgs deepspeed hjson py-cpuinfo ninja einops msgpack pydantic \
        pydantic-core annotated-types typing-inspection psutil tqdm packaging
    PYTHONPATH=/tmp/dspkgs .venv/bin/python tests/python/deepspeed_make.py tests/fixtures/deepspeed

(`--no-deps`: DeepSpeed's own requirements would download a second torch.) It writes, each after 3
optimizer steps:
- OUT/zero2/ (ZeRO-2, fp32, world size 1) and OUT/zero3/ (ZeRO-3, fp32, world size 2), of `Net`: a frozen
  parameter and a buffer;
- OUT/groups_zero2/, OUT/groups_zero3/ (fp32, world size 2) of `Net` under AdamW with two param groups
  (decay / no decay, their own learning rates) and a StepLR scheduler;
- OUT/zero2_bf16/, OUT/zero2_fp16/, OUT/zero3_bf16/ (world size 2) and OUT/tied_zero2/, OUT/tied_zero3/
  (fp32, world size 2), of `TiedNet`: an embedding tied to the LM head (one Parameter under two names),
  a LayerNorm, a frozen parameter, no buffer. The bf16/fp16 runs train the module in low precision
  with fp32 master weights in the optimizer partitions; the three bf16/fp16 runs see the same data;
- OUT/fused_zero2/, OUT/cpuadam_zero2/, OUT/fused_nobc_zero2/ (ZeRO-2, fp32, world size 1) of `Net` under
  the optimizer DeepSpeed builds from its config's "AdamW" (lr 0.05, weight decay 0.1): its FusedAdam op,
  DeepSpeedCPUAdam with the optimizer offloaded, and FusedAdam with `bias_correction` off (both ops built
  by DeepSpeed's JIT with g++ and the ninja from the --target folder on PATH: `PATH=/tmp/dspkgs/bin:$PATH`);
  beside each, OUT/<name>_delta.safetensors: θ − θ_next of the step DeepSpeed's optimizer takes next, on the
  full-batch gradient of deepspeed_net.py's evaluation loss (gradient clipping off in these runs: DeepSpeed
  0.19.8 clips to norm 1.0 by default, which the step would include).

Beside each OUT/<name>/: OUT/<name>_fp32.safetensors, the state dict DeepSpeed's own zero_to_fp32
rebuilds from it (get_fp32_state_dict_from_zero_checkpoint; the tied name's alias dropped, since
safetensors can't hold shared tensors: OUT/<name>.json lists it), for ZeRO-2 OUT/<name>_module.safetensors
(the module's own low-precision weights, `module.*` keys, aliases dropped likewise), and in OUT/<name>.json
the norm PyTorch gives: sqrt of the sum of squares over `model.parameters()` of a fresh model loaded
with zero_to_fp32's state dict (each shared Parameter once), in float64; OUT/<name>_optim.safetensors:
Adam's `exp_avg.<param>` and `exp_avg_sq.<param>` of every trainable parameter as DeepSpeed's
`safe_get_full_optimizer_state` gathers them from the ranks; OUT/<name>_optim.json: the optimizer state as
PyTorch's torch.load reads the saved files (with DeepSpeed importable for its classes): rank 0's base
optimizer param groups (hyperparameters, step, and the names DeepSpeed's `param_shapes` records for their
flat groups; every rank's param groups checked equal), the model's `named_parameters()` order, and per
parameter Adam's telemetry in float64 NumPy from the gathered state (effective step size η/(√v̂+ε):
harmonic mean and `inverted_cdf` quantiles; RMS of m̂/(√v̂+ε)). `--optim-reference [NAME...]` writes only
these JSON files from the folders already in OUT.
zero_to_fp32.py / zero_to_torch.py copies DeepSpeed drops into the save dir are removed.
"""

import importlib
import json
import os
import subprocess
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from deepspeed_net import Net  # noqa: E402

OUT = os.path.abspath(sys.argv[1])


# `Net` (a frozen parameter and a buffer) lives in deepspeed_net.py, which the stability test's factory
# imports too.


class TiedNet(torch.nn.Module):
    """An embedding tied to the LM head, as GPT-2 / Llama with tie_word_embeddings do."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(11, 6)
        self.norm = torch.nn.LayerNorm(6)
        self.fc = torch.nn.Linear(6, 6)
        self.head = torch.nn.Linear(6, 11, bias=False)
        self.head.weight = self.emb.weight
        self.frozen = torch.nn.Parameter(torch.linspace(-1, 1, 5), requires_grad=False)

    def forward(self, x):
        return self.head(torch.tanh(self.fc(self.norm(self.emb(x))))) + self.frozen.sum()

    @staticmethod
    def batch(g):
        return torch.randint(0, 11, (2, 4), generator=g)


# name: (model, ZeRO stage, precision, world size)
RUNS = {
    "zero2": (Net, 2, "fp32", 1),
    "zero3": (Net, 3, "fp32", 2),
    "zero2_bf16": (TiedNet, 2, "bf16", 2),
    "zero2_fp16": (TiedNet, 2, "fp16", 2),
    "zero3_bf16": (TiedNet, 3, "bf16", 2),
    "tied_zero2": (TiedNet, 2, "fp32", 2),
    "tied_zero3": (TiedNet, 3, "fp32", 2),
    "groups_zero2": (Net, 2, "fp32", 2),
    "groups_zero3": (Net, 3, "fp32", 2),
    "fused_zero2": (Net, 2, "fp32", 1),
    "cpuadam_zero2": (Net, 2, "fp32", 1),
    "fused_nobc_zero2": (Net, 2, "fp32", 1),
}
# Runs whose optimizer DeepSpeed builds from its config ("AdamW", weight decay 0.1) instead of a torch
# optimizer: its FusedAdam (the default; the CPU accelerator's op) and, with the optimizer offloaded,
# DeepSpeedCPUAdam; and FusedAdam with `bias_correction` off. Their param groups carry `bias_correction`
# and no `adam_w_mode`; both ops are built by DeepSpeed's JIT (g++ and ninja). name: (zero_optimization
# keys, optimizer params beyond lr and weight decay).
DS_OPTIMIZER = {
    "fused_zero2": ({}, {}),
    "cpuadam_zero2": ({"offload_optimizer": {"device": "cpu"}}, {}),
    "fused_nobc_zero2": ({}, {"bias_correction": False}),
}
# Runs whose optimizer is AdamW over two param groups (weights: lr 0.05, weight decay 0.1; biases and
# norms: lr 0.02, no decay) under PyTorch's StepLR (halving every 2 steps), as HF Trainer builds them.
GROUPED = {"groups_zero2", "groups_zero3"}


def train(name):
    import deepspeed

    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None  # no JIT op build on CPU
    # DeepSpeed's CPU accelerator declines fp16 in its sanity check; torch runs these fp16 ops on CPU.
    acc = deepspeed.accelerator.get_accelerator()
    acc.is_fp16_supported = lambda: True
    acc.supported_dtypes = lambda: [torch.float, torch.half, torch.bfloat16]
    model, stage, precision, _ = RUNS[name]
    torch.manual_seed(0)
    m = model()
    cfg = {
        "train_micro_batch_size_per_gpu": 2,
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,
    }
    if precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    if precision == "fp16":
        cfg["fp16"] = {"enabled": True, "initial_scale_power": 4}
    params = [p for p in m.parameters() if p.requires_grad]
    opt, sched = torch.optim.Adam(params, lr=0.05), None
    if name in DS_OPTIMIZER:
        zero, extra = DS_OPTIMIZER[name]
        cfg["optimizer"] = {"type": "AdamW", "params": {"lr": 0.05, "weight_decay": 0.1, **extra}}
        # DeepSpeed clips the gradient to norm 1.0 unless told otherwise (0.19.8's default): off, so that
        # the next step (OUT/<name>_delta.safetensors) is the optimizer's rule on the plain gradient.
        cfg["gradient_clipping"] = 0.0
        cfg["zero_optimization"].update(zero)
        opt = None
    if name in GROUPED:
        named = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
        decay = [p for n, p in named if n.endswith("weight") and "norm" not in n]
        rest = [p for n, p in named if not (n.endswith("weight") and "norm" not in n)]
        groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "lr": 0.02, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=0.05)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    eng, _, _, _ = deepspeed.initialize(
        model=m, model_parameters=params if opt is None else None, optimizer=opt, lr_scheduler=sched, config=cfg
    )
    print(f"{name}: {type(eng.optimizer).__name__} over {type(getattr(eng.optimizer, 'optimizer', None)).__name__}")
    g = torch.Generator().manual_seed(1 + int(os.environ.get("RANK", "0")))
    for _ in range(3):
        loss = eng(model.batch(g)).float().pow(2).mean()
        eng.backward(loss)
        eng.step()
    eng.save_checkpoint(os.path.join(OUT, name))
    # Adam's state of every trainable parameter, gathered by DeepSpeed itself (a collective call).
    from deepspeed.utils import safe_get_full_optimizer_state

    optim = {}
    if hasattr(eng.optimizer, "_hp_optimizer_states_linked"):
        # ZeRO-1/2 links each parameter to its optimizer-state fragment once, after the first group's
        # step, when later groups have no state yet (DeepSpeed 0.19.8): link again now that all have.
        eng.optimizer._hp_optimizer_states_linked = False
        eng.optimizer._lazy_init_hp_params_optimizer_state()
    for n, p in eng.module.named_parameters():
        if p.requires_grad:
            for key in ["exp_avg", "exp_avg_sq"]:
                optim[f"{key}.{n}"] = safe_get_full_optimizer_state(p, key).detach().float().contiguous()
    if int(os.environ.get("RANK", "0")) == 0:
        save_file(optim, os.path.join(OUT, f"{name}_optim.safetensors"))
    if stage == 2 and int(os.environ.get("RANK", "0")) == 0:
        sd = {"module." + k: v.contiguous() for k, v in without_aliases(eng.module.state_dict()).items()}
        save_file(sd, os.path.join(OUT, f"{name}_module.safetensors"))
    if name in DS_OPTIMIZER:
        # The step DeepSpeed's own optimizer takes next, from the saved state, on the full-batch gradient of
        # deepspeed_net.py's evaluation loss (what the stability job forms): OUT/<name>_delta.safetensors,
        # θ − θ_next by parameter name.
        from deepspeed_net import eval_set

        x, y = eval_set()
        before = {n: p.detach().clone() for n, p in eng.module.named_parameters() if p.requires_grad}
        eng.backward(torch.nn.functional.mse_loss(eng(x), y))
        eng.step()
        after = dict(eng.module.named_parameters())
        delta = {n: (b - after[n].detach()).contiguous() for n, b in before.items()}
        save_file(delta, os.path.join(OUT, f"{name}_delta.safetensors"))


def without_aliases(sd):
    """The state dict with every name after the first of a shared storage dropped."""
    seen, out = set(), {}
    for k, v in sd.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()))
        if key not in seen:
            seen.add(key)
            out[k] = v
    return out


def references(name):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    d = os.path.join(OUT, name)
    sd = get_fp32_state_dict_from_zero_checkpoint(d)
    kept = without_aliases(sd)
    save_file({k: v.contiguous() for k, v in kept.items()}, os.path.join(OUT, f"{name}_fp32.safetensors"))
    m = RUNS[name][0]()
    m.load_state_dict({k: v.float() for k, v in sd.items()})
    norm = sum(p.detach().double().pow(2).sum() for p in m.parameters()).sqrt().item()
    meta = {"aliases": sorted(set(sd) - set(kept)), "parameters_norm": norm}
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=1)
    for extra in ["zero_to_fp32.py", "zero_to_torch.py"]:
        if os.path.exists(os.path.join(d, extra)):
            os.remove(os.path.join(d, extra))


QS = [0.01, 0.1, 0.5, 0.9, 0.99]


def adam_figures(lr, b1, b2, eps, step, m, v, bias_correction=True):
    """PyTorch's Adam: update = lr · m̂/(√v̂+ε), m̂ = m/(1−β1^t), v̂ = v/(1−β2^t); DeepSpeed's Adam with
    `bias_correction` off takes both corrections as 1 (csrc/includes/cpu_adam.h, `update_state`)."""
    import numpy as np

    m = m.astype(np.float64).ravel()
    v = v.astype(np.float64).ravel()
    bc1, bc2 = (1 - b1**step, 1 - b2**step) if bias_correction else (1.0, 1.0)
    denom = np.sqrt(v / bc2) + eps
    eff = lr / denom
    upd = (m / bc1) / denom
    return {
        "harmonic_mean": float(eff.size / np.sum(1.0 / eff)),
        "quantiles": [float(np.quantile(eff, q, method="inverted_cdf")) for q in QS],
        "update_rms": float(np.sqrt(np.mean(upd**2))),
    }


def scalar(v):
    if torch.is_tensor(v):
        return v.item()
    if isinstance(v, tuple):
        return list(v)
    return v


def optim_reference(name):
    """OUT/<name>_optim.json (see the module docs)."""
    from safetensors.numpy import load_file

    d = os.path.join(OUT, name)
    step_dir = os.path.join(d, open(os.path.join(d, "latest")).read().strip())
    files = sorted(os.listdir(step_dir))
    optims = [f for f in files if f.endswith("_optim_states.pt")]
    models = [f for f in files if f.endswith("_model_states.pt")]
    zero3 = RUNS[name][1] == 3
    ms = torch.load(os.path.join(step_dir, models[0]), map_location="cpu", weights_only=False)
    base_groups = []
    for f in optims:
        osd = torch.load(os.path.join(step_dir, f), map_location="cpu", weights_only=False)["optimizer_state_dict"]
        base = osd["optimizer_state_dict"] if zero3 else osd["base_optimizer_state"]
        base_groups.append(base)
    base = base_groups[0]
    groups = []
    for g in base["param_groups"]:
        hyper = {k: scalar(v) for k, v in g.items() if k not in ("params", "param_names")}
        for other in base_groups[1:]:
            assert {k: scalar(v) for k, v in other["param_groups"][len(groups)].items() if k != "params"} == hyper
        names = [n for i in g["params"] for n in ms["param_shapes"][i]]
        step = scalar(base["state"][g["params"][0]]["step"])
        groups.append({"hyper": hyper, "params": names, "step": step})
    gathered = load_file(os.path.join(OUT, f"{name}_optim.safetensors"))
    trainable = [k[len("exp_avg.") :] for k in gathered if k.startswith("exp_avg.")]
    assert sorted(trainable) == sorted(n for g in groups for n in g["params"]), (trainable, groups)
    telemetry = {}
    for g in groups:
        h = g["hyper"]
        for n in g["params"]:
            m, v = gathered[f"exp_avg.{n}"], gathered[f"exp_avg_sq.{n}"]
            bc = h.get("bias_correction", True)
            telemetry[n] = adam_figures(h["lr"], h["betas"][0], h["betas"][1], h["eps"], g["step"], m, v, bc)
    sched = ms.get("lr_scheduler")
    order = [{"name": n, "shape": list(p.shape)} for n, p in RUNS[name][0]().named_parameters()]
    ref = {
        "groups": groups,
        "order": order,
        "scheduler_last_lr": sched.get("_last_lr") if isinstance(sched, dict) else None,
        "telemetry": telemetry,
    }
    with open(os.path.join(OUT, f"{name}_optim.json"), "w") as f:
        json.dump(ref, f, indent=1)


def main():
    if "--optim-reference" in sys.argv:
        for name in sys.argv[sys.argv.index("--optim-reference") + 1 :] or list(RUNS):
            optim_reference(name)
        return
    if "--train" in sys.argv:
        train(sys.argv[sys.argv.index("--train") + 1])
        return
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    only = sys.argv[2:] or list(RUNS)
    for port, name in enumerate(only, start=29562):
        world = RUNS[name][3]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world)]
        cmd += ["--master-port", str(port), __file__, OUT, "--train", name]
        subprocess.run(cmd, check=True, env=env)
        references(name)
        optim_reference(name)


if __name__ == "__main__":
    main()
