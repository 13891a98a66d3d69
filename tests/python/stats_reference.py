#!/usr/bin/env python3
"""Reference weight statistics for tests/stats_agreement.rs.

Writes, under OUT, runs of three checkpoints each in every format (safetensors file, HF folder with one
safetensors file, HF sharded safetensors, HF pytorch_model.bin, torch.save .pt (flat and nested under
"model"), Lightning .ckpt) and dtype (f32, f16, bf16, f64), plus one checkpoint with NaN/Inf, a run of three checkpoints whose tensors are over 8 MiB each (f32,
bf16, f64; safetensors and .pt) so that they are streamed in several chunks by several threads, and
OUT/manifest.json with what PyTorch computes in float64 on the values as stored:
torch.linalg.vector_norm, mean, std (unbiased), min, max, abs().max(), exact-zero fraction, NaN/Inf counts,
torch.histc(bins=30) — over the finite elements — and per checkpoint the global norm, the distance from the
run's first checkpoint, the update norm and the cosine between consecutive updates.
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file

OUT = sys.argv[1]
BINS = 30
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "f64": torch.float64}
FORMATS = ["safetensors", "hf", "hf_sharded", "hf_bin", "pt", "pt_nested", "lightning"]
STEPS = [100, 200, 300]


def make_state(step_idx, dtype, gen):
    """A small CNN-like state dict that drifts from checkpoint to checkpoint."""
    torch.manual_seed(1234)  # same base every checkpoint, then a step-dependent drift
    base = {
        "conv1.weight": torch.randn(16, 1, 3, 3) * 0.3 + 0.05,
        "conv1.bias": torch.zeros(16),  # exact zeros
        "bn1.weight": torch.ones(16),  # constant: histc widens the range to [x-1, x+1]
        "bn1.bias": torch.linspace(-1, 1, 16),
        "bn1.running_mean": torch.randn(16) * 1e-3,
        "fc.weight": torch.randn(64, 300) * 0.05 + 10.0,  # offset: hard for one-pass variance
        "fc.bias": torch.randn(64) * 1e-4,
    }
    sd = {}
    for k, v in base.items():
        drift = torch.randn(v.shape, generator=gen) * 0.01 * step_idx if k != "bn1.weight" else 0.0
        t = v + drift
        if k == "conv1.bias":
            t = torch.zeros(16)
            t[:step_idx] = 0.5 * step_idx
        sd[k] = t.to(dtype)
    sd["bn1.num_batches_tracked"] = torch.tensor(step_idx * 10, dtype=torch.int64)
    return sd


def f(x):
    return float(x)


def tensor_ref(t):
    x = t.detach().to(torch.float64).flatten()
    fin = x[torch.isfinite(x)]
    n = fin.numel()
    lo, hi = fin.min(), fin.max()
    return {
        "numel": x.numel(),
        "l2": f(torch.linalg.vector_norm(fin)),
        "mean": f(fin.mean()),
        "std": f(fin.std()) if n >= 2 else None,  # unbiased (torch default)
        "min": f(lo),
        "max": f(hi),
        "max_abs": f(fin.abs().max()),
        "zero_frac": f((x == 0).sum()) / x.numel(),
        "nan_count": int(torch.isnan(x).sum()),
        "inf_count": int(torch.isinf(x).sum()),
        "hist": [int(c) for c in torch.histc(fin, bins=BINS, min=0, max=0)],
        # the range histc used: data range, or [x-1, x+1] for a constant tensor
        "hist_lo": f(lo) if lo != hi else f(lo) - 1.0,
        "hist_hi": f(hi) if lo != hi else f(hi) + 1.0,
    }


def flat(sd):
    return torch.cat([v.to(torch.float64).flatten() for k, v in sorted(sd.items()) if v.is_floating_point()])


def write(fmt, sd, run_dir, step):
    os.makedirs(run_dir, exist_ok=True)
    if fmt == "safetensors":
        p = os.path.join(run_dir, f"step-{step}.safetensors")
        save_file(sd, p)
    elif fmt in ("hf", "hf_sharded", "hf_bin"):
        p = os.path.join(run_dir, f"checkpoint-{step}")
        os.makedirs(p, exist_ok=True)
        if fmt == "hf":
            save_file(sd, os.path.join(p, "model.safetensors"))
        elif fmt == "hf_bin":
            torch.save(sd, os.path.join(p, "pytorch_model.bin"))
        else:
            names = list(sd)
            shards = [names[: len(names) // 2], names[len(names) // 2 :]]
            weight_map = {}
            for i, part in enumerate(shards):
                fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
                save_file({k: sd[k].contiguous() for k in part}, os.path.join(p, fn))
                weight_map.update({k: fn for k in part})
            total = sum(v.numel() * v.element_size() for v in sd.values())
            with open(os.path.join(p, "model.safetensors.index.json"), "w") as fh:
                json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, fh)
        with open(os.path.join(p, "trainer_state.json"), "w") as fh:
            json.dump({"global_step": step}, fh)
    elif fmt == "pt":
        p = os.path.join(run_dir, f"step-{step}.pt")
        torch.save(sd, p)
    elif fmt == "pt_nested":
        p = os.path.join(run_dir, f"step-{step}.pt")
        torch.save({"model": sd, "step": step, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}, p)
    elif fmt == "lightning":
        p = os.path.join(run_dir, f"epoch=0-step={step}.ckpt")
        torch.save({"epoch": 0, "global_step": step, "state_dict": {f"model.{k}": v for k, v in sd.items()}}, p)
    return p


def big_state(step_idx):
    """Tensors over 8 MiB each, so that ingest streams them in several chunks on several threads: an f32
    tensor with a large offset (cancellation in a one-pass variance) and exact zeros, a bf16 one (widened
    chunk by chunk) and an f64 one with a heavy tail."""
    g = torch.Generator().manual_seed(99)
    drift = torch.Generator().manual_seed(1000 + step_idx)
    a = torch.randn(3_200_003, generator=g) * 0.02 + 3.0  # 12.8 MB, not a multiple of any block
    a[::97] = 0.0
    a += torch.randn(a.shape, generator=drift) * 1e-3 * step_idx
    b = torch.randn(2300, 2301, generator=g) * 0.5  # 10.6 MB as bf16
    b += torch.randn(b.shape, generator=drift) * 0.01 * step_idx
    c = torch.distributions.StudentT(3.0).sample((1_400_000,)).double()  # 11.2 MB, heavy tails
    c += torch.randn(c.shape, generator=drift, dtype=torch.float64) * 1e-2 * step_idx
    return {"big.f32": a, "big.bf16": b.to(torch.bfloat16), "big.f64": c}


def big_run():
    """Three checkpoints of big tensors: safetensors, torch.save .pt (read by byte range), safetensors."""
    torch.manual_seed(5)  # StudentT draws from the global generator
    states = [big_state(i + 1) for i in range(3)]
    flats = [flat(s) for s in states]
    cks = []
    for i, (step, sd) in enumerate(zip(STEPS, states)):
        fmt = "pt" if i == 1 else "safetensors"
        path = write(fmt, sd, os.path.join(OUT, "big"), step)
        cks.append(
            {
                "path": path,
                "step": step,
                "tensors": {k: tensor_ref(v) for k, v in sd.items()},
                "int_tensors": [],
                "global_norm": f(torch.linalg.vector_norm(flats[i])),
                "dist_first": f(torch.linalg.vector_norm(flats[i] - flats[0])) if i > 0 else None,
                "update_norm": f(torch.linalg.vector_norm(flats[i] - flats[i - 1])) if i > 0 else None,
                "update_cos": f(
                    torch.nn.functional.cosine_similarity(flats[i] - flats[i - 1], flats[i - 1] - flats[i - 2], dim=0)
                )
                if i > 1
                else None,
            }
        )
    return {"name": "big", "checkpoints": cks}


def main():
    manifest = {"bins": BINS, "runs": []}
    for fmt in FORMATS:
        for dname, dtype in DTYPES.items():
            gen = torch.Generator().manual_seed(7)
            run = f"{fmt}-{dname}"
            states = [make_state(i + 1, dtype, gen) for i in range(len(STEPS))]
            flats = [flat(s) for s in states]
            cks = []
            for i, (step, sd) in enumerate(zip(STEPS, states)):
                path = write(fmt, sd, os.path.join(OUT, run), step)
                prefix = "model." if fmt == "lightning" else ""
                rec = {
                    "path": path,
                    "step": step,
                    "tensors": {prefix + k: tensor_ref(v) for k, v in sd.items() if v.is_floating_point()},
                    "int_tensors": [prefix + k for k, v in sd.items() if not v.is_floating_point()],
                    "global_norm": f(torch.linalg.vector_norm(flats[i])),
                    "dist_first": f(torch.linalg.vector_norm(flats[i] - flats[0])) if i > 0 else None,
                    "update_norm": f(torch.linalg.vector_norm(flats[i] - flats[i - 1])) if i > 0 else None,
                    "update_cos": f(
                        torch.nn.functional.cosine_similarity(
                            flats[i] - flats[i - 1], flats[i - 1] - flats[i - 2], dim=0
                        )
                    )
                    if i > 1
                    else None,
                }
                cks.append(rec)
            manifest["runs"].append({"name": run, "format": fmt, "dtype": dname, "checkpoints": cks})
    # NaN and Inf are counted, and left out of the moments.
    bad = torch.randn(1000, dtype=torch.float32)
    bad[3] = float("nan")
    bad[10] = float("inf")
    bad[11] = float("-inf")
    p = os.path.join(OUT, "nonfinite", "step-5.safetensors")
    os.makedirs(os.path.dirname(p), exist_ok=True)
    save_file({"w": bad}, p)
    manifest["nonfinite"] = {"path": p, "step": 5, "tensors": {"w": tensor_ref(bad)}}
    manifest["big"] = big_run()
    with open(os.path.join(OUT, "manifest.json"), "w") as fh:
        json.dump(manifest, fh)


if __name__ == "__main__":
    main()
