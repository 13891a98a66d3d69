#!/usr/bin/env python3
"""The loss over a trajectory-PCA plane computed in plain PyTorch, with the plane from scikit-learn, for
tests/daemon_slice.rs (a reference independent of landscaped's workers and of its PCA).

usage: pca_slice_reference.py FIXTURE_DIR SLICE.json CKPT.safetensors...   (checkpoints in step order,
                                                                            the last one the centre)

FIXTURE_DIR is slice_reference.py's output (its Net, model/eval.safetensors, reference.json's batch
size). SLICE.json is the slice record landscaped serves (`GET /api/v1/slices/{id}`): only its grid
coordinates (values.xs, values.ys) and its trajectory (for the signs of the components, which PCA
leaves free) are used. The trajectory's tensors are the module's parameters (named_parameters():
batch-norm running statistics are buffers and stay at the centre's values, num_batches_tracked too).

Prints one JSON object:
- ratio: scikit-learn's PCA(n_components=2).explained_variance_ratio_ of the rows θ_i − θ_c (float64);
- coords: per checkpoint (⟨θ_i − θ_c, v1⟩, ⟨θ_i − θ_c, v2⟩) with the components sign-aligned;
- signs: the signs applied to sklearn's components to align them with the record's trajectory;
- loss: Z[iy][ix], the mean cross-entropy at θ_c + x·v1 + y·v2 (formed in float64, the model in
  float32), evaluated as slice_reference.evaluate does (eval mode, batches of the fixture's batch size).
"""

import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file
from sklearn.decomposition import PCA

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from slice_reference import Net, evaluate  # noqa: E402


def main():
    fixture, record_path, ckpts = sys.argv[1], sys.argv[2], sys.argv[3:]
    torch.set_num_threads(1)
    with open(record_path) as fh:
        record = json.load(fh)
    with open(os.path.join(fixture, "reference.json")) as fh:
        batch_size = json.load(fh)["batch_size"]

    model = Net()
    names = [k for k, _ in model.named_parameters()]
    states = [{k.removeprefix("module."): v for k, v in load_file(p).items()} for p in ckpts]
    flat = lambda sd: np.concatenate([sd[k].double().numpy().ravel() for k in names])  # noqa: E731
    centre = states[-1]
    theta_c = flat(centre)
    rows = np.stack([flat(sd) - theta_c for sd in states])

    pca = PCA(n_components=2, svd_solver="full").fit(rows)
    comps = pca.components_.copy()  # (2, d), unit rows
    coords = rows @ comps.T  # uncentred: the centre checkpoint at the origin, as landscaped plots it
    theirs = np.array([[p[0], p[1]] for p in record["trajectory"]], dtype=np.float64)
    signs = np.sign((coords * theirs).sum(axis=0))
    signs[signs == 0] = 1.0
    comps *= signs[:, None]
    coords *= signs

    ev = load_file(os.path.join(fixture, "model", "eval.safetensors"))
    x, y = ev["inputs"], ev["targets"]
    sizes = [centre[k].numel() for k in names]
    offsets = np.cumsum([0] + sizes)
    base = {k: v.clone() for k, v in centre.items()}
    xs, ys = record["values"]["xs"], record["values"]["ys"]
    loss = []
    for b in ys:
        row = []
        for a in xs:
            theta = theta_c + a * comps[0] + b * comps[1]
            sd = dict(base)
            for k, lo, hi in zip(names, offsets[:-1], offsets[1:]):
                sd[k] = torch.from_numpy(theta[lo:hi].reshape(tuple(centre[k].shape))).to(centre[k].dtype)
            model.load_state_dict(sd)
            row.append(evaluate(model, x, y, batch_size)[0])
        loss.append(row)
    print(
        json.dumps(
            {
                "ratio": pca.explained_variance_ratio_.tolist(),
                "coords": coords.tolist(),
                "signs": signs.tolist(),
                "loss": loss,
            }
        )
    )


if __name__ == "__main__":
    main()
