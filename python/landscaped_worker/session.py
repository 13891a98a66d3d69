"""One worker's state and the answer to every operation of the worker protocol, as the TorchScript worker
(worker/src/session.rs) answers them: the model built by the factory, states and Hessian-space vectors
addressed by handles (tensors on the model's device), the plane being evaluated.

Numerics follow docs/worker-protocol.md ("Semantics the backends share") operation for operation, so a
seed gives the same directions and a plane the same grid as with the TorchScript worker.
"""

import contextlib
import math
import os

import torch

from . import PROTOCOL_VERSION, __version__
from . import contract as C
from . import safetensors as st
from .errors import BAD_CHECKPOINT, BAD_CONTRACT, BAD_REQUEST, NON_FINITE, UNSUPPORTED, Failure
from .protocol import CAP_CUDA, CAP_HVP, CAP_TORCH_RNG


def bad(msg):
    return Failure(BAD_REQUEST, msg)


def devices():
    d = ["cpu"]
    if torch.cuda.is_available():
        d += ["cuda:%d" % i for i in range(torch.cuda.device_count())]
    return d


def hello():
    caps = [CAP_HVP, CAP_TORCH_RNG]
    if torch.cuda.is_available():
        caps.append(CAP_CUDA)
    return {
        "reply": "hello",
        "protocol": PROTOCOL_VERSION,
        "backend": "python",
        "backend_version": "PyTorch %s (landscaped_worker %s, CUDA %s)"
        % (torch.__version__, __version__, torch.version.cuda if torch.cuda.is_available() else "not available"),
        "devices": devices(),
        "capabilities": caps,
        "pid": os.getpid(),
    }


def parse_device(name):
    s = (name or "cpu").strip()
    if s.lower() == "cpu":
        return torch.device("cpu")
    if s == "cuda" or s.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise Failure(BAD_CONTRACT, "device %r: this Python's torch %s sees no CUDA GPU; use --device cpu" % (s, torch.__version__))
        idx = 0 if s == "cuda" else s[5:]
        try:
            idx = int(idx)
        except ValueError:
            raise Failure(BAD_CONTRACT, "device %r: expected cpu, cuda or cuda:N" % s) from None
        if idx >= torch.cuda.device_count():
            raise Failure(BAD_CONTRACT, "device %r: only %d CUDA device(s) present" % (s, torch.cuda.device_count()))
        return torch.device("cuda", idx)
    raise Failure(BAD_CONTRACT, "device %r: expected cpu, cuda or cuda:N" % s)


def parse_precision(p):
    """The autocast dtype for an evaluation precision (None: f32, no autocast)."""
    s = (p or "f32").strip().lower()
    if s in ("f32", "float32"):
        return None
    if s in ("bf16", "bfloat16"):
        return torch.bfloat16
    if s in ("fp16", "f16", "float16"):
        return torch.float16
    raise Failure(BAD_CONTRACT, "precision %r: expected f32, bf16 or fp16" % p)


def strip(name, prefixes):
    while True:
        for p in prefixes:
            if p and name.startswith(p):
                name = name[len(p) :]
                break
        else:
            return name


