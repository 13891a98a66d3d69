"""Write reference checkpoints in every format landscaped reads, with PyTorch itself, plus the exact
values of every tensor (as little-endian float64, or int64 for integer tensors) for the Rust tests.

Usage: checkpoint_make.py OUT_DIR

OUT_DIR/manifest.json lists, in state-dict order, each tensor's name, dtype and shape, and each
checkpoint written with the names it should expose (and their prefix), its layout and its step.
OUT_DIR/ref/<i>.raw holds tensor i's values (f64 LE for floats, i64 LE for integers).
"""

import json
import os
import pickle
import sys
import zipfile
from collections import OrderedDict

import torch
from safetensors.torch import save_file

out = sys.argv[1]
os.makedirs(os.path.join(out, "ref"), exist_ok=True)
torch.manual_seed(1234)

sd = OrderedDict()
sd["conv.weight"] = torch.randn(4, 3, 3, 3)
sd["conv.bias"] = torch.randn(4)
sd["bn.weight"] = torch.rand(4) + 0.5
sd["bn.running_mean"] = torch.randn(4)
sd["bn.num_batches_tracked"] = torch.tensor(17, dtype=torch.int64)
sd["fc.weight"] = (torch.randn(5, 4) * 3).to(torch.float16)
sd["fc.bias"] = torch.randn(5).to(torch.bfloat16)
sd["head.weight"] = torch.randn(2, 5, dtype=torch.float64)
special = torch.randn(7)
special[1] = float("nan")
special[3] = float("inf")
special[5] = float("-inf")
special[6] = 0.0
sd["special"] = special
sd["scalar"] = torch.tensor(2.5)
sd["empty"] = torch.zeros(0, 3)
sd["tiny_f16"] = torch.tensor([6e-8, -65504.0, 1e-4], dtype=torch.float16)
sd["mask"] = torch.tensor([True, False, True])

manifest = {"tensors": [], "checkpoints": []}
for i, (name, t) in enumerate(sd.items()):
    manifest["tensors"].append({"name": name, "dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape)})
    if t.dtype.is_floating_point:
        data = t.detach().double().contiguous().numpy().tobytes()
    else:
        data = t.detach().long().contiguous().numpy().tobytes()
    with open(os.path.join(out, "ref", f"{i}.raw"), "wb") as f:
        f.write(data)


def record(path, layout, step, prefix=""):
    manifest["checkpoints"].append({"path": path, "layout": layout, "step": step, "prefix": prefix})


def contiguous_clone(d):
    return OrderedDict((k, v.detach().clone().contiguous()) for k, v in d.items())


# Views that torch.save stores as strided / shared storage: the readers must gather them.
sd_views = OrderedDict(sd)
# conv.bias as a view into the middle of a larger storage (storage offset != 0)
holder = torch.cat([torch.randn(3), sd["conv.bias"], torch.randn(2)])
sd_views["conv.bias"] = holder[3:7]
assert torch.equal(sd_views["conv.bias"], sd["conv.bias"]) and sd_views["conv.bias"].storage_offset() == 3
# head.weight as a transposed (non-contiguous) view of another f64 storage
sd_views["head.weight"] = sd["head.weight"].t().contiguous().t()
assert not sd_views["head.weight"].is_contiguous()

# 1. single safetensors file
save_file(contiguous_clone(sd), os.path.join(out, "step-300.safetensors"))
record("step-300.safetensors", "File", 300)

# 2. HF folder, sharded safetensors + index + trainer_state.json
hf = os.path.join(out, "hf_st", "checkpoint-40")
os.makedirs(hf)
names = list(sd.keys())
shards = {"model-00001-of-00002.safetensors": names[:6], "model-00002-of-00002.safetensors": names[6:]}
weight_map = {}
for shard, keys in shards.items():
    save_file(contiguous_clone(OrderedDict((k, sd[k]) for k in keys)), os.path.join(hf, shard))
    for k in keys:
        weight_map[k] = shard
with open(os.path.join(hf, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)
with open(os.path.join(hf, "trainer_state.json"), "w") as f:
    json.dump({"global_step": 42, "epoch": 1.0, "log_history": []}, f)
record("hf_st/checkpoint-40", "HfFolder", 42)

# 2b. HF folder, single model.safetensors, no trainer_state (step from the name)
hf1 = os.path.join(out, "hf_single", "checkpoint-8")
os.makedirs(hf1)
save_file(contiguous_clone(sd), os.path.join(hf1, "model.safetensors"))
record("hf_single/checkpoint-8", "HfFolder", 8)

# 3. torch.save state dict (with strided and shared views)
torch.save(sd_views, os.path.join(out, "ckpt_000120.pt"))
record("ckpt_000120.pt", "File", 120)

# 4. nested {'model': sd} with an optimizer next to it (skipped)
params = [
    p.detach().clone().float().requires_grad_() for p in sd.values() if p.dtype.is_floating_point and p.numel() > 0
]
opt = torch.optim.Adam(params, lr=0.1)
sum((p * p).sum() for p in params if torch.isfinite(p).all()).backward()
opt.step()
torch.save({"model": sd, "optimizer": opt.state_dict(), "epoch": 3}, os.path.join(out, "nested_model.pth"))
record("nested_model.pth", "File", None)

# 5. Lightning-style .ckpt: state_dict with the module attribute prefix, global_step wins over the name
lightning_sd = OrderedDict(("model." + k, v) for k, v in sd.items())
torch.save(
    {
        "epoch": 2,
        "global_step": 350,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": lightning_sd,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 3}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_score": None}},
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 0.1, "dtype": torch.float32},
    },
    os.path.join(out, "epoch=2-step=300.ckpt"),
)
record("epoch=2-step=300.ckpt", "Lightning", 350, prefix="model.")

