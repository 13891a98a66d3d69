"""Hands a model over to landscaped, once, from a training script (the model contract).

    from landscaped_export import export
    export(model, inputs, targets, "runs/my-run/landscaped", loss="cross_entropy")

writes, into out_dir:
  model.pt             the module as TorchScript (scripted if possible, else traced on one batch), on CPU
  eval.safetensors     the evaluation set: `inputs` and `targets` (shuffled once with a fixed seed, so
                       `--subsample N` takes a fair first N)
  landscaped.toml      the loss name and what the module holds (parameter and buffer names, shapes)

loss: "cross_entropy" (default; logits and integer classes), "mse", "nll" (the model outputs
log-probabilities), or "method" (the module's own `loss(inputs, targets)`, marked @torch.jit.export,
returning the mean loss). Checkpoints are matched to the module by name (prefixes `module.`, `model.`,
`_orig_mod.` are ignored), so keep saving `model.state_dict()` as usual.
"""

import copy
import os

import torch

LOSSES = ("cross_entropy", "mse", "nll", "method")


def _script_or_trace(model, example):
    try:
        return torch.jit.script(model), "scripted"
    except Exception as script_error:  # noqa: BLE001 - fall back to tracing, reported below
        try:
            with torch.no_grad():
                return torch.jit.trace(model, (example,), check_trace=False), "traced"
        except Exception as trace_error:  # noqa: BLE001
            raise RuntimeError(
                f"landscaped export: the model can be neither scripted ({script_error}) nor traced ({trace_error})"
            ) from trace_error


def _toml_str(s):
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def export(model, inputs, targets, out_dir, loss="cross_entropy", seed=0):
    if loss not in LOSSES:
        raise ValueError(f"landscaped export: loss must be one of {LOSSES}, not {loss!r}")
    os.makedirs(out_dir, exist_ok=True)
    inputs = torch.as_tensor(inputs).detach().cpu()
    targets = torch.as_tensor(targets).detach().cpu()
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"landscaped export: {inputs.shape[0]} inputs but {targets.shape[0]} targets")

    # Export a CPU copy in eval mode; the caller's model (and its device and mode) is left alone.
    m = copy.deepcopy(model).cpu().eval()
    m = getattr(m, "_orig_mod", m)  # torch.compile wrapper
    m = getattr(m, "module", m) if isinstance(m, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)) else m
    if loss == "method":
        ts, how = torch.jit.script(m), "scripted"
    else:
        ts, how = _script_or_trace(m, inputs[: min(8, inputs.shape[0])].float() if inputs.is_floating_point() else inputs[:8])
    ts.eval()
    ts.save(os.path.join(out_dir, "model.pt"))

    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(inputs.shape[0], generator=g)
    from safetensors.torch import save_file

    save_file(
        {"inputs": inputs[order].contiguous(), "targets": targets[order].contiguous()},
        os.path.join(out_dir, "eval.safetensors"),
    )

    lines = [
        "# written by examples/landscaped_export.py: the model contract for landscaped",
        f"loss = {_toml_str(loss)}",
        'model = "model.pt"',
        'eval_data = "eval.safetensors"',
        f"torchscript = {_toml_str(how)}",
        f"torch_version = {_toml_str(torch.__version__)}",
        f"samples = {inputs.shape[0]}",
        "parameters = [" + ", ".join(_toml_str(n) for n, _ in m.named_parameters()) + "]",
        "buffers = [" + ", ".join(_toml_str(n) for n, _ in m.named_buffers()) + "]",
    ]
    with open(os.path.join(out_dir, "landscaped.toml"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return out_dir
