"""Model states addressed by handles: one f32 tensor per slot, on the model's device. ``load_state`` binds a
safetensors file to the slots by name, ``read_state`` / ``set_state`` / ``difference`` / ``free``, and the
random directions about a state (``random_directions``), normalized as the TorchScript worker does.
"""

import math

import torch

from . import safetensors as st
from .errors import BAD_CHECKPOINT, UNSUPPORTED, Failure, bad
from .model import strip


class StateOps:
    """The state operations (mixed into :class:`~.session.Session`)."""

    def state(self, h):
        if h in self.states:
            return self.states[h]
        if h in self.vectors:
            raise bad("handle %s is a Hessian-space vector, not a model state" % h)
        raise bad("unknown state handle %s" % h)

    def op_load_state(self, body):
        self.need_model()
        src = body.get("source") or {}
        rules = body.get("bind") or {}
        kind, path = src.get("kind"), src.get("path")
        if kind == "checkpoint":
            raise Failure(
                UNSUPPORTED,
                "this worker does not read checkpoints (no read_checkpoints capability); the caller converts %s to safetensors"
                % path,
            )
        if kind != "safetensors" or not isinstance(path, str):
            raise bad("load_state: source must be {kind: safetensors, path}")
        state = self.bind_file(path, rules)
        h = self.handle()
        self.states[h] = state
        return {"reply": "handle", "handle": h}

    def bind_file(self, path, rules):
        """The state bound from a safetensors file (zeros for slots it lacks with ``missing_zero``); the
        indices of the slots it supplied are left in ``self.bound_slots``."""
        prefixes = rules.get("strip_prefixes")
        if prefixes is None:
            prefixes = ["module.", "model.", "_orig_mod."]
        mapping = {a: b for a, b in (rules.get("mapping") or [])}
        allow_unexpected = bool(rules.get("allow_unexpected"))
        missing_zero = bool(rules.get("missing_zero"))
        try:
            entries, _ = st.read_header(path)
        except FileNotFoundError:
            raise Failure(BAD_CHECKPOINT, "%s: no such file" % path) from None
        except (OSError, st.SafetensorsError) as e:
            raise Failure(BAD_CHECKPOINT, str(e)) from None
        by_alias = {}
        for i, s in enumerate(self.slots):
            for a in s.aliases:
                by_alias[strip(a, prefixes)] = i
        ignored = {strip(n, prefixes) for n in self.ignored}
        source = {}
        problems, unexpected = [], []
        for key, _entry in entries.items():
            n = mapping[key] if key in mapping else strip(key, prefixes)
            i = by_alias.get(n)
            if i is None:
                if n not in ignored:
                    unexpected.append(key)
                continue
            if i in source:
                prev = source[i]
                if strip(prev, prefixes) == n or (mapping.get(prev) == n):
                    problems.append("both %r and %r map to %r" % (prev, key, n))
                # else: a tied weight present under two of its names; the first is used
                continue
            source[i] = key
        missing = []
        for i, s in enumerate(self.slots):
            key = source.get(i)
            if key is None:
                if not missing_zero:
                    missing.append(s.name)
                continue
            e = entries[key]
            if tuple(e.shape) != s.shape:
                problems.append(
                    "%r has shape %s but the module's %r has %s" % (key, list(e.shape), s.name, list(s.shape))
                )
            elif not e.is_float:
                problems.append("%r is %s but %r is a float tensor" % (key, str(e.dtype).replace("torch.", ""), s.name))
        if missing:
            problems.append("missing from the checkpoint: %s" % listing(missing))
        if unexpected and not allow_unexpected:
            problems.append("not in the module (unexpected): %s" % listing(unexpected))
        if missing_zero and not source:
            problems.append("no tensor of the file is in the module")
        if problems:
            raise Failure(BAD_CHECKPOINT, "checkpoint %s does not fit the model: %s" % (path, "; ".join(problems)))
        self.bound_slots = set(source)
        want = {source[i]: i for i in source}
        state = [None] * len(self.slots)
        try:
            for key, t in st.read_tensors(path, set(want)):
                i = want[key]
                state[i] = t.to(torch.float32).to(self.device)
        except (OSError, st.SafetensorsError) as e:
            raise Failure(BAD_CHECKPOINT, str(e)) from None
        for i, s in enumerate(self.slots):
            if state[i] is None:
                state[i] = torch.zeros(s.shape, dtype=torch.float32, device=self.device)
        return state

    def op_read_state(self, body):
        st_ = self.state(body.get("state"))
        flat = torch.cat([t.reshape(-1) for t in st_]).double().cpu() if st_ else torch.zeros(0, dtype=torch.float64)
        return {"reply": "values", "data": f64_bytes(flat)}

    def write_state(self, state):
        with torch.no_grad():
            for s, v in zip(self.slots, state):
                s.tensor.copy_(v)

    def op_set_state(self, body):
        self.need_model()
        self.write_state(self.state(body.get("state")))
        return {"reply": "ok"}

    def op_difference(self, body):
        a, b = self.state(body.get("from")), self.state(body.get("to"))
        h = self.handle()
        self.states[h] = [q - p for p, q in zip(a, b)]
        return {"reply": "handle", "handle": h}

    def op_free(self, body):
        for h in body.get("handles") or []:
            self.states.pop(h, None)
            self.vectors.pop(h, None)
        self.release_gpu_memory()
        return {"reply": "ok"}

    def op_random_directions(self, body):
        self.need_model()
        norm, ignore = body.get("norm"), body.get("ignore")
        count, seed = body.get("count"), body.get("seed")
        if norm not in ("filter", "layer", "none"):
            raise bad("unknown normalization %r (expected filter, layer or none)" % (norm,))
        if ignore not in ("biasbn", "none"):
            raise bad("unknown ignore rule %r (expected biasbn or none)" % (ignore,))
        if count not in (1, 2):
            raise bad("random_directions: count must be 1 or 2, not %r" % (count,))
        centre = self.state(body.get("about"))
        params = [i for i, s in enumerate(self.slots) if s.parameter]
        torch.manual_seed(seed)
        draws = [[torch.randn(self.slots[i].shape, dtype=torch.float32) for i in params] for _ in range(count)]
        dirs = []
        for d in draws:
            out = []
            for t, i in zip(d, params):
                w = centre[i].detach().cpu()
                out.append(normalize(t, w, self.slots[i].shape, norm, ignore))
            out += [torch.zeros(s.shape, dtype=torch.float32) for s in self.slots[len(params) :]]
            dirs.append(out)
        if count == 2 and body.get("orthogonalize"):
            orthogonalize(dirs[1], dirs[0])
        cos = cosine(dirs[0], dirs[1]) if count == 2 else None
        handles = []
        for d in dirs:
            h = self.handle()
            self.states[h] = [t.to(self.device) for t in d]
            handles.append(h)
        return {"reply": "directions", "handles": handles, "cosine": cos}


