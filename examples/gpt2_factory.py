"""The factory contract for `landscaped --backend python` on examples/train_gpt2.py's runs, as one writes
it for any Hugging Face causal LM: the model built from the checkpoint folder's config.json (the weights
come from landscaped), the run's fixed evaluation text, the next-token loss."""

import os

from transformers import AutoConfig, AutoModelForCausalLM


def build(checkpoint):
    from landscaped_worker import safetensors as st  # the worker's own reader; safetensors.torch works too

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(checkpoint))
    ids = st.load(os.path.join(os.path.dirname(os.path.normpath(checkpoint)), "eval_ids.safetensors"))["input_ids"]
    return model, ids, "causal_lm"
