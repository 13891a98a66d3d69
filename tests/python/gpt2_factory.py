"""The factory for the tiny GPT-2 of gpt2_make.py, as a user writes one for a Hugging Face causal LM:
the model built from the checkpoint folder's config.json, the fixed evaluation token ids beside it."""

import os

from transformers import AutoConfig, AutoModelForCausalLM

from landscaped_worker import safetensors as st


def build(checkpoint):
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(checkpoint))
    # Beside the checkpoint folder, or where GPT2_EVAL_IDS says (the daemon test's watched folder holds
    # checkpoints only).
    path = os.environ.get("GPT2_EVAL_IDS") or os.path.join(
        os.path.dirname(os.path.normpath(checkpoint)), "eval_ids.safetensors"
    )
    ids = st.load(path)["input_ids"]
    return model, ids, "causal_lm"


def build_hf(checkpoint):
    """The same model and text as a list of dict batches with labels, loss `hf` (the model's own .loss)."""
    model, ids, _ = build(checkpoint)
    return model, [{"input_ids": b, "labels": b} for b in ids.split(4)], "hf"
