"""One worker's state and the answer to every operation of the worker protocol, as the TorchScript worker
(worker/src/session.rs) answers them: the model built by the factory, states and Hessian-space vectors
addressed by handles (tensors on the model's device), the plane being evaluated.

The operations are split by concern: the model and its binding (``model``), states and random directions
(``states``), the plane (``plane``), Hessian work and vectors (``hessian``); :class:`Session` holds the
state they share and dispatches requests to them. Numerics follow docs/worker-protocol.md ("Semantics the
backends share") operation for operation, so a seed gives the same directions and a plane the same grid as
with the TorchScript worker.
"""

import os

import torch

from . import PROTOCOL_VERSION, __version__
from .errors import UNSUPPORTED, Failure
from .hessian import HessianOps
from .model import ModelOps
from .plane import PlaneOps
from .protocol import CAP_CUDA, CAP_HVP, CAP_TORCH_RNG
from .states import StateOps


def devices():
    d = ["cpu"]
    if torch.cuda.is_available():
        d += ["cuda:%d" % i for i in range(torch.cuda.device_count())]
    return d


def hello():
    caps = [CAP_HVP, CAP_TORCH_RNG]
    if torch.cuda.is_available():
        caps.append(CAP_CUDA)
    return {
        "reply": "hello",
        "protocol": PROTOCOL_VERSION,
        "backend": "python",
        "backend_version": "PyTorch %s (landscaped_worker %s, CUDA %s)"
        % (torch.__version__, __version__, torch.version.cuda if torch.cuda.is_available() else "not available"),
        "devices": devices(),
        "capabilities": caps,
        "pid": os.getpid(),
    }


class Session(ModelOps, StateOps, PlaneOps, HessianOps):
    """One worker's state; ``handle_op`` answers a request (``evaluate_points``, which streams, is called by
    the request loop directly)."""

    def __init__(self):
        # The model and its binding (model.py).
        self.model = None
        self.grad_model = None
        self.slots = []
        self.ignored = []
        self.batches = []
        self.loss = None
        self.device = torch.device("cpu")
        self.units = None
        self.factory = ""
        self.autocast = None
        # States and Hessian-space vectors by handle (states.py, hessian.py), the plane (plane.py), the
        # open Hessian work (hessian.py).
        self.states = {}
        self.bound_slots = set()
        self.vectors = {}
        self.plane = None
        self.hessian = None
        self.next = 0
        self.done = False

    # ---- handles --------------------------------------------------------------------------------

    def handle(self):
        self.next += 1
        return self.next

    # ---- dispatch -------------------------------------------------------------------------------

    def handle_op(self, body):
        op = body.get("op")
        fn = getattr(self, "op_" + op, None) if isinstance(op, str) else None
        if fn is None:
            raise Failure(UNSUPPORTED, "unknown operation %r" % (op,))
        return fn(body)

    def op_hello(self, body):
        return hello()

    def op_shutdown(self, body):
        self.done = True
        self.states.clear()
        self.vectors.clear()
        self.hessian = None
        self.release_gpu_memory()
        return {"reply": "ok"}

    def release_gpu_memory(self):
        """Hands the CUDA caching allocator's unused blocks back to the driver, so that GPU memory a
        finished job used is free for the trainer (the process's exit would, later)."""
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.empty_cache()
