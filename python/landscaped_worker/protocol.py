"""The worker protocol as landscaped's Rust types define it (crates/protocol/src/messages.rs, crates/protocol/src/loss.rs).

GENERATED from those types by tests/worker_protocol_schema.rs, which fails when this file differs from
them: do not edit it; rewrite it with `LANDSCAPED_REGENERATE=1 cargo test --test worker_protocol_schema`.
Each message's fields are listed in wire order, with the structure a field holds (a name in STRUCTS or
TAGGED) or None.
"""

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 268435456

# Requests: {"id": n, "body": {"op": name, ...fields}}.
OPS = {
    "hello": {"protocol": None, "client": None},
    "load_model": {"contract": "WireContract"},
    "load_state": {"source": "StateSource", "bind": "BindRules"},
    "read_state": {"state": None},
    "set_state": {"state": None},
    "evaluate": {},
    "random_directions": {
        "about": None,
        "seed": None,
        "norm": None,
        "ignore": None,
        "count": None,
        "orthogonalize": None,
    },
    "difference": {"from": None, "to": None},
    "set_plane": {"centre": None, "dx": None, "dy": None},
    "set_point": {"a": None, "b": None},
    "evaluate_points": {"points": "GridPoint"},
    "hessian_open": {"subset": None},
    "hessian_close": {},
    "new_vector": {"init": "VectorInit"},
    "read_vector": {"v": None},
    "dots": {"x": None, "ys": None},
    "combine": {"y": None, "scale": None, "terms": None},
    "multiply": {"y": None, "x": None},
    "free": {"handles": None},
    "hvp": {"v": None, "out": None},
    "loss": {"at": None},
    "gradient": {"at": None, "out": None},
    "shutdown": {},
}

# Replies: {"id": n, "body": {"reply": name, ...fields}}.
REPLIES = {
    "hello": {
        "protocol": None,
        "backend": None,
        "backend_version": None,
        "devices": None,
        "capabilities": None,
        "pid": None,
    },
    "model": {"info": "ModelInfo"},
    "ok": {},
    "handle": {"handle": None},
    "evaluation": {"loss": None, "accuracy": None, "samples": None},
    "directions": {"handles": None, "cosine": None},
    "point": {"index": None, "loss": None, "accuracy": None},
    "done": {},
    "hessian": {"dim": None, "layout": "LayoutSlot", "centre": None},
    "number": {"value": None},
    "numbers": {"values": None},
    "values": {"data": None},
    "error": {"kind": None, "message": None},
}

# load_state's source: {"kind": name, ...fields}.
STATE_SOURCES = {
    "checkpoint": {"path": None},
    "safetensors": {"path": None},
}

# new_vector's init: {"kind": name, ...fields}.
VECTOR_INITS = {
    "zeros": {},
    "gaussian": {"seed": None},
    "rademacher": {"seed": None},
    "copy": {"of": None},
    "values": {"data": None},
    "tensors": {"path": None, "bind": "BindRules"},
}

# Tagged structures inside messages: their tag field.
TAGGED = {
    "StateSource": "kind",
    "VectorInit": "kind",
}

# Structures inside messages, by their Rust name.
STRUCTS = {
    "BindRules": {"strip_prefixes": None, "mapping": None, "allow_unexpected": None, "missing_zero": None},
    "GridPoint": {"index": None, "a": None, "b": None},
    "Join": {
        "protocol": None,
        "token": None,
        "host": None,
        "pid": None,
        "rank": None,
        "local_rank": None,
        "world_size": None,
        "contract": None,
    },
    "LayoutSlot": {"name": None, "shape": None, "offset": None},
    "ModelInfo": {
        "slots": "SlotInfo",
        "ignored_buffers": None,
        "samples": None,
        "batches": None,
        "loss": None,
        "has_accuracy": None,
        "device": None,
        "source": None,
    },
    "SlotInfo": {"name": None, "shape": None, "parameter": None},
    "WireContract": {
        "model": None,
        "eval_data": None,
        "factory": None,
        "loss": None,
        "batch_size": None,
        "subsample": None,
        "device": None,
        "threads": None,
        "checkpoint": None,
        "precision": None,
    },
}

# The join exchange over TCP: {name: {...fields}}.
JOIN_MESSAGES = {
    "join": {
        "protocol": None,
        "token": None,
        "host": None,
        "pid": None,
        "rank": None,
        "local_rank": None,
        "world_size": None,
        "contract": None,
    },
    "joined": {"worker": None},
    "refused": {"reason": None, "retry_after_ms": None},
}

# Error kinds (an error reply's `kind`).
ERROR_KINDS = (
    "bad_contract",
    "bad_checkpoint",
    "shape_mismatch",
    "non_finite",
    "out_of_memory",
    "bad_request",
    "unsupported",
    "internal",
)
BAD_CONTRACT = "bad_contract"
BAD_CHECKPOINT = "bad_checkpoint"
SHAPE_MISMATCH = "shape_mismatch"
NON_FINITE = "non_finite"
OUT_OF_MEMORY = "out_of_memory"
BAD_REQUEST = "bad_request"
UNSUPPORTED = "unsupported"
INTERNAL = "internal"

# Capabilities a worker may announce in its hello reply.
CAPABILITIES = (
    "read_checkpoints",
    "hvp",
    "torch_rng",
    "cuda",
)
CAP_READ_CHECKPOINTS = "read_checkpoints"
CAP_HVP = "hvp"
CAP_TORCH_RNG = "torch_rng"
CAP_CUDA = "cuda"

# The TorchScript contract's losses (crates/protocol/src/loss.rs): whether each reports an accuracy.
LOSSES = {
    "cross_entropy": True,
    "mse": False,
    "nll": True,
    "method": False,
}
