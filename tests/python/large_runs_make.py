#!/usr/bin/env python3
"""Checkpoints of large runs for tests/checkpoint_large_runs.rs, written by torch.distributed.checkpoint.

usage: large_runs_make.py OUT            (world size 1 layouts; then starts itself under torchrun)
       large_runs_make.py OUT --rank     (under torchrun --nproc-per-node 2: the world size 2 layout)

Writes under OUT:
- dcp1/step-5/           dcp.save({"model": sd, "optim": {...}, "step": 5}), one process, torch_save format
- dcp_st/step-6/         the same model through FileSystemWriter(serialization_format=SAFETENSORS)
- dcp2/step-7/           world size 2 (gloo, CPU): every parameter a DTensor sharded over 2 ranks
                          (Shard(0), one Shard(1), uneven splits), written by both ranks
- megatron/iter_0000100/ an IMITATION of Megatron-LM's torch_dist layout (Megatron-LM needs CUDA and
                          Transformer Engine; it cannot run here), modelled on megatron.core.dist_checkpointing:
                          the tensors through torch.distributed.checkpoint (what its torch_dist strategy
                          uses), common.pt (torch.save of the common state, as its save_common writes it),
                          metadata.json (its CheckpointingConfig), beside latest_checkpointed_iteration.txt
                          ("100"); keys without a model. prefix, optimizer state under optimizer.
- lightning/epoch=E-step=12.ckpt/  Lightning's sharded layout written by Lightning itself: a Trainer with
                          FSDPStrategy(state_dict_type="sharded") on 2 CPU processes
                          (lightning_sharded_make.py), with the module's full state dict beside it
- OUT/bad/{overlap,huge,missing_chunk,unknown_class,transform,past_eof}/  dcp1 with one defect in .metadata
- OUT/reference.json     per layout: PyTorch's statistics (float64) of the reassembled model state dict
                          (norm, mean, std, min, max, torch.histc bins=30) and the raw values' file
- OUT/<layout>.safetensors  the reassembled model state dict (what landscaped must read back exactly)
"""

import json
import os
import subprocess
import sys
import warnings

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.filesystem import FileSystemWriter, SerializationFormat

warnings.filterwarnings("ignore")
OUT = sys.argv[1]
BINS = 30


def model_sd():
    torch.manual_seed(7)
    return {
        "embed.weight": torch.randn(11, 6),
        "layers.0.weight": torch.randn(5, 6) * 0.2 + 0.1,
        "layers.0.bias": torch.zeros(5),
        "layers.1.weight": torch.randn(7, 5).to(torch.bfloat16),
        "layers.1.bias": torch.linspace(-1, 1, 7),
        "norm.weight": torch.ones(6, dtype=torch.float16),
        "head.weight": torch.randn(3, 9).double(),
        # Larger than the smallest ingest chunk (8192 f32), so a small memory budget streams it.
        "blocks.0.weight": torch.randn(96, 700) * 0.05 - 0.01,
        "step_count": torch.tensor(42, dtype=torch.int64),
    }


def stats(sd):
    out = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            continue
        x = v.double().flatten()
        lo, hi = x.min(), x.max()
        out[k] = {
            "numel": x.numel(),
            "l2": float(torch.linalg.vector_norm(x)),
            "mean": float(x.mean()),
            "std": float(x.std()) if x.numel() >= 2 else None,
            "min": float(lo),
            "max": float(hi),
            "hist": [int(c) for c in torch.histc(x, bins=BINS, min=0, max=0)],
        }
    flat = torch.cat([v.double().flatten() for v in sd.values() if v.is_floating_point()])
    return {"tensors": out, "global_norm": float(torch.linalg.vector_norm(flat))}


def optim_like(sd):
    return {"state": {k: {"exp_avg": torch.full_like(v, 3.0)} for k, v in sd.items() if v.is_floating_point()}}


def world1():
    sd = model_sd()
    ref = {}

    def record(name, path, step, prefix, layout):
        save_file({prefix + k: v.contiguous() for k, v in sd.items()}, os.path.join(OUT, f"{name}.safetensors"))
        s = stats({prefix + k: v for k, v in sd.items()})
        ref[name] = dict(s, path=path, step=step, layout=layout, tensors_listed=len(sd))

    p = os.path.join(OUT, "dcp1", "step-5")
    dcp.save({"model": sd, "optim": optim_like(sd), "step": 5, "extra": {"note": "x"}}, checkpoint_id=p)
    record("dcp1", p, 5, "model.", "dcp")

    p = os.path.join(OUT, "dcp_st", "step-6")
    dcp.save({"model": sd}, storage_writer=FileSystemWriter(p, serialization_format=SerializationFormat.SAFETENSORS))
    record("dcp_st", p, 6, "model.", "dcp")

    # Megatron torch_dist: keys without a model. prefix, optimizer under optimizer., plus side files.
    run = os.path.join(OUT, "megatron")
    p = os.path.join(run, "iter_0000100")
    dcp.save({**sd, "optimizer.state.exp_avg.embed.weight": torch.ones(11, 6)}, checkpoint_id=p)
    torch.save({"iteration": 100, "checkpoint_version": 3.0}, os.path.join(p, "common.pt"))
    with open(os.path.join(p, "metadata.json"), "w") as fh:
        # Megatron-Core's CheckpointingConfig as dist_checkpointing.save writes it (asdict).
        json.dump(
            {
                "sharded_backend": "torch_dist",
                "sharded_backend_version": 1,
                "common_backend": "torch",
                "common_backend_version": 1,
            },
            fh,
        )
    with open(os.path.join(run, "latest_checkpointed_iteration.txt"), "w") as fh:
        fh.write("100")
    record("megatron", p, 100, "", "megatron")

    bad_variants(os.path.join(OUT, "dcp1", "step-5"))
    with open(os.path.join(OUT, "reference1.json"), "w") as fh:
        json.dump(ref, fh)


