"""The factory contract for the small conv net of slice_reference.py (the digits-CNN fixture): used by the
Python-worker tests. The checkpoint path locates the fixture folder (its model/eval.safetensors)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from slice_reference import Net  # noqa: E402

from landscaped_worker import safetensors as st  # noqa: E402


def build(checkpoint):
    ev = st.load(os.path.join(os.path.dirname(checkpoint), "model", "eval.safetensors"))
    return Net(), (ev["inputs"], ev["targets"]), "cross_entropy"
