"""The baseline of scripts/bench_sharpness.sh: the real PyHessian (PyPI `pyhessian==0.1`, Yao et al.) at its
defaults — `hessian(model, criterion, data=(inputs, targets), cuda=False).eigenvalues()`, i.e. power
iteration with maxIter=100, tol=1e-3, top_n=1 — on the eager digits CNN of examples/train_digits.py
(not the exported TorchScript model, not the worker), with the checkpoint's weights and the exported
evaluation set (its first SUBSAMPLE samples, as one batch: PyHessian's `data=` mode, the same mean loss the
worker averages over batches).

usage: bench_sharpness_pyhessian.py MODEL_DIR CHECKPOINT SUBSAMPLE THREADS SEED

Prints one JSON line: lambda_max, hvps (Hessian-vector products PyHessian computed), seconds (the
constructor's forward/backward plus eigenvalues(), model and data already loaded), seconds_per_hvp.
"""

import json
import os
import sys
import time

import torch
from pyhessian.hessian import hessian
from safetensors.torch import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from train_digits import DigitsCNN  # noqa: E402

mdir, ck, sub, threads, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
model = DigitsCNN()
sd = {k.removeprefix("module."): v for k, v in load_file(ck).items()}
model.load_state_dict(sd)
model.eval()
data = load_file(os.path.join(mdir, "eval.safetensors"))
x, y = data["inputs"][:sub].float(), data["targets"][:sub].long()

# Count the products: PyHessian's eigenvalues() calls the hessian_vector_product its module imported.
pyhessian_module = sys.modules["pyhessian.hessian"]
calls = 0
hvp = pyhessian_module.hessian_vector_product


def counted(*a, **kw):
    global calls
    calls += 1
    return hvp(*a, **kw)


pyhessian_module.hessian_vector_product = counted
torch.manual_seed(seed)
t0 = time.perf_counter()
comp = hessian(model, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=False)
eigenvalues, _ = comp.eigenvalues()  # PyHessian's defaults: maxIter=100, tol=1e-3, top_n=1
secs = time.perf_counter() - t0
print(json.dumps({"lambda_max": eigenvalues[0], "hvps": calls, "seconds": secs, "seconds_per_hvp": secs / calls}))
