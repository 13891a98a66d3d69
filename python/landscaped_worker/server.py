"""The request loop: frames in from stdin, one answer (or a stream of ``point`` answers) out, in order,
until stdin closes or ``shutdown``. A frame is a 4-byte little-endian length and that many bytes of
MessagePack; frames over 256 MiB are refused before anything is allocated.

Frames go to a private duplicate of fd 1; fd 1 itself and ``sys.stdout`` are pointed at stderr first, so
nothing the user's model prints can corrupt the frame stream. An exception inside an operation becomes an
error reply (``internal`` unless typed); the worker keeps serving.
"""

import os
import struct
import sys

from . import msgpack
from .errors import BAD_REQUEST, classify
from .protocol import MAX_FRAME_BYTES as MAX_FRAME


class FrameError(Exception):
    pass


def private_stdout():
    """Takes fd 1 for frames; fd 1 and sys.stdout now write to stderr."""
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "wb", buffering=0)


def read_exact(f, n):
    chunks, got = [], 0
    while got < n:
        b = f.read(n - got)
        if not b:
            return None if got == 0 else b"".join(chunks)
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def read_frame(f):
    head = read_exact(f, 4)
    if head is None:
        return None
    if len(head) < 4:
        raise FrameError("stream ended inside a frame length")
    (n,) = struct.unpack("<I", head)
    if n > MAX_FRAME:
        raise FrameError("frame length %d exceeds the limit of %d" % (n, MAX_FRAME))
    body = read_exact(f, n) if n else b""
    if body is None or len(body) < n:
        raise FrameError("stream ended inside a frame")
    return body


def write_frame(f, body):
    if len(body) > MAX_FRAME:
        raise FrameError("frame of %d bytes exceeds the limit of %d" % (len(body), MAX_FRAME))
    f.write(struct.pack("<I", len(body)) + body)
    f.flush()


def serve(inp, out, session):
    def send(rid, reply):
        write_frame(out, msgpack.encode({"id": rid, "body": reply}))

    while True:
        frame = read_frame(inp)
        if frame is None:
            return
        try:
            req = msgpack.decode(frame)
            if not isinstance(req, dict) or not isinstance(req.get("id"), int) or not isinstance(req.get("body"), dict):
                raise msgpack.DecodeError("expected {id, body}")
        except msgpack.DecodeError as e:
            send(0, {"reply": "error", "kind": BAD_REQUEST, "message": "undecodable request: %s" % e})
            continue
        rid, body = req["id"], req["body"]
        try:
            if body.get("op") == "evaluate_points":
                reply = session.evaluate_points(body, lambda r, rid=rid: send(rid, r))
            else:
                reply = session.handle_op(body)
        except (BrokenPipeError, FrameError):
            raise
        except BaseException as e:  # noqa: BLE001 - the worker keeps serving
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            f = classify(e)
            reply = {"reply": "error", "kind": f.kind, "message": f.message}
        send(rid, reply)
        if session.done:
            return