# 6. HF folder with pytorch_model.bin
hfb = os.path.join(out, "hf_bin", "checkpoint-7")
os.makedirs(hfb)
torch.save(sd, os.path.join(hfb, "pytorch_model.bin"))
with open(os.path.join(hfb, "trainer_state.json"), "w") as f:
    json.dump({"global_step": 7}, f)
torch.save({"state": {}}, os.path.join(hfb, "optimizer.pt"))
record("hf_bin/checkpoint-7", "HfFolder", 7)

# 7. HF folder with sharded pytorch_model.bin + index
hfbs = os.path.join(out, "hf_binsh", "checkpoint-9")
os.makedirs(hfbs)
weight_map = {}
for j, keys in enumerate([names[:4], names[4:]]):
    shard = f"pytorch_model-0000{j + 1}-of-00002.bin"
    torch.save(OrderedDict((k, sd[k]) for k in keys), os.path.join(hfbs, shard))
    for k in keys:
        weight_map[k] = shard
with open(os.path.join(hfbs, "pytorch_model.bin.index.json"), "w") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f)
with open(os.path.join(hfbs, "trainer_state.json"), "w") as f:
    json.dump({"global_step": 9}, f)
record("hf_binsh/checkpoint-9", "HfFolder", 9)

# --- hostile and unsupported files (in OUT_DIR/bad) ---
bad = os.path.join(out, "bad")
os.makedirs(bad)


def zip_with_pickle(path, pkl):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3")


# GLOBAL os.system, written with raw opcodes (protocol 2)
zip_with_pickle(
    os.path.join(bad, "evil_global.pt"), b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00echoq\x01\x85q\x02Rq\x03."
)


# STACK_GLOBAL builtins.eval by pickle itself (protocol 4): a reduce to eval
class Evil:
    def __reduce__(self):
        return (eval, ("1+1",))


zip_with_pickle(os.path.join(bad, "evil_stack_global.pt"), pickle.dumps({"w": Evil()}, protocol=4))


# A checkpoint that holds an arbitrary class instance (like a full-model save of a __main__ class)
class Config:
    def __init__(self):
        self.lr = 0.1


torch.save({"state_dict": sd, "config": Config()}, os.path.join(bad, "custom_class.ckpt"))


# TorchScript archive
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x)


torch.jit.save(torch.jit.script(Net()), os.path.join(bad, "scripted.pt"))
# Legacy (pre-1.6) format
torch.save(sd, os.path.join(bad, "legacy.pt"), _use_new_zipfile_serialization=False)

# A stride-0 view claiming 4 MB from a 4-byte storage (reading it would allocate far beyond the file)
torch.save({"w": torch.zeros(1).expand(1_000_000)}, os.path.join(bad, "expanded.pt"))

with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
print("ok")
