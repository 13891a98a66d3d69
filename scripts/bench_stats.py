#!/usr/bin/env python3
"""Helpers for scripts/bench.sh.

bench_stats.py make OUT_STEM GIB      write a checkpoint of about GIB GiB (f32 tensors of 128 MiB
                                      each, plus a few small ones) as OUT_STEM.pt (torch.save) and
                                      OUT_STEM.safetensors (the same weights)
bench_stats.py make16 OUT GIB          write a bf16 .safetensors of about GIB GiB (bf16 tensors of 64 MiB
                                      each: twice the f32 file's parameters in the same bytes)
bench_stats.py stats FILE [f64|f32] [load|mmap]
                                      the Python way: compute landscaped's per-tensor statistics with
                                      torch ops in float64 (like landscaped) or float32, printing the
                                      global norm, after loading the checkpoint either
                                      load: whole, into memory (safetensors.torch.load_file for
                                            .safetensors, torch.load(weights_only=True) otherwise) —
                                            the plain way, and the default;
                                      mmap: memory-mapped, one tensor at a time (safetensors safe_open
                                            + get_tensor per tensor; torch.load(mmap=True)), f32 tensors
                                            not copied when accumulating in f32 — the strongest plain
                                            Python we know of.
"""

import sys
import time

import torch


def make(out, gib):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    n_big = max(1, round(gib * 8))  # 128 MiB = 32 Mi f32 each
    sd = {}
    for i in range(n_big):
        sd[f"layers.{i}.weight"] = torch.randn(4096, 8192) * 0.02 + (0.001 * i)
    sd["embed.bias"] = torch.zeros(8192)
    sd["norm.weight"] = torch.ones(8192)
    torch.save(sd, out + ".pt")
    save_file(sd, out + ".safetensors")


def make16(out, gib):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    n_big = max(1, round(gib * 16))  # 64 MiB = 32 Mi bf16 each
    sd = {}
    for i in range(n_big):
        sd[f"layers.{i}.weight"] = (torch.randn(4096, 8192) * 0.02 + (0.001 * i)).to(torch.bfloat16)
    sd["embed.bias"] = torch.zeros(8192, dtype=torch.bfloat16)
    sd["norm.weight"] = torch.ones(8192, dtype=torch.bfloat16)
    save_file(sd, out)


def tensors(path, how):
    """(name, tensor) pairs of the checkpoint, loaded as `how` says (see the module docs)."""
    if how == "mmap":
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
        else:
            yield from torch.load(path, map_location="cpu", weights_only=True, mmap=True).items()
    elif path.endswith(".safetensors"):
        from safetensors.torch import load_file

        yield from load_file(path).items()
    else:
        yield from torch.load(path, map_location="cpu", weights_only=True).items()


def stats(path, precision="f64", how="load"):
    t0 = time.time()
    dt = torch.float64 if precision == "f64" else torch.float32
    total = torch.zeros((), dtype=torch.float64)
    for name, t in tensors(path, how):
        if not t.is_floating_point():
            continue
        x = t.to(dt).flatten()
        fin = x[torch.isfinite(x)] if not bool(torch.isfinite(x).all()) else x
        l2 = torch.linalg.vector_norm(fin)
        mean, std = fin.mean(), fin.std()
        lo, hi = fin.min(), fin.max()
        amax = fin.abs().max()
        zeros = (x == 0).sum() / x.numel()
        nan, inf = torch.isnan(x).sum(), torch.isinf(x).sum()
        hist = torch.histc(fin, bins=30, min=0, max=0)
        total += l2.double() ** 2
        del x, fin, hist, mean, std, lo, hi, amax, zeros, nan, inf, t
    print(f"global_norm {total.sqrt().item():.9g} in {time.time() - t0:.3f} s")


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], float(sys.argv[3]))
    elif sys.argv[1] == "make16":
        make16(sys.argv[2], float(sys.argv[3]))
    else:
        stats(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "f64", sys.argv[4] if len(sys.argv) > 4 else "load")
