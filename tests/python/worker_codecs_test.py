"""The Python worker's own MessagePack codec and safetensors reader on untrusted bytes: round trips of
the protocol's subset, and refusals (truncation, lengths beyond the data, types outside the subset,
overlapping or out-of-range tensors) as one clear error, never a huge allocation. Run by
tests/python_worker.rs (python -m unittest)."""

import json
import os
import struct
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

import torch  # noqa: E402

from landscaped_worker import msgpack, safetensors as st  # noqa: E402


class MsgpackTest(unittest.TestCase):
    def test_round_trip_of_the_subset(self):
        v = {
            "id": 2**64 - 1,
            "body": {"op": "combine", "scale": -0.5, "terms": [[1.5, 3], [-2.0, 2**40]], "neg": -2**63},
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


if __name__ == "__main__":
    unittest.main()
