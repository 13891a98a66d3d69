"""landscaped's eager-PyTorch model worker.

Started by ``landscaped --backend python`` as ``python -m landscaped_worker``; it speaks the worker protocol
(docs/worker-protocol.md) on stdin/stdout and runs the user's own model, built by a factory
``module:function`` (docs/python-worker.md). Dependencies: the user's torch, nothing else (the MessagePack
codec and the safetensors reader here are our own, small and strict).
"""

from .protocol import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION", "__version__"]
__version__ = "0.1.0"
