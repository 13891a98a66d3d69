"""The same tied model saved in every format landscaped reads, for tests/checkpoint_copies.rs.

usage: tied_make.py OUT_DIR TIED_FP32_SAFETENSORS

`TiedNet` (as in tests/python/deepspeed_make.py: an embedding tied to the LM head, one Parameter under
two names) is loaded with the weights zero_to_fp32 rebuilt from the committed DeepSpeed ZeRO-2 run
(TIED_FP32_SAFETENSORS, which lacks the alias `head.weight`), and saved by torch.save
(OUT_DIR/tied.pt), by safetensors' save_model (OUT_DIR/tied_save_model.safetensors: the alias dropped
and named in the metadata) and by torch.distributed.checkpoint (OUT_DIR/tied_dcp/). A tiny GPT-2
(tie_word_embeddings) is saved by Hugging Face's save_pretrained (OUT_DIR/gpt2_hf/: safetensors,
lm_head.weight dropped without a record) and by torch.save (OUT_DIR/gpt2.pt).

OUT_DIR/reference.json: for `tied` and `gpt2`, `parameters_norm` (sqrt of the sum of squares over
`model.parameters()`, each shared Parameter once, float64), `state_dict_norm` (over every name of
`state_dict()`, the shared one twice) and `aliases` (the state-dict names `named_parameters()` drops);
for `gpt2`, `hf_keys` (the names in save_pretrained's file).
"""

import json
import os
import sys
import warnings

import torch
import torch.distributed.checkpoint as dcp
from safetensors import safe_open
from safetensors.torch import load_file, save_model
from transformers import GPT2Config, GPT2LMHeadModel


class TiedNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(11, 6)
        self.norm = torch.nn.LayerNorm(6)
        self.fc = torch.nn.Linear(6, 6)
        self.head = torch.nn.Linear(6, 11, bias=False)
        self.head.weight = self.emb.weight
        self.frozen = torch.nn.Parameter(torch.linspace(-1, 1, 5), requires_grad=False)


def norms(m):
    params = sum(p.detach().double().pow(2).sum() for p in m.parameters()).sqrt().item()
    sd = m.state_dict()
    every = sum(v.double().pow(2).sum() for v in sd.values() if v.is_floating_point()).sqrt().item()
    named = {n for n, _ in m.named_parameters()} | {n for n, _ in m.named_buffers()}
    return {"parameters_norm": params, "state_dict_norm": every, "aliases": sorted(set(sd) - named)}


def main():
    out, fixture = sys.argv[1], sys.argv[2]
    m = TiedNet()
    missing, unexpected = m.load_state_dict({k: v.float() for k, v in load_file(fixture).items()}, strict=False)
    assert missing == ["head.weight"] and not unexpected, (missing, unexpected)
    assert m.head.weight is m.emb.weight
    torch.save(m.state_dict(), os.path.join(out, "tied.pt"))
    save_model(m, os.path.join(out, "tied_save_model.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no process group: DCP saves as a single process
        dcp.save(m.state_dict(), checkpoint_id=os.path.join(out, "tied_dcp"))
    ref = {"tied": norms(m)}

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=32, n_positions=8, n_embd=8, n_layer=1, n_head=2, tie_word_embeddings=True)
    g = GPT2LMHeadModel(cfg).eval()
    assert g.lm_head.weight is g.transformer.wte.weight
    g.save_pretrained(os.path.join(out, "gpt2_hf"), safe_serialization=True)
    torch.save(g.state_dict(), os.path.join(out, "gpt2.pt"))
    ref["gpt2"] = norms(g)
    with safe_open(os.path.join(out, "gpt2_hf", "model.safetensors"), "pt") as f:
        ref["gpt2"]["hf_keys"] = sorted(f.keys())
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)


if __name__ == "__main__":
    main()