def bad_variants(good):
    """Copies of a good DCP folder under OUT/bad/, each with one defect in .metadata."""
    import collections
    import pickle
    import shutil

    def variant(name, edit):
        d = os.path.join(OUT, "bad", name)
        shutil.copytree(good, d)
        with open(os.path.join(d, ".metadata"), "rb") as fh:
            md = pickle.load(fh)
        edit(md)
        with open(os.path.join(d, ".metadata"), "wb") as fh:
            pickle.dump(md, fh)

    w = "model.embed.weight"
    meta = torch.distributed.checkpoint.metadata

    def overlap(md):  # rows 0..6 and 5..11: row 5 twice
        c = md.state_dict_metadata[w].chunks[0]
        md.state_dict_metadata[w].chunks.append(
            meta.ChunkStorageMetadata(offsets=torch.Size([5, 0]), sizes=torch.Size([6, 6]))
        )
        idx = meta.MetadataIndex(w, torch.Size([5, 0]))
        md.storage_data[idx] = md.storage_data[meta.MetadataIndex(w, c.offsets)]
        md.state_dict_metadata[w].chunks[0] = meta.ChunkStorageMetadata(offsets=c.offsets, sizes=torch.Size([6, 6]))

    def missing(md):
        c = md.state_dict_metadata[w].chunks[0]
        md.state_dict_metadata[w].chunks[0] = meta.ChunkStorageMetadata(offsets=c.offsets, sizes=torch.Size([10, 6]))

    def unknown_class(md):
        md.storage_meta = collections.Counter(a=1)

    def transform(md):
        for k, v in md.storage_data.items():
            if k.fqn == w:
                v.transform_descriptors = ["zstd"]

    def past_eof(md):
        for k, v in md.storage_data.items():
            if k.fqn == w:
                v.offset += 1 << 30  # far past any data file

    def huge(md):  # a size of 2^80 elements, covered by one chunk of the same size
        md.state_dict_metadata[w].size = torch.Size([2**40, 2**40])
        c = md.state_dict_metadata[w].chunks[0]
        md.state_dict_metadata[w].chunks[0] = meta.ChunkStorageMetadata(
            offsets=c.offsets, sizes=torch.Size([2**40, 2**40])
        )

    variant("overlap", overlap)
    variant("huge", huge)
    variant("missing_chunk", missing)
    variant("unknown_class", unknown_class)
    variant("transform", transform)
    variant("past_eof", past_eof)


def world2():
    """Under torchrun: both ranks save their shards of DTensors."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (2,))
    sd = model_sd()
    sharded = {}
    for k, v in sd.items():
        if v.dim() == 0:
            sharded[k] = v
        elif k in ("layers.0.weight", "blocks.0.weight"):
            sharded[k] = distribute_tensor(v, mesh, [Shard(1)])  # split along columns
        else:
            sharded[k] = distribute_tensor(v, mesh, [Shard(0)])  # uneven where the rows are odd
    p = os.path.join(OUT, "dcp2", "step-7")
    dcp.save({"model": sharded}, checkpoint_id=p)
    if dist.get_rank() == 0:
        save_file({"model." + k: v.contiguous() for k, v in sd.items()}, os.path.join(OUT, "dcp2.safetensors"))
        s = stats({"model." + k: v for k, v in sd.items()})
        with open(os.path.join(OUT, "reference2.json"), "w") as fh:
            json.dump({"dcp2": dict(s, path=p, step=7, layout="dcp", tensors_listed=len(sd))}, fh)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    if "--rank" in sys.argv:
        world2()
        sys.exit(0)
    os.makedirs(OUT, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # Lightning's run (most of its time is importing lightning in both ranks) beside the rest.
    lightning = subprocess.Popen(
        [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lightning_sharded_make.py"), OUT],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    world1()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(29500 + os.getpid() % 1000),
            __file__,
            OUT,
            "--rank",
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    if lightning.wait() != 0:
        sys.exit("lightning_sharded_make.py failed")
    ref = {}
    for f in ["reference1.json", "reference2.json"]:
        with open(os.path.join(OUT, f)) as fh:
            ref.update(json.load(fh))
    with open(os.path.join(OUT, "reference_lightning.json")) as fh:
        lit = json.load(fh)
    ref["lightning"] = dict(stats(load_file(os.path.join(OUT, "lightning.safetensors"))), layout="dcp", **lit)
    with open(os.path.join(OUT, "reference.json"), "w") as fh:
        json.dump(ref, fh)
