"""The Python worker against the protocol its Rust types define: landscaped_worker/protocol.py, generated
from src/worker/protocol.rs by tests/worker_protocol_schema.rs (which checks it is up to date and runs this
file with python -m unittest).

Checked: the version the package announces; every error kind it raises or sends is a Rust ``ErrorKind``;
one handler per operation, no more, no fewer; on a real session over a tiny model, every field a handler
reads (nested structures too) is a field of that operation, and every reply it sends has exactly the
reply's fields (nested structures too); the TCP join frame has the ``Join`` fields; the losses the two
contracts share agree on reporting an accuracy."""

import ast
import io
import math
import os
import struct
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.join(HERE, "..", "..", "python", "landscaped_worker")
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import landscaped_worker  # noqa: E402
from landscaped_worker import factory as C  # noqa: E402
from landscaped_worker import msgpack, server, tcp  # noqa: E402
from landscaped_worker import protocol as P  # noqa: E402
from landscaped_worker import safetensors as st  # noqa: E402
from landscaped_worker.session import Session  # noqa: E402

# The TorchScript contract's module-method loss: the Python worker takes a callable from the factory instead.
TORCHSCRIPT_ONLY_LOSSES = {"method"}


def factory():
    """A tiny model with parameters, float buffers and an integer buffer (BatchNorm), and 8 samples."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    x = torch.randn(8, 3)
    y = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])
    return model, (x, y), "cross_entropy"


def schema_of(type_name, value):
    """The fields (name -> nested structure) a nested value of ``type_name`` may have; for a tagged
    structure, its tag and the fields of the variant ``value`` names."""
    if type_name in P.STRUCTS:
        return dict(P.STRUCTS[type_name])
    tag = P.TAGGED[type_name]
    variants = {"StateSource": P.STATE_SOURCES, "VectorInit": P.VECTOR_INITS}[type_name]
    fields = dict(variants.get(value.get(tag), {}))
    fields[tag] = None
    return fields


class Recorded(dict):
    """A request body (or a map inside one) that records every key the handler asks for that the protocol
    does not define; nested maps and lists of maps are recorded too."""

    def __init__(self, value, schema, where, wrong):
        self.schema, self.where, self.wrong = schema, where, wrong
        super().__init__({k: self.wrap(k, v) for k, v in value.items()})

    def wrap(self, k, v):
        t = self.schema.get(k)
        if t is None:
            return v
        where = "%s.%s" % (self.where, k)
        if isinstance(v, list):
            return [Recorded(x, schema_of(t, x), where + "[]", self.wrong) for x in v]
        return Recorded(v, schema_of(t, v), where, self.wrong)

    def note(self, k):
        if k not in self.schema:
            self.wrong.append("%s.%s" % (self.where, k))

    def get(self, k, default=None):
        self.note(k)
        return super().get(k, default)

    def __getitem__(self, k):
        self.note(k)
        return super().__getitem__(k)

    def __contains__(self, k):
        self.note(k)
        return super().__contains__(k)


def mismatches(value, schema, where):
    """Where a message sent by the worker has other fields than the protocol's (recursively)."""
    out = []
    if set(value) != set(schema):
        out.append(
            "%s: fields %s, the protocol's %s" % (where, sorted(value), sorted(schema)),
        )
    for k, t in schema.items():
        v = value.get(k)
        if t is None or v is None:
            continue
        for i, x in enumerate(v if isinstance(v, list) else [v]):
            out += mismatches(x, schema_of(t, x), "%s.%s[%d]" % (where, k, i))
    return out


