"""A small, strict safetensors reader and writer on plain torch (no `safetensors` package needed).

The file is untrusted: the header length is bounded by the file size and a fixed limit, every entry's
dtype, shape and byte range is checked (inside the data section, the size the shape and dtype imply, no
overlaps) before any tensor is read. Tensors are read one at a time with ``torch.frombuffer``.
"""

import ctypes
import json
import os
import struct

import torch

MAX_HEADER = 100 << 20

_DTYPES = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}
_NAMES = {dt: name for name, (dt, _) in _DTYPES.items()}


class SafetensorsError(ValueError):
    """The file is not a safetensors file this reader accepts; the message names the file and the cause."""


class Entry:
    __slots__ = ("name", "dtype", "itemsize", "shape", "begin", "end")

    def __init__(self, name, dtype, itemsize, shape, begin, end):
        self.name, self.dtype, self.itemsize, self.shape = name, dtype, itemsize, shape
        self.begin, self.end = begin, end

    @property
    def is_float(self):
        return self.dtype.is_floating_point


def read_header(path):
    """The entries of a safetensors file (name → :class:`Entry`, file order) and the data section's offset."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError("%s: not a safetensors file (%d bytes)" % (path, size))
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER or 8 + n > size:
            raise SafetensorsError("%s: header length %d does not fit the file (%d bytes)" % (path, n, size))
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise SafetensorsError("%s: the header is not JSON: %s" % (path, e)) from None
    if not isinstance(header, dict):
        raise SafetensorsError("%s: the header is not a JSON object" % path)
    data_len = size - 8 - n
    entries = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(e, dict):
            raise SafetensorsError("%s: entry %r is not an object" % (path, name))
        dt = _DTYPES.get(e.get("dtype"))
        if dt is None:
            raise SafetensorsError("%s: %r has unsupported dtype %r" % (path, name, e.get("dtype")))
        shape = e.get("shape")
        offs = e.get("data_offsets")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise SafetensorsError("%s: %r has a malformed shape %r" % (path, name, shape))
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
            or not 0 <= offs[0] <= offs[1] <= data_len
        ):
            raise SafetensorsError(
                "%s: %r has byte range %r outside the data (%d bytes)" % (path, name, offs, data_len)
            )
        numel = 1
        for d in shape:
            numel *= d
        if offs[1] - offs[0] != numel * dt[1]:
            raise SafetensorsError(
                "%s: %r takes %d bytes but shape %r of %s needs %d"
                % (path, name, offs[1] - offs[0], shape, e["dtype"], numel * dt[1])
            )
        entries[name] = Entry(name, dt[0], dt[1], tuple(shape), offs[0], offs[1])
    spans = sorted((e.begin, e.end, e.name) for e in entries.values() if e.end > e.begin)
    for (_b0, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise SafetensorsError("%s: %r and %r overlap" % (path, n0, n1))
    return entries, 8 + n


def read_tensors(path, names=None):
    """Reads tensors (all, or those in ``names``) as CPU tensors; yields (name, tensor) in file order."""
    entries, base = read_header(path)
    with open(path, "rb") as f:
        for name, e in entries.items():
            if names is not None and name not in names:
                continue
            n = e.end - e.begin
            if n == 0:
                yield name, torch.empty(e.shape, dtype=e.dtype)
                continue
            f.seek(base + e.begin)
            buf = bytearray(n)
            if f.readinto(buf) != n:
                raise SafetensorsError("%s: %r is cut short" % (path, name))
            yield name, torch.frombuffer(buf, dtype=e.dtype).reshape(e.shape)


def load(path):
    """All tensors of a file, name → CPU tensor."""
    return dict(read_tensors(path))


def save(tensors, path, metadata=None):
    """Writes name → tensor (any device; contiguous copies are taken) as a safetensors file."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    prepared = []
    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        if t.dtype not in _NAMES:
            raise ValueError("%r: dtype %s is not supported" % (name, t.dtype))
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
        prepared.append(t)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for t in prepared:
            if t.numel():
                f.write(ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()))
    os.replace(tmp, path)
