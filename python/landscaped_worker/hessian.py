"""Hessian work: the parameter subset opened by ``hessian_open``, flat f64 vectors over it addressed by
handles, Hessian-vector products by double backward, losses and gradients at a vector, and the vector
operations (``new_vector``, ``read_vector``, ``dots``, ``combine``).
"""

import contextlib
import math

import torch

from . import factory as C
from .errors import BAD_CHECKPOINT, NON_FINITE, Failure, bad
from .states import bytes_f64, f64_bytes


def sdpa_math():
    """Forces the math kernel of scaled_dot_product_attention (the fused CPU/flash kernels have no double
    backward); a no-op where torch lacks torch.nn.attention."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.MATH])
    except Exception:  # older torch
        return contextlib.nullcontext()


class Hessian:
    def __init__(self, slots, dim, centre, layout):
        self.slots, self.dim, self.centre, self.layout = slots, dim, centre, layout


class HessianOps:
    """The Hessian and vector operations (mixed into :class:`~.session.Session`)."""

    def vector(self, h):
        if h in self.vectors:
            return self.vectors[h]
        if h in self.states:
            raise bad("handle %s is a model state, not a Hessian-space vector" % h)
        raise bad("unknown vector handle %s" % h)

    def need_hessian(self):
        if self.hessian is None:
            raise bad("no Hessian work open: send hessian_open first")
        return self.hessian

    def op_hessian_open(self, body):
        self.need_model()
        if self.hessian is not None:
            raise bad("Hessian work is already open: send hessian_close first")
        subset = body.get("subset")
        if subset not in ("all", "matrices"):
            raise bad("unknown parameter subset %r (expected all or matrices)" % (subset,))
        sel, layout, off = [], [], 0
        for s in self.slots:
            if not s.parameter or not s.tensor.requires_grad:
                continue
            if subset == "matrices" and len(s.shape) < 2:
                continue
            sel.append(s)
            layout.append({"name": s.name, "shape": list(s.shape), "offset": off})
            off += s.numel
        if not sel:
            n = sum(1 for s in self.slots if s.parameter)
            raise bad("no trainable parameter in the subset %s (all: %d tensors)" % (subset, n))
        centre = torch.cat([s.tensor.detach().reshape(-1) for s in sel]).double()
        h = self.handle()
        self.vectors[h] = centre
        self.hessian = Hessian(sel, off, h, layout)
        self.hessian.centre_values = centre.clone()
        return {"reply": "hessian", "dim": off, "layout": layout, "centre": h}

    def op_hessian_close(self, body):
        if self.hessian is None:
            raise bad("no Hessian work open")
        self.hessian = None
        self.vectors.clear()
        self.release_gpu_memory()
        return {"reply": "ok"}

    def split(self, v):
        """A flat f64 vector as f32 tensors shaped like the selected parameters."""
        out, off = [], 0
        for s in self.hessian.slots:
            out.append(v[off : off + s.numel].float().reshape(s.shape))
            off += s.numel
        return out

    def write_theta(self, v):
        with torch.no_grad():
            for s, t in zip(self.hessian.slots, self.split(v)):
                s.tensor.copy_(t)

    @contextlib.contextmanager
    def at(self, h):
        """Parameters at θ' = the vector ``h`` (default: the centre) for the block; back at the centre after."""
        hs = self.need_hessian()
        v = self.vector(hs.centre if h is None else h)
        if v.numel() != hs.dim:
            raise bad("vector has %d values, the Hessian's space %d" % (v.numel(), hs.dim))
        moved = not torch.equal(v, hs.centre_values)
        if moved:
            self.write_theta(v)
        try:
            yield
        finally:
            if moved:
                self.write_theta(hs.centre_values)

    def grad_losses(self):
        """Each batch's mean loss with grad (eval mode, math attention kernel), checked finite, and its weight."""
        units = self.batch_units()
        total = sum(units)
        for i, b in enumerate(self.batches):
            if units[i] == 0:
                continue
            r = C.batch_loss(self.grad_model, b, self.loss, False)
            value = float(r.loss.detach())
            if not math.isfinite(value):
                raise Failure(
                    NON_FINITE,
                    "the loss is %s on evaluation batch %d (non-finite loss: the Hessian is undefined there)"
                    % (value, i),
                )
            if not r.loss.requires_grad:
                raise bad("no trainable parameter is reachable from the loss (it does not depend on the parameters)")
            yield r.loss, units[i] / total

    def batch_units(self):
        if self.units is None:
            with torch.inference_mode():
                if self.loss == "causal_lm":
                    self.units = [C.batch_loss(self.model, b, self.loss, False).units for b in self.batches]
                else:
                    self.units = [C.batch_samples(b) for b in self.batches]
        return self.units

    def op_hvp(self, body):
        hs = self.need_hessian()
        v = self.vector(body.get("v"))
        out = body.get("out")
        self.vector(out)
        if v.numel() != hs.dim:
            raise bad("HVP: vector has %d values, the parameter subset %d" % (v.numel(), hs.dim))
        vs = self.split(v)
        params = [s.tensor for s in hs.slots]
        acc = None
        with torch.enable_grad(), sdpa_math():
            for loss, w in self.grad_losses():
                g = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
                if all(x is None for x in g):
                    raise bad("no trainable parameter in the subset is reachable from the loss")
                dot = None
                for gi, vi in zip(g, vs):
                    if gi is not None:
                        term = (gi * vi).sum()
                        dot = term if dot is None else dot + term
                if dot is None or not dot.requires_grad:
                    continue
                hv = torch.autograd.grad(dot, params, allow_unused=True)
                # One flat f64 vector per batch (elementwise the same as per tensor, fewer small ops).
                flat = flatten(hv, params).double().mul_(w)
                acc = flat if acc is None else acc.add_(flat)
        res = acc if acc is not None else torch.zeros(hs.dim, dtype=torch.float64, device=self.device)
        if not bool(torch.isfinite(res).all()):
            i = int((~torch.isfinite(res)).nonzero()[0])
            raise Failure(NON_FINITE, "the Hessian-vector product has a non-finite entry (index %d)" % i)
        self.vectors[out] = res
        return {"reply": "ok"}

    def op_loss(self, body):
        self.need_hessian()
        with self.at(body.get("at")), sdpa_math():
            loss, _, _ = self.evaluate(f32=True)
        if not math.isfinite(loss):
            raise Failure(NON_FINITE, "the loss is %s at a perturbed point" % loss)
        return {"reply": "number", "value": loss}

    def op_gradient(self, body):
        hs = self.need_hessian()
        out = body.get("out")
        self.vector(out)
        params = [s.tensor for s in hs.slots]
        acc = None
        loss_sum = 0.0
        with self.at(body.get("at")), torch.enable_grad(), sdpa_math():
            for loss, w in self.grad_losses():
                loss_sum += w * float(loss.detach())
                g = torch.autograd.grad(loss, params, allow_unused=True)
                if all(x is None for x in g):
                    raise bad("no trainable parameter in the subset is reachable from the loss")
                flat = flatten(g, params).double().mul_(w)
                acc = flat if acc is None else acc.add_(flat)
        res = acc if acc is not None else torch.zeros(hs.dim, dtype=torch.float64, device=self.device)
        if not bool(torch.isfinite(res).all()):
            raise Failure(NON_FINITE, "the gradient has a non-finite entry")
        self.vectors[out] = res
        return {"reply": "number", "value": loss_sum}

    def op_new_vector(self, body):
        hs = self.need_hessian()
        init = body.get("init") or {}
        kind = init.get("kind")
        dim = hs.dim
        if kind == "zeros":
            v = torch.zeros(dim, dtype=torch.float64, device=self.device)
        elif kind == "gaussian":
            torch.manual_seed(init.get("seed"))
            v = torch.randn(dim, dtype=torch.float32).double().to(self.device)
        elif kind == "rademacher":
            torch.manual_seed(init.get("seed"))
            v = (torch.randint(0, 2, (dim,), dtype=torch.int64).double() * 2.0 - 1.0).to(self.device)
        elif kind == "copy":
            v = self.vector(init.get("of")).clone()
        elif kind == "tensors":
            v = self.tensors_vector(init.get("path"), init.get("bind") or {})
        elif kind == "values":
            data = init.get("data")
            if not isinstance(data, bytes) or len(data) % 8:
                raise bad("values: not a whole number of f64")
            if len(data) // 8 != dim:
                raise bad("values: %d numbers, the Hessian's space has %d" % (len(data) // 8, dim))
            v = bytes_f64(data).to(self.device)
        else:
            raise bad("new_vector: unknown init %r" % (kind,))
        h = self.handle()
        self.vectors[h] = v
        return {"reply": "handle", "handle": h}

    def tensors_vector(self, path, rules):
        """A vector from per-parameter tensors of a safetensors file, bound like a checkpoint: every
        parameter of the subset must be there (zeros with ``missing_zero``), other slots are skipped."""
        hs = self.need_hessian()
        if not isinstance(path, str):
            raise bad("new_vector: tensors needs a path")
        state = self.bind_file(path, dict(rules, missing_zero=True))
        index = {id(s): i for i, s in enumerate(self.slots)}
        if not rules.get("missing_zero"):
            for s in hs.slots:
                if index[id(s)] not in self.bound_slots:
                    raise Failure(BAD_CHECKPOINT, "%s: no tensor for the parameter %r" % (path, s.name))
        parts = [state[index[id(s)]].reshape(-1).double() for s in hs.slots]
        return torch.cat(parts).to(self.device)

    def op_multiply(self, body):
        y, x = body.get("y"), body.get("x")
        if x == y:
            raise bad("multiply: y and x must be distinct vectors")
        yv, xv = self.vector(y), self.vector(x)
        if yv.numel() != xv.numel():
            raise bad("multiply: %d values by %d" % (yv.numel(), xv.numel()))
        yv.mul_(xv)
        return {"reply": "ok"}

    def op_read_vector(self, body):
        return {"reply": "values", "data": f64_bytes(self.vector(body.get("v")))}

    def op_dots(self, body):
        x = self.vector(body.get("x"))
        ys = [self.vector(y) for y in body.get("ys") or []]
        return {"reply": "numbers", "values": [float(torch.dot(x, y)) for y in ys]}

    def op_combine(self, body):
        y = body.get("y")
        yv = self.vector(y)
        terms = body.get("terms") or []
        xs = []
        for c, x in terms:
            if x == y:
                raise bad("combine: y may not appear among the terms")
            xs.append((float(c), self.vector(x)))
        scale = float(body.get("scale"))
        if scale != 1.0:
            yv.mul_(scale)
        for c, xv in xs:
            yv.add_(xv, alpha=c)
        return {"reply": "ok"}


def flatten(ts, like):
    """Tensors (None: zeros shaped like the matching ``like``) as one flat vector."""
    return torch.cat([(t if t is not None else torch.zeros_like(p)).reshape(-1) for t, p in zip(ts, like)])
