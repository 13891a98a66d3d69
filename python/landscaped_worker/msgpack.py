"""A small, strict MessagePack codec for the subset the worker protocol uses: maps with string keys,
strings, integers (up to u64 / i64), float64 and float32, booleans, nil, arrays and bin.

Input is untrusted: every length is checked against the bytes left before anything is allocated, nesting
is bounded, and anything outside the subset (ext types, non-string map keys, trailing bytes) is refused with
:class:`DecodeError`.
"""

import struct

MAX_DEPTH = 64


class DecodeError(ValueError):
    """The bytes are not a MessagePack value of the protocol's subset."""


def decode(data):
    """Decodes one value that fills ``data`` exactly."""
    buf = memoryview(data)
    value, pos = _read(buf, 0, 0)
    if pos != len(buf):
        raise DecodeError("%d trailing bytes after the value" % (len(buf) - pos))
    return value


def _need(buf, pos, n):
    if n < 0 or pos + n > len(buf):
        raise DecodeError("truncated: %d bytes needed at offset %d, %d left" % (n, pos, len(buf) - pos))


def _uint(buf, pos, size):
    _need(buf, pos, size)
    return int.from_bytes(buf[pos : pos + size], "big"), pos + size


def _read(buf, pos, depth):
    if depth > MAX_DEPTH:
        raise DecodeError("nested deeper than %d levels" % MAX_DEPTH)
    _need(buf, pos, 1)
    b = buf[pos]
    pos += 1
    if b <= 0x7F:
        return b, pos
    if b >= 0xE0:
        return b - 0x100, pos
    if 0x80 <= b <= 0x8F:
        return _map(buf, pos, b & 0x0F, depth)
    if 0x90 <= b <= 0x9F:
        return _array(buf, pos, b & 0x0F, depth)
    if 0xA0 <= b <= 0xBF:
        return _str(buf, pos, b & 0x1F)
    if b == 0xC0:
        return None, pos
    if b == 0xC2:
        return False, pos
    if b == 0xC3:
        return True, pos
    if b in (0xC4, 0xC5, 0xC6):
        n, pos = _uint(buf, pos, {0xC4: 1, 0xC5: 2, 0xC6: 4}[b])
        _need(buf, pos, n)
        return bytes(buf[pos : pos + n]), pos + n
    if b == 0xCA:
        _need(buf, pos, 4)
        return struct.unpack(">f", buf[pos : pos + 4])[0], pos + 4
    if b == 0xCB:
        _need(buf, pos, 8)
        return struct.unpack(">d", buf[pos : pos + 8])[0], pos + 8
    if 0xCC <= b <= 0xCF:
        return _uint(buf, pos, 1 << (b - 0xCC))
    if 0xD0 <= b <= 0xD3:
        size = 1 << (b - 0xD0)
        _need(buf, pos, size)
        return int.from_bytes(buf[pos : pos + size], "big", signed=True), pos + size
    if b in (0xD9, 0xDA, 0xDB):
        n, pos = _uint(buf, pos, {0xD9: 1, 0xDA: 2, 0xDB: 4}[b])
        return _str(buf, pos, n)
    if b in (0xDC, 0xDD):
        n, pos = _uint(buf, pos, 2 if b == 0xDC else 4)
        return _array(buf, pos, n, depth)
    if b in (0xDE, 0xDF):
        n, pos = _uint(buf, pos, 2 if b == 0xDE else 4)
        return _map(buf, pos, n, depth)
    raise DecodeError("type byte 0x%02x at offset %d is outside the protocol's subset" % (b, pos - 1))


def _str(buf, pos, n):
    _need(buf, pos, n)
    try:
        return str(buf[pos : pos + n], "utf-8"), pos + n
    except UnicodeDecodeError as e:
        raise DecodeError("a string is not UTF-8: %s" % e) from None


def _array(buf, pos, n, depth):
    # Every element takes at least one byte: a count beyond the bytes left is refused before the loop.
    _need(buf, pos, n)
    out = []
    for _ in range(n):
        v, pos = _read(buf, pos, depth + 1)
        out.append(v)
    return out, pos


def _map(buf, pos, n, depth):
    _need(buf, pos, 2 * n)
    out = {}
    for _ in range(n):
        k, pos = _read(buf, pos, depth + 1)
        if not isinstance(k, str):
            raise DecodeError("a map key is %s, not a string" % type(k).__name__)
        v, pos = _read(buf, pos, depth + 1)
        out[k] = v
    return out, pos


def encode(value):
    """Encodes a value: dict (str keys), list/tuple, str, bytes, int, float (as float64), bool, None."""
    out = bytearray()
    _write(out, value, 0)
    return bytes(out)


def _write(out, v, depth):
    if depth > MAX_DEPTH:
        raise ValueError("nested deeper than %d levels" % MAX_DEPTH)
    if v is None:
        out.append(0xC0)
    elif v is True:
        out.append(0xC3)
    elif v is False:
        out.append(0xC2)
    elif isinstance(v, int):
        _write_int(out, v)
    elif isinstance(v, float):
        out.append(0xCB)
        out += struct.pack(">d", v)
    elif isinstance(v, str):
        b = v.encode("utf-8")
        n = len(b)
        if n < 32:
            out.append(0xA0 | n)
        elif n < 0x100:
            out += bytes((0xD9, n))
        elif n < 0x10000:
            out.append(0xDA)
            out += n.to_bytes(2, "big")
        else:
            out.append(0xDB)
            out += n.to_bytes(4, "big")
        out += b
    elif isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        n = len(b)
        if n < 0x100:
            out += bytes((0xC4, n))
        elif n < 0x10000:
            out.append(0xC5)
            out += n.to_bytes(2, "big")
        else:
            out.append(0xC6)
            out += n.to_bytes(4, "big")
        out += b
    elif isinstance(v, (list, tuple)):
        n = len(v)
        if n < 16:
            out.append(0x90 | n)
        elif n < 0x10000:
            out.append(0xDC)
            out += n.to_bytes(2, "big")
        else:
            out.append(0xDD)
            out += n.to_bytes(4, "big")
        for x in v:
            _write(out, x, depth + 1)
    elif isinstance(v, dict):
        n = len(v)
        if n < 16:
            out.append(0x80 | n)
        elif n < 0x10000:
            out.append(0xDE)
            out += n.to_bytes(2, "big")
        else:
            out.append(0xDF)
            out += n.to_bytes(4, "big")
        for k, x in v.items():
            if not isinstance(k, str):
                raise ValueError("map keys must be strings, not %s" % type(k).__name__)
            _write(out, k, depth + 1)
            _write(out, x, depth + 1)
    else:
        raise ValueError("cannot encode %s" % type(v).__name__)


def _write_int(out, v):
    if 0 <= v <= 0x7F:
        out.append(v)
    elif -32 <= v < 0:
        out.append(v & 0xFF)
    elif 0 <= v:
        for tag, size in ((0xCC, 1), (0xCD, 2), (0xCE, 4), (0xCF, 8)):
            if v < 1 << (8 * size):
                out.append(tag)
                out += v.to_bytes(size, "big")
                return
        raise ValueError("integer %d does not fit u64" % v)
    else:
        for tag, size in ((0xD0, 1), (0xD1, 2), (0xD2, 4), (0xD3, 8)):
            if v >= -(1 << (8 * size - 1)):
                out.append(tag)
                out += v.to_bytes(size, "big", signed=True)
                return
        raise ValueError("integer %d does not fit i64" % v)
