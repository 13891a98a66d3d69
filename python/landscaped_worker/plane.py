"""The plane being evaluated: θ(a, b) = centre + a·dx + b·dy held by ``set_plane``, written into the module
by ``set_point``, evaluated point by point by ``evaluate_points`` (computed in f32 in that order of
operations; slots whose direction is all zero stay at the centre).
"""

import torch

from .errors import bad


class PlaneOps:
    """The plane's operations (mixed into :class:`~.session.Session`)."""

    def op_set_plane(self, body):
        self.need_model()
        c = self.state(body.get("centre"))
        x = self.state(body.get("dx"))
        y = self.state(body.get("dy")) if body.get("dy") is not None else None
        for what, v in (("centre", c), ("x direction", x), ("y direction", y)):
            if v is None:
                continue
            if len(v) != len(self.slots):
                raise bad("%s has %d tensors, the model %d slots" % (what, len(v), len(self.slots)))
        nz = lambda t: t if bool((t != 0).any()) else None  # noqa: E731
        self.plane = (
            [t.clone() for t in c],
            [nz(t) for t in x],
            [nz(t) for t in y] if y is not None else [None] * len(self.slots),
        )
        return {"reply": "ok"}

    def set_point(self, a, b):
        if self.plane is None:
            raise bad("no plane: send set_plane first")
        centre, dx, dy = self.plane
        with torch.no_grad():
            for s, c, x, y in zip(self.slots, centre, dx, dy):
                t = s.tensor
                t.copy_(c)
                if x is not None:
                    t.add_(x * a)
                if y is not None:
                    t.add_(y * b)

    def op_set_point(self, body):
        self.need_model()
        self.set_point(float(body.get("a")), float(body.get("b")))
        return {"reply": "ok"}

    def evaluate_points(self, body, send):
        self.need_model()
        if self.plane is None:
            raise bad("no plane: send set_plane first")
        for p in body.get("points") or []:
            self.set_point(float(p["a"]), float(p["b"]))
            loss, acc, _ = self.evaluate()
            send({"reply": "point", "index": p["index"], "loss": loss, "accuracy": acc})
        return {"reply": "done"}
