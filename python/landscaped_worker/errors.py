"""Typed failures: an operation raises :class:`Failure` with one of the protocol's error kinds and a
one-line message; anything else an operation raises becomes an ``internal`` (or ``out_of_memory``) reply.
The kinds themselves are the Rust ``ErrorKind``'s, from the generated ``protocol`` module."""

from .protocol import (
    BAD_CHECKPOINT,
    BAD_CONTRACT,
    BAD_REQUEST,
    INTERNAL,
    NON_FINITE,
    OUT_OF_MEMORY,
    SHAPE_MISMATCH,
    UNSUPPORTED,
)

__all__ = [
    "BAD_CHECKPOINT",
    "BAD_CONTRACT",
    "BAD_REQUEST",
    "INTERNAL",
    "NON_FINITE",
    "OUT_OF_MEMORY",
    "SHAPE_MISMATCH",
    "UNSUPPORTED",
    "Failure",
    "bad",
    "classify",
    "one_line",
]


class Failure(Exception):
    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = one_line(message)


def bad(msg):
    """A ``bad_request`` failure: a malformed request, an unknown handle, or the wrong order."""
    return Failure(BAD_REQUEST, msg)


def one_line(s):
    """The first non-empty line of ``s``, trimmed and at most 600 characters."""
    for line in str(s).splitlines():
        if line.strip():
            return line.strip()[:600]
    return str(s).strip()[:600]


def classify(exc):
    """A Failure for any exception raised inside an operation."""
    if isinstance(exc, Failure):
        return exc
    text = "%s: %s" % (type(exc).__name__, one_line(exc))
    lower = text.lower()
    if (
        isinstance(exc, MemoryError)
        or "out of memory" in lower
        or "can't allocate" in lower
        or "cannot allocate" in lower
    ):
        return Failure(OUT_OF_MEMORY, text)
    return Failure(INTERNAL, text)
