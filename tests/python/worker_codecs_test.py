"""The Python worker's own MessagePack codec and safetensors reader on untrusted bytes: round trips of
the protocol's subset, and refusals (truncation, lengths beyond the data, types outside the subset,
overlapping or out-of-range tensors) as one clear error, never a huge allocation. Then the same codecs
against outside references, both directions: the `msgpack` package (its packb/unpackb), the frame
layout against struct, the f64 vectors against NumPy's '<f8', and `safetensors.torch` (save_file /
load_file / safe_open). Run by tests/python_worker.rs (python -m unittest)."""

import io
import json
import math
import os
import random
import struct
import sys
import tempfile
import unittest

import msgpack as reference_msgpack
import numpy as np
from safetensors import safe_open
from safetensors.torch import load_file as reference_load
from safetensors.torch import save_file as reference_save

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

import torch  # noqa: E402

from landscaped_worker import msgpack, server  # noqa: E402
from landscaped_worker import safetensors as st  # noqa: E402
from landscaped_worker.states import bytes_f64, f64_bytes  # noqa: E402


class MsgpackTest(unittest.TestCase):
    def test_round_trip_of_the_subset(self):
        v = {
            "id": 2**64 - 1,
            "body": {"op": "combine", "scale": -0.5, "terms": [[1.5, 3], [-2.0, 2**40]], "neg": -(2**63)},
            "s": "ü" * 40,
            "b": bytes(range(256)) * 300,
            "n": None,
            "t": True,
            "f": False,
            "big": list(range(70000)),
        }
        self.assertEqual(msgpack.decode(msgpack.encode(v)), v)
        # float32 (0xca) decodes too; rmp-serde writes it for f32 fields.
        self.assertEqual(msgpack.decode(b"\xca" + struct.pack(">f", 1.5)), 1.5)

    def test_refusals(self):
        bad = [
            b"",  # nothing
            b"\xdd\xff\xff\xff\xff",  # array of 4 G elements in 5 bytes
            b"\xdf\x00\x01\x00\x00",  # map of 65536 pairs, no bytes
            b"\xc6\x7f\xff\xff\xff",  # bin of 2 GiB, no bytes
            b"\xd9\x05ab",  # truncated string
            b"\xc7\x01\x01\x00",  # ext type
            b"\x81\x01\x02",  # integer map key
            b"\xc0\xc0",  # trailing bytes
            b"\xa2\xff\xfe",  # not UTF-8
            b"\x91" * 100 + b"\xc0",  # nested too deep
        ]
        for b in bad:
            with self.assertRaises(msgpack.DecodeError, msg=repr(b[:8])):
                msgpack.decode(b)


class SafetensorsTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()

    def path(self, name):
        return os.path.join(self.dir, name)

    def raw(self, name, header, data):
        h = json.dumps(header).encode()
        with open(self.path(name), "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + data)
        return self.path(name)

    def test_round_trip(self):
        torch.manual_seed(0)  # fixed values (any would do: the round trip must be exact)
        t = {
            "w": torch.randn(3, 4),
            "h": torch.randn(5).half(),
            "b": torch.randn(2, 2).bfloat16(),
            "d": torch.randn(2).double(),
            "n": torch.tensor(7),
            "m": torch.tensor([True, False]),
            "e": torch.zeros(0, 3),
        }
        st.save(t, self.path("a.safetensors"), {"k": "v"})
        back = st.load(self.path("a.safetensors"))
        self.assertEqual(set(back), set(t))
        for k in t:
            self.assertEqual(back[k].dtype, t[k].dtype)
            self.assertTrue(torch.equal(back[k], t[k]), k)

    def test_refusals(self):
        cases = {
            "header longer than the file": (None, b""),
            "range beyond the data": ({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8),
            "size not the shape's": ({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
            "overlap": (
                {
                    "x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
                },
                b"\0" * 12,
            ),
            "unknown dtype": ({"x": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\0"),
            "negative dimension": ({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}, b""),
            "not an object": ([1, 2], b""),
        }
        for i, (what, (header, data)) in enumerate(cases.items()):
            if header is None:
                p = self.path("short")
                with open(p, "wb") as f:
                    f.write(struct.pack("<Q", 1 << 40))
            else:
                p = self.raw("c%d" % i, header, data)
            with self.assertRaises(st.SafetensorsError, msg=what) as cm:
                list(st.read_tensors(p))
            self.assertIn(p, str(cm.exception))


# Every boundary of the MessagePack formats the subset uses (fixint/uint8..64, negative fixint/int8..64,
# fixstr/str8/16/32, bin8/16/32, fixarray/array16/32, fixmap/map16/32).
INTS = [
    0,
    1,
    127,
    128,
    255,
    256,
    65535,
    65536,
    2**32 - 1,
    2**32,
    2**63,
    2**64 - 1,
    -1,
    -32,
    -33,
    -128,
    -129,
    -32768,
    -32769,
    -(2**31),
    -(2**31) - 1,
    -(2**63),
]
LENGTHS = [0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536]
FLOATS = [0.0, -0.0, 1.5, -2.25, 1e-310, 5e-324, 1.7976931348623157e308, math.inf, -math.inf, math.pi]


def subset_values():
    vals = [None, True, False, {}, [], "", b""] + INTS + FLOATS
    for n in LENGTHS:
        vals += ["x" * n, "é" * (n // 2), bytes(range(256)) * (n // 256) + bytes(n % 256), list(range(n))]
        vals.append({"k%d" % i: i for i in range(n)})
    v = 0
    for _ in range(msgpack.MAX_DEPTH):
        v = [v]
    vals.append(v)
    vals.append({"id": 7, "body": {"op": "evaluate_points", "points": [[0.5, -1.0], [1e-3, 2.0]], "tag": None}})
    return vals


def random_value(rng, depth=0):
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        near = rng.choice(INTS) + rng.choice([0, 0, 1, -1])  # next to a format boundary, within i64..u64
        return min(max(near, -(2**63)), 2**64 - 1) if rng.random() < 0.5 else rng.randint(-(2**63), 2**64 - 1)
    if kind == 2:
        return (
            struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
            if rng.random() < 0.3
            else rng.uniform(-1e6, 1e6)
        )
    if kind == 3:
        return "".join(chr(rng.choice([0x41, 0xE9, 0x4E2D, 0x1F600])) for _ in range(rng.choice(LENGTHS[:7])))
    if kind == 4:
        return bytes(rng.getrandbits(8) for _ in range(rng.choice(LENGTHS[:7])))
    if kind == 5:
        return rng.choice(FLOATS)
    if kind in (6, 7):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(20))]
    return {"k%d" % rng.randrange(1000): random_value(rng, depth + 1) for _ in range(rng.randrange(20))}


def same(a, b):
    """Equal as MessagePack values: NaN equal to NaN, -0.0 not equal to 0.0, 1 not equal to True."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or (math.isnan(a) and math.isnan(b))
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


class MsgpackAgainstReferenceTest(unittest.TestCase):
    """Against the `msgpack` package: the same bytes for every value of the subset (both pick the
    smallest format), and each decodes what the other encodes."""

    def check(self, v):
        ours = msgpack.encode(v)
        ref = reference_msgpack.packb(v, use_bin_type=True)
        self.assertEqual(ours, ref, repr(v)[:80])
        back = reference_msgpack.unpackb(ours, raw=False, strict_map_key=True)
        self.assertTrue(same(back, v), repr(v)[:80])
        self.assertTrue(same(msgpack.decode(ref), v), repr(v)[:80])

    def test_every_format_boundary_both_ways(self):
        for v in subset_values():
            self.check(v)
        # Tuples go out as arrays, as msgpack packs them.
        self.assertEqual(msgpack.encode((1, "a")), reference_msgpack.packb((1, "a")))

    def test_seeded_random_values_both_ways(self):
        rng = random.Random(26)
        for _ in range(400):
            self.check({"id": rng.randrange(2**32), "body": random_value(rng)})

    def test_nan_and_float32(self):
        for bits in (0x7FF8000000000000, 0xFFF8000000000001, 0x7FF0000000000001):
            nan = struct.unpack("<d", struct.pack("<Q", bits))[0]
            self.assertEqual(msgpack.encode(nan), reference_msgpack.packb(nan))
        # What msgpack writes with use_single_float (and rmp-serde for f32 fields) decodes to that f32.
        for x in (1.1, -3.4e38, 1e-45, math.inf):
            got = msgpack.decode(reference_msgpack.packb(x, use_single_float=True))
            self.assertEqual(got, struct.unpack(">f", struct.pack(">f", x))[0])

    def test_what_msgpack_writes_outside_the_subset_is_refused(self):
        import datetime

        outside = [
            reference_msgpack.packb(reference_msgpack.ExtType(5, b"abc")),
            reference_msgpack.packb(datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc), datetime=True),
            reference_msgpack.packb({1: 2}),
            reference_msgpack.packb({b"k": 2}, use_bin_type=True),
            reference_msgpack.packb({(1, 2): 3}),
            reference_msgpack.packb([1, [2, {3: 4}]]),
        ]
        for b in outside:
            with self.assertRaises(msgpack.DecodeError, msg=repr(b)):
                msgpack.decode(b)
        # Beyond u64 / i64 neither encodes.
        for v in (2**64, -(2**63) - 1):
            with self.assertRaises((ValueError, OverflowError)):
                reference_msgpack.packb(v)
            with self.assertRaises(ValueError):
                msgpack.encode(v)

    def test_every_truncation_is_refused_by_both(self):
        v = {"id": 3, "body": {"s": "é" * 40, "b": b"\x01" * 300, "i": [2**40, -(2**40), 1.5], "n": None}}
        full = reference_msgpack.packb(v, use_bin_type=True)
        for n in range(len(full)):
            with self.assertRaises(ValueError):  # msgpack's OutOfData / ExtraData are ValueErrors
                reference_msgpack.unpackb(full[:n], raw=False)
            with self.assertRaises(msgpack.DecodeError, msg=str(n)):
                msgpack.decode(full[:n])


class FramesAgainstReferenceTest(unittest.TestCase):
    """A frame is a little-endian u32 length and one MessagePack value: checked with struct and msgpack."""

    def test_frames_both_ways(self):
        msgs = [{"id": 1, "body": {"op": "hello", "v": 1}}, {"id": 2, "body": {"data": b"\xff" * 70000}}]
        out = io.BytesIO()
        for m in msgs:
            server.write_frame(out, msgpack.encode(m))
        raw, pos, seen = out.getvalue(), 0, []
        while pos < len(raw):
            (n,) = struct.unpack_from("<I", raw, pos)
            seen.append(reference_msgpack.unpackb(raw[pos + 4 : pos + 4 + n], raw=False))
            pos += 4 + n
        self.assertEqual(seen, msgs)
        stream = io.BytesIO(b"".join(struct.pack("<I", len(b)) + b for b in map(reference_msgpack.packb, msgs)))
        self.assertEqual([msgpack.decode(server.read_frame(stream)) for _ in msgs], msgs)
        self.assertIsNone(server.read_frame(stream))
        # A length over the limit is refused before the body is read; a short body is an error.
        with self.assertRaises(server.FrameError):
            server.read_frame(io.BytesIO(struct.pack("<I", server.MAX_FRAME + 1)))
        with self.assertRaises(server.FrameError):
            server.read_frame(io.BytesIO(struct.pack("<I", 10) + b"abc"))


class VectorBytesAgainstNumpyTest(unittest.TestCase):
    """Hessian-space vectors travel as raw float64 bytes, little-endian: NumPy's '<f8' is the reference."""

    def test_both_ways(self):
        g = torch.Generator().manual_seed(3)
        for t in (
            torch.randn(1000, generator=g, dtype=torch.float64),
            torch.randn(7, 5, generator=g).t(),
            torch.tensor([math.nan, -0.0, math.inf, 5e-324], dtype=torch.float64),
            torch.zeros(0),
        ):
            b = f64_bytes(t)
            want = t.double().contiguous().reshape(-1).numpy()
            self.assertEqual(b, want.astype("<f8").tobytes())
            back = bytes_f64(np.asarray(want, dtype="<f8").tobytes())
            self.assertEqual(back.dtype, torch.float64)
            self.assertEqual(back.numpy().tobytes(), want.astype("<f8").tobytes())


REF_DTYPES = [
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
]


def sample_tensors():
    g = torch.Generator().manual_seed(5)
    out = {}
    for dt in REF_DTYPES:
        name = str(dt).split(".")[1]
        base = torch.randn(6, 5, generator=g) * 100
        if dt == torch.bool:
            base = base > 0
        out[name] = base.to(dt)
        out[name + ".scalar"] = base[0, 0].to(dt).clone()  # shape []
        out[name + ".empty"] = torch.zeros(0, 3, dtype=dt)
    special = torch.tensor([math.nan, math.inf, -math.inf, -0.0, 1e-40, 65504.0, 3.4e38])
    out["f32.special"] = special
    out["bf16.special"] = special.bfloat16()
    out["f16.special"] = torch.tensor([math.nan, math.inf, -0.0, 6e-8, 65504.0]).half()
    return out


def bit_equal(a, b):
    raw = lambda t: t.contiguous().reshape(-1).view(torch.uint8)  # noqa: E731
    return a.dtype == b.dtype and a.shape == b.shape and raw(a).equal(raw(b))


class SafetensorsAgainstReferenceTest(unittest.TestCase):
    """Against `safetensors.torch`: what either writes, the other reads back bit for bit (dtype, shape,
    bytes; NaN payloads and -0.0 included), metadata included."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()

    def test_ours_written_reference_read(self):
        t = sample_tensors()
        # Non-contiguous views are written as their values (ours takes a contiguous copy).
        w = torch.arange(60, dtype=torch.float32).reshape(6, 10)
        t["noncontig.t"] = w.t()
        t["noncontig.step"] = w[::2, 1::3]
        t["noncontig.bf16"] = w.bfloat16()[:, ::4]
        t["expanded"] = torch.tensor([1.0, 2.0]).expand(3, 2)
        p = os.path.join(self.dir, "ours.safetensors")
        st.save(t, p, {"step": 12, "run": "r"})
        back = reference_load(p)
        self.assertEqual(set(back), set(t))
        for k, v in t.items():
            self.assertTrue(bit_equal(back[k], v.contiguous()), k)
        with safe_open(p, "pt") as f:
            self.assertEqual(f.metadata(), {"step": "12", "run": "r"})
        # The data section starts 8-aligned, as the reference pads it.
        with open(p, "rb") as f:
            self.assertEqual(struct.unpack("<Q", f.read(8))[0] % 8, 0)

    def test_reference_written_ours_read(self):
        t = sample_tensors()
        p = os.path.join(self.dir, "ref.safetensors")
        reference_save(t, p, metadata={"format": "pt"})
        back = st.load(p)
        self.assertEqual(set(back), set(t))
        for k, v in t.items():
            self.assertTrue(bit_equal(back[k], v), k)
        # Only some tensors, by name; the header's entries as the reference lists them.
        some = dict(st.read_tensors(p, {"float32", "bool.empty"}))
        self.assertEqual(set(some), {"float32", "bool.empty"})
        entries, _ = st.read_header(p)
        with safe_open(p, "pt") as f:
            self.assertEqual(set(entries), set(f.keys()))
            for k in f.keys():
                sl = f.get_slice(k)
                self.assertEqual(list(entries[k].shape), list(sl.get_shape()), k)

    def test_dtypes_outside_ours_are_refused_both_ways(self):
        others = {
            "f8": torch.zeros(3, dtype=torch.float8_e4m3fn),
            "u16": torch.zeros(3, dtype=torch.uint16),
            "c64": torch.zeros(3, dtype=torch.complex64),
        }
        checked = []
        for name, v in others.items():
            p = os.path.join(self.dir, name + ".safetensors")
            try:
                reference_save({"x": v, "ok": torch.ones(2)}, p)
            except Exception:  # noqa: BLE001 - a dtype the reference does not write either
                continue
            checked.append(name)
            with self.assertRaises(st.SafetensorsError, msg=name) as cm:
                st.load(p)
            self.assertIn("unsupported dtype", str(cm.exception))
            with self.assertRaises(ValueError, msg=name):
                st.save({"x": v}, os.path.join(self.dir, name + "-ours.safetensors"))
        self.assertIn("f8", checked)  # safetensors writes F8_E4M3 (and U16 since 0.5)


if __name__ == "__main__":
    unittest.main()
