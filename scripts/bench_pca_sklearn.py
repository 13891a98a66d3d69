"""Baseline for scripts/bench_pca.sh: trajectory PCA the way the reference code does it: load every
checkpoint into one n x d matrix in memory, subtract the last checkpoint, scikit-learn PCA(k), project.
SOLVER is scikit-learn's `svd_solver`: "auto" (its default, what the reference code uses: randomized SVD
for a wide matrix and few components) or "full" (exact LAPACK SVD).

usage: bench_pca_sklearn.py CKDIR K DTYPE(float32|float64) OUT.json [SOLVER (default auto)]
"""

import json
import os
import re
import sys
import time

import numpy as np
from safetensors.numpy import load_file
from sklearn.decomposition import PCA

t0 = time.perf_counter()
ckdir, k, dtype, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
solver = sys.argv[5] if len(sys.argv) > 5 else "auto"
files = sorted((int(re.search(r"step_(\d+)", f).group(1)), f) for f in os.listdir(ckdir) if f.endswith(".safetensors"))
rows = []
for _, f in files:
    sd = load_file(os.path.join(ckdir, f))
    rows.append(np.concatenate([sd[n].astype(dtype).ravel() for n in sorted(sd)]))
    del sd
X = np.stack(rows)
del rows
t1 = time.perf_counter()
M = X - X[-1]
del X
pca = PCA(n_components=k, svd_solver=solver, random_state=0).fit(M)
coords = M @ pca.components_.T
t2 = time.perf_counter()
with open(out, "w") as fh:
    json.dump(
        {
            "explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
            "coords": coords.tolist(),
            "load_s": t1 - t0,
            "pca_s": t2 - t1,
        },
        fh,
    )