# ---- helpers ----------------------------------------------------------------------------------------


def f64_bytes(t):
    t = t.detach().to("cpu", torch.float64).contiguous()
    import ctypes

    return ctypes.string_at(t.data_ptr(), t.numel() * 8) if t.numel() else b""


def bytes_f64(data):
    if not data:
        return torch.zeros(0, dtype=torch.float64)
    return torch.frombuffer(bytearray(data), dtype=torch.float64).clone()


def listing(names, show=12):
    s = ", ".join(names[:show])
    if len(names) > show:
        s += " and %d more" % (len(names) - show)
    return s


def f32(x):
    """x rounded to f32, as a Python float (so a tensor times it multiplies by exactly that f32)."""
    return torch.tensor(x, dtype=torch.float64).float().item()


def normalize(d, w, shape, norm, ignore):
    """One parameter's random direction (net_plotter.py's normalize_directions_for_weights), with the
    norms in f64 and each scale rounded to f32, as the TorchScript worker computes it."""
    if len(shape) <= 1:
        return torch.zeros_like(d) if ignore == "biasbn" else w.clone().float()
    if norm == "filter":
        f = shape[0]
        if d.numel() == 0 or f == 0:
            return d
        dn = d.double().reshape(f, -1).norm(dim=1)
        wn = w.double().reshape(f, -1).norm(dim=1)
        scale = (wn / (dn + 1e-10)).float()
        return (d.reshape(f, -1) * scale[:, None]).reshape(shape)
    if norm == "layer":
        wn, dn = w.double().norm().item(), d.double().norm().item()
        ratio = wn / dn if dn else (float("nan") if wn == 0 else float("inf"))
        return d * f32(ratio)
    return d


def dot(a, b):
    return sum(float((x.double() * y.double()).sum()) for x, y in zip(a, b))


def cosine(a, b):
    na, nb = math.sqrt(dot(a, a)), math.sqrt(dot(b, b))
    return 0.0 if na == 0.0 or nb == 0.0 else dot(a, b) / (na * nb)


def orthogonalize(y, x):
    """Gram-Schmidt in f64, keeping ‖y‖ (the TorchScript worker's order of operations)."""
    xx = dot(x, x)
    if xx == 0.0:
        return
    before = math.sqrt(dot(y, y))
    c = dot(x, y) / xx
    for k in range(len(y)):
        y[k] = (y[k].double() - c * x[k].double()).float()
    after = math.sqrt(dot(y, y))
    if after > 0.0:
        s = f32(before / after)
        for k in range(len(y)):
            y[k] = y[k] * s
