"""Driver for scripts/bench_spectra.sh: layer spectra, landscaped (release build) against
torch.linalg.svdvals (float64, float32) per matrix, and against WeightWatcher's analyze() on a
GPT-2-small-shaped checkpoint; whole-process wall time and peak RSS, ratios printed. Each matrix is also
measured forced over a budget of a tenth of its exact SVD (the Lanczos top-k + SLQ approximation).

usage: bench_spectra.py BIN WORKDIR
"""

import json
import os
import subprocess
import sys
import time

import torch
from safetensors.torch import save_file

PY = sys.executable
SHAPES = [(512, 512), (1024, 1024), (2048, 4096)] + ([(4096, 11008)] if os.environ.get("BENCH_BIG") else [])

TORCH_SVD = """
import sys, time, torch
from safetensors.torch import load_file
torch.set_num_threads(1)
w = load_file(sys.argv[1])["m.weight"].to(getattr(torch, sys.argv[2]))
t = time.perf_counter()
s = torch.linalg.svdvals(w) ** 2
print(time.perf_counter() - t)
"""

WW = """
import sys, time, logging, torch
logging.disable(logging.WARNING)
torch.set_num_threads(1)
import weightwatcher as ww
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel
m = GPT2LMHeadModel(GPT2Config())
m.load_state_dict(load_file(sys.argv[1]), strict=False)
m.tie_weights()
t = time.perf_counter()
d = ww.WeightWatcher(model=m).analyze()
print(time.perf_counter() - t, len(d), d["alpha"].mean())
"""


def timed_rss(cmd, env=None):
    """Wall time, peak RSS (MiB) and stdout of one whole process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    out, err = p.stdout.read().decode(), p.stderr.read().decode()
    if status != 0:
        raise SystemExit(f"{cmd[0]} failed: {err[-2000:]}")
    return wall, ru.ru_maxrss / 1024.0, out


def main():
    binary, work = sys.argv[1], sys.argv[2]
    env = dict(os.environ, LANDSCAPED_LOG="warn", LANDSCAPED_DATA_DIR=os.path.join(work, "data"))
    print(f"load before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("per matrix, one thread each; landscaped = whole `spectra --checkpoint` process (read + f64 SVD + fit);")
    print("torch = svdvals alone inside its process; ratio = torch / landscaped")
    g = torch.Generator().manual_seed(0)
    for n, m in SHAPES:
        path = os.path.join(work, f"m{n}x{m}.safetensors")
        save_file({"m.weight": torch.randn(n, m, generator=g) / m**0.5}, path)
        ours, _, out = timed_rss([binary, "spectra", "--checkpoint", path, "--format", "json"], env)
        t64 = float(subprocess.check_output([PY, "-c", TORCH_SVD, path, "float64"]).decode().split()[-1])
        t32 = float(subprocess.check_output([PY, "-c", TORCH_SVD, path, "float32"]).decode().split()[-1])
        # The same matrix forced over a budget of a tenth of its exact SVD: the Lanczos approximation.
        budget = f"{max(n, m) * min(n, m) ** 2 / 10:.3e}"
        approx, _, aout = timed_rss(
            [binary, "spectra", "--checkpoint", path, "--max-flops", budget, "--format", "json"], env
        )
        exact_row, approx_row = json.loads(out)[0], json.loads(aout)[0]
        print(
            f"{n}x{m}: landscaped {ours:.2f} s | torch f64 {t64:.2f} s ({t64 / ours:.2f}x) | "
            f"torch f32 {t32:.2f} s ({t32 / ours:.2f}x) | approximated (max_flops {budget}, "
            f"{approx_row['method']}): {approx:.2f} s ({ours / approx:.2f}x the exact; lambda_max "
            f"{approx_row['log_spectral_norm'] - exact_row['log_spectral_norm']:+.1e} in log10, alpha "
            f"{approx_row['alpha']:.3f} vs {exact_row['alpha']:.3f})"
        )
        os.remove(path)

    torch.manual_seed(0)
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config())
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    path = os.path.join(work, "gpt2_small.safetensors")
    save_file(sd, path)
    params = sum(v.numel() for v in sd.values())
    del model, sd
    ours, ours_rss, out = timed_rss([binary, "spectra", "--checkpoint", path, "--summary", "--format", "csv"], env)
    theirs, theirs_rss, wout = timed_rss([PY, "-c", WW, path])
    ww_analyze, ww_layers, ww_alpha = wout.split()[-3:]
    print(f"GPT-2 small shapes ({params / 1e6:.0f} M parameters), one thread each, whole processes:")
    print(f"  landscaped spectra: {ours:.1f} s, peak RSS {ours_rss:.0f} MiB; summary {out.strip().splitlines()[-1]}")
    print(
        f"  WeightWatcher analyze(): {theirs:.1f} s ({float(ww_analyze):.1f} s in analyze), peak RSS "
        f"{theirs_rss:.0f} MiB; {ww_layers} layers, mean alpha {float(ww_alpha):.4f}"
    )
    print(f"  ratios (WeightWatcher / landscaped): time {theirs / ours:.2f}x, peak RSS {theirs_rss / ours_rss:.2f}x")
    os.remove(path)


if __name__ == "__main__":
    main()