def sdpa_math():
    """Forces the math kernel of scaled_dot_product_attention (the fused CPU/flash kernels have no double
    backward); a no-op where torch lacks torch.nn.attention."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.MATH])
    except Exception:  # older torch
        return contextlib.nullcontext()


class Slot:
    __slots__ = ("name", "aliases", "tensor", "parameter", "shape")

    def __init__(self, name, aliases, tensor, parameter):
        self.name, self.aliases, self.tensor, self.parameter = name, aliases, tensor, parameter
        self.shape = tuple(tensor.shape)

    @property
    def numel(self):
        return self.tensor.numel()


class Hessian:
    def __init__(self, slots, dim, centre, layout):
        self.slots, self.dim, self.centre, self.layout = slots, dim, centre, layout


class Session:
    def __init__(self):
        self.model = None
        self.grad_model = None
        self.slots = []
        self.ignored = []
        self.batches = []
        self.loss = None
        self.device = torch.device("cpu")
        self.states = {}
        self.vectors = {}
        self.plane = None
        self.hessian = None
        self.next = 0
        self.done = False
        self.units = None
        self.factory = ""
        self.autocast = None

    # ---- handles --------------------------------------------------------------------------------

    def handle(self):
        self.next += 1
        return self.next

    def need_model(self):
        if self.model is None:
            raise bad("no model loaded: send load_model first")

    def state(self, h):
        if h in self.states:
            return self.states[h]
        if h in self.vectors:
            raise bad("handle %s is a Hessian-space vector, not a model state" % h)
        raise bad("unknown state handle %s" % h)

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

    # ---- dispatch -------------------------------------------------------------------------------

    def handle_op(self, body):
        op = body.get("op")
        fn = getattr(self, "op_" + op, None) if isinstance(op, str) else None
        if fn is None:
            raise Failure(UNSUPPORTED, "unknown operation %r" % (op,))
        return fn(body)

    def op_hello(self, body):
        return hello()

    def op_shutdown(self, body):
        self.done = True
        self.states.clear()
        self.vectors.clear()
        self.hessian = None
        self.release_gpu_memory()
        return {"reply": "ok"}

    def release_gpu_memory(self):
        """Hands the CUDA caching allocator's unused blocks back to the driver, so that GPU memory a
        finished job used is free for the trainer (the process's exit would, later)."""
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ---- the model ------------------------------------------------------------------------------

    def op_load_model(self, body):
        if self.model is not None:
            raise bad("a model is already loaded in this worker")
        c = body.get("contract") or {}
        spec = c.get("factory")
        if not spec:
            raise Failure(BAD_CONTRACT, "the Python worker needs `factory` (module:function) in the contract; a TorchScript model needs the TorchScript worker (--backend torchscript)")
        bs = c.get("batch_size") or 256
        if c.get("threads"):
            torch.set_num_threads(int(c["threads"]))
        self.device = parse_device(c.get("device"))
        self.autocast = parse_precision(c.get("precision"))
        fn = C.import_factory(spec)
        model, data, loss = C.unpack(C.call_factory(fn, spec, c.get("checkpoint")), spec, c.get("loss"))
        model = model.to(self.device)
        if any(p.is_floating_point() and p.dtype != torch.float32 for p in model.parameters()):
            model = model.float()
        model.eval()
        self.model = model
        # torch.compile'd modules: differentiate through the original module (same parameters).
        self.grad_model = getattr(model, "_orig_mod", model)
        self.loss = loss
        self.factory = spec
        batches = C.materialize(data, int(bs), c.get("subsample"))
        self.batches = C.prepare_targets([C.to_device(b, self.device) for b in batches], loss)
        self.bind_module()
        try:
            self.evaluate()
        except Failure:
            self.model = None
            raise
        except Exception as e:
            self.model = None
            raise Failure(BAD_CONTRACT, "factory %s: evaluating the model on its data failed: %s: %s" % (spec, type(e).__name__, str(e).strip().splitlines()[0] if str(e).strip() else "")) from None
        return {"reply": "model", "info": self.info()}

    def bind_module(self):
        """Slots: parameters in module order (tied weights once, under every name), then the float
        buffers the state dict holds; integer buffers are ignored; module names lose the default prefixes."""
        m = self.model
        prefixes = ("module.", "model.", "_orig_mod.")
        raw = [n for n, _ in m.named_parameters()] + [n for n, _ in m.named_buffers()]
        stripped = [strip(n, prefixes) for n in raw]
        use_strip = len(set(stripped)) == len(stripped)
        name = (lambda n: strip(n, prefixes)) if use_strip else (lambda n: n)
        sd_keys = set(m.state_dict(keep_vars=True).keys())
        aliases = {}
        for n, p in m.named_parameters(remove_duplicate=False):
            aliases.setdefault(id(p), []).append(name(n))
        for n, b in m.named_buffers(remove_duplicate=False):
            aliases.setdefault(id(b), []).append(name(n))
        self.slots, self.ignored = [], []
        for n, p in m.named_parameters():
            self.slots.append(Slot(name(n), aliases[id(p)], p, True))
        for n, b in m.named_buffers():
            if n not in sd_keys:
                continue  # non-persistent: not in checkpoints
            if b.is_floating_point():
                self.slots.append(Slot(name(n), aliases[id(b)], b, False))
            else:
                self.ignored.extend(aliases[id(b)])

    def info(self):
        return {
            "slots": [{"name": s.name, "shape": list(s.shape), "parameter": s.parameter} for s in self.slots],
            "ignored_buffers": list(self.ignored),
            "samples": sum(C.batch_samples(b) for b in self.batches),
            "batches": len(self.batches),
            "loss": C.loss_name(self.loss),
            "has_accuracy": C.has_accuracy(self.loss) if isinstance(self.loss, str) else False,
            "device": str(self.device) if self.device.type == "cpu" else "cuda:%d" % self.device.index,
            "source": "%s (python %s, torch %s%s)"
            % (self.factory, os.sys.executable, torch.__version__, ", autocast %s" % str(self.autocast).replace("torch.", "") if self.autocast else ""),
        }

    # ---- evaluation -----------------------------------------------------------------------------

    def evaluate(self, f32=False):
        """(loss, accuracy, samples): eval mode, inference mode, batch means weighted by their units;
        under autocast when the contract asks for bf16/fp16 (not with ``f32``: Hessian work), the loss
        accumulated in f32/f64."""
        self.need_model()
        acc_wanted = isinstance(self.loss, str) and C.has_accuracy(self.loss)
        total, units, correct, predicted = 0.0, 0, 0, 0
        cast = torch.autocast(self.device.type, dtype=self.autocast) if self.autocast is not None and not f32 else contextlib.nullcontext()
        with torch.inference_mode():
            for b in self.batches:
                with cast:
                    r = C.batch_loss(self.model, b, self.loss, acc_wanted)
                total += float(r.loss.float()) * r.units
                units += r.units
                if r.correct is not None:
                    correct += r.correct
                    predicted += r.predicted
        samples = sum(C.batch_samples(b) for b in self.batches)
        loss = total / units if units else float("nan")
        return loss, (correct / max(predicted, 1)) if acc_wanted else None, samples

    def op_evaluate(self, body):
        loss, acc, samples = self.evaluate()
        return {"reply": "evaluation", "loss": loss, "accuracy": acc, "samples": samples}

    # ---- states ---------------------------------------------------------------------------------

    def op_load_state(self, body):
        self.need_model()
        src = body.get("source") or {}
        rules = body.get("bind") or {}
        kind, path = src.get("kind"), src.get("path")
        if kind == "checkpoint":
            raise Failure(UNSUPPORTED, "this worker does not read checkpoints (no read_checkpoints capability); the caller converts %s to safetensors" % path)
        if kind != "safetensors" or not isinstance(path, str):
            raise bad("load_state: source must be {kind: safetensors, path}")
        state = self.bind_file(path, rules)
        h = self.handle()
        self.states[h] = state
        return {"reply": "handle", "handle": h}

    def bind_file(self, path, rules):
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
        for key, e in entries.items():
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
                problems.append("%r has shape %s but the module's %r has %s" % (key, list(e.shape), s.name, list(s.shape)))
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

    # ---- random directions ------------------------------------------------------------------------

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

    # ---- planes ---------------------------------------------------------------------------------

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

    # ---- Hessian work ---------------------------------------------------------------------------

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
            l = float(r.loss.detach())
            if not math.isfinite(l):
                raise Failure(NON_FINITE, "the loss is %s on evaluation batch %d (non-finite loss: the Hessian is undefined there)" % (l, i))
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

    # ---- vectors --------------------------------------------------------------------------------

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


# ---- helpers ----------------------------------------------------------------------------------------


def flatten(ts, like):
    """Tensors (None: zeros shaped like the matching ``like``) as one flat vector."""
    return torch.cat([(t if t is not None else torch.zeros_like(p)).reshape(-1) for t, p in zip(ts, like)])


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