class ProtocolTest(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.wrong_reads, self.wrong_replies, self.ops_sent = [], [], set()
        self.session = Session()

    def tearDown(self):
        self.tmp.cleanup()

    def send(self, op, **fields):
        """One request through the session's own dispatch (as server.serve dispatches it); the reply
        (and each streamed one) is checked against the protocol and returned."""
        schema = P.OPS[op]
        self.assertLessEqual(set(fields), set(schema), "the test's own %s request" % op)
        self.ops_sent.add(op)
        body = Recorded(dict(fields, op=op), dict(schema, op=None), op, self.wrong_reads)
        replies = []
        if op == "evaluate_points":
            final = self.session.evaluate_points(body, replies.append)
            replies.append(final)
        else:
            replies.append(self.session.handle_op(body))
        for r in replies:
            name = r.get("reply")
            self.assertIn(name, P.REPLIES, "%s answered %r" % (op, r))
            self.wrong_replies += mismatches({k: v for k, v in r.items() if k != "reply"}, P.REPLIES[name], name)
        return replies[-1]

    def test_the_version_and_the_frame_limit_are_the_rust_ones(self):
        self.assertEqual(landscaped_worker.PROTOCOL_VERSION, P.PROTOCOL_VERSION)
        self.assertEqual(server.MAX_FRAME, P.MAX_FRAME_BYTES)
        hello = self.send("hello", protocol=P.PROTOCOL_VERSION, client="test")
        self.assertEqual(hello["protocol"], P.PROTOCOL_VERSION)
        self.assertLessEqual(set(hello["capabilities"]), set(P.CAPABILITIES))
        self.assertEqual(self.wrong_replies, [])

    def test_every_error_kind_raised_is_a_rust_error_kind(self):
        # Statically: the first argument of every Failure(...) in the package.
        kinds = {name: getattr(P, name) for name in dir(P) if getattr(P, name) in P.ERROR_KINDS}
        used = []
        for fn in sorted(os.listdir(PACKAGE)):
            if not fn.endswith(".py"):
                continue
            with open(os.path.join(PACKAGE, fn)) as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Failure":
                    a = node.args[0]
                    kind = kinds.get(a.id) if isinstance(a, ast.Name) else getattr(a, "value", None)
                    self.assertIn(kind, P.ERROR_KINDS, "%s:%d: Failure(%s, ...)" % (fn, a.lineno, ast.dump(a)))
                    used.append(kind)
        self.assertGreater(len(used), 20)
        # Dynamically: the error replies the request loop sends (an unknown op, an unknown handle, bytes).
        frames = b""
        for body in ({"id": 1, "body": {"op": "no_such_op"}}, {"id": 2, "body": {"op": "set_state", "state": 9}}):
            b = msgpack.encode(body)
            frames += struct.pack("<I", len(b)) + b
        frames += struct.pack("<I", 1) + b"\xc1"
        out = io.BytesIO()
        server.serve(io.BytesIO(frames), out, Session())
        out.seek(0)
        got = []
        while True:
            f = server.read_frame(out)
            if f is None:
                break
            got.append(msgpack.decode(f)["body"])
        self.assertEqual([r["kind"] for r in got], [P.UNSUPPORTED, P.BAD_REQUEST, P.BAD_REQUEST])
        for r in got:
            self.assertEqual(mismatches({k: v for k, v in r.items() if k != "reply"}, P.REPLIES["error"], "error"), [])

    def test_one_handler_per_operation(self):
        handled = {n[len("op_") :] for n in dir(Session) if n.startswith("op_")}
        # evaluate_points streams its replies: the request loop calls it directly.
        handled.add("evaluate_points")
        self.assertEqual(handled, set(P.OPS))

    def test_every_field_read_and_sent_is_the_protocols(self):
        s = self.send
        s("hello", protocol=P.PROTOCOL_VERSION, client="test")
        info = s(
            "load_model",
            contract={
                "factory": "worker_protocol_test:factory",
                "loss": "cross_entropy",
                "batch_size": 4,
                "subsample": 8,
                "device": "cpu",
                "threads": 1,
                "precision": "f32",
            },
        )["info"]
        self.assertEqual(info["ignored_buffers"], ["1.num_batches_tracked"])
        path = os.path.join(self.tmp.name, "w.safetensors")
        st.save({n: t.detach() for n, t in factory()[0].state_dict().items()}, path)
        bind = {"strip_prefixes": ["module."], "mapping": [], "allow_unexpected": False, "missing_zero": False}
        a = s("load_state", source={"kind": "safetensors", "path": path}, bind=bind)["handle"]
        self.assertEqual(len(s("read_state", state=a)["data"]), 8 * sum(math.prod(x["shape"]) for x in info["slots"]))
        s("set_state", state=a)
        s("evaluate")
        dx, dy = s("random_directions", about=a, seed=1, norm="filter", ignore="biasbn", count=2, orthogonalize=True)[
            "handles"
        ]
        d = s("difference", **{"from": a, "to": dx})["handle"]
        s("set_plane", centre=a, dx=dx, dy=dy)
        s("evaluate_points", points=[{"index": 0, "a": 0.0, "b": 0.5}, {"index": 1, "a": -0.5, "b": 0.0}])
        s("set_point", a=0.25, b=0.25)
        h = s("hessian_open", subset="all")
        v = s("new_vector", init={"kind": "gaussian", "seed": 3})["handle"]
        s("new_vector", init={"kind": "zeros"})
        s("new_vector", init={"kind": "rademacher", "seed": 3})
        c = s("new_vector", init={"kind": "copy", "of": v})["handle"]
        w = s("new_vector", init={"kind": "values", "data": b"\0" * 8 * h["dim"]})["handle"]
        s("read_vector", v=v)
        s("dots", x=v, ys=[c, w])
        s("combine", y=w, scale=0.5, terms=[[1.0, v], [-1.0, c]])
        # The state dict's parameters as a vector (buffers skipped), then scaled elementwise.
        t = s("new_vector", init={"kind": "tensors", "path": path, "bind": bind})["handle"]
        want = torch.cat([p.detach().reshape(-1).double() for p in factory()[0].parameters()])
        got = s("dots", x=t, ys=[t])["values"][0]
        self.assertAlmostEqual(got, float(want @ want), places=4)
        u = s("new_vector", init={"kind": "copy", "of": t})["handle"]
        s("multiply", y=u, x=t)
        ones = s("new_vector", init={"kind": "values", "data": struct.pack("<%dd" % h["dim"], *[1.0] * h["dim"])})[
            "handle"
        ]
        self.assertAlmostEqual(s("dots", x=u, ys=[ones])["values"][0], float(want @ want), places=4)
        s("hvp", v=v, out=w)
        s("loss", at=c)
        s("gradient", at=None, out=w)
        s("hessian_close")
        s("free", handles=[d])
        s("shutdown")
        self.assertEqual(self.ops_sent, set(P.OPS), "the drive above misses an operation")
        self.assertEqual(
            {
                "fields read that the protocol lacks": self.wrong_reads,
                "replies unlike the protocol's": self.wrong_replies,
            },
            {"fields read that the protocol lacks": [], "replies unlike the protocol's": []},
        )

    def test_the_recorder_and_the_comparison_catch_a_wrong_field(self):
        wrong = []
        body = Recorded({"op": "set_state", "state": 1}, dict(P.OPS["set_state"], op=None), "set_state", wrong)
        body.get("handle")
        self.assertEqual(wrong, ["set_state.handle"])
        self.assertNotEqual(mismatches({"loss": 1.0, "samples": 2}, P.REPLIES["evaluation"], "evaluation"), [])

    def test_the_join_frame_has_the_join_fields(self):
        frame = tcp.join_frame("token", "contract", env={"RANK": "1", "LOCAL_RANK": "0", "WORLD_SIZE": "2"})
        self.assertEqual(list(frame), ["join"])
        self.assertEqual(mismatches(frame["join"], P.JOIN_MESSAGES["join"], "join"), [])
        self.assertEqual(frame["join"]["protocol"], P.PROTOCOL_VERSION)

    def test_the_shared_losses_agree_on_accuracy(self):
        for name, accuracy in P.LOSSES.items():
            if name in TORCHSCRIPT_ONLY_LOSSES:
                self.assertNotIn(name, C.LOSSES)
                continue
            self.assertIn(name, C.LOSSES)
            self.assertEqual(C.has_accuracy(name), accuracy, name)


if __name__ == "__main__":
    unittest.main()
