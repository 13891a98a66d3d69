"""The model and its binding: the factory's model on the contract's device, its slots (parameters in module
order, tied weights once under every name, then the float buffers the state dict holds), the evaluation set
in batches, and evaluation (``load_model``, ``evaluate``).
"""

import contextlib
import os

import torch

from . import factory as C
from .errors import BAD_CONTRACT, Failure, bad


def parse_device(name):
    s = (name or "cpu").strip()
    if s.lower() == "cpu":
        return torch.device("cpu")
    if s == "cuda" or s.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise Failure(
                BAD_CONTRACT,
                "device %r: this Python's torch %s sees no CUDA GPU; use --device cpu" % (s, torch.__version__),
            )
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


class Slot:
    __slots__ = ("name", "aliases", "tensor", "parameter", "shape")

    def __init__(self, name, aliases, tensor, parameter):
        self.name, self.aliases, self.tensor, self.parameter = name, aliases, tensor, parameter
        self.shape = tuple(tensor.shape)

    @property
    def numel(self):
        return self.tensor.numel()


class ModelOps:
    """The model's operations (mixed into :class:`~.session.Session`, which holds the state)."""

    def need_model(self):
        if self.model is None:
            raise bad("no model loaded: send load_model first")

    def op_load_model(self, body):
        if self.model is not None:
            raise bad("a model is already loaded in this worker")
        c = body.get("contract") or {}
        spec = c.get("factory")
        if not spec:
            raise Failure(
                BAD_CONTRACT,
                "the Python worker needs `factory` (module:function) in the contract; a TorchScript model needs the TorchScript worker (--backend torchscript)",
            )
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
            raise Failure(
                BAD_CONTRACT,
                "factory %s: evaluating the model on its data failed: %s: %s"
                % (spec, type(e).__name__, str(e).strip().splitlines()[0] if str(e).strip() else ""),
            ) from None
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
            % (
                self.factory,
                os.sys.executable,
                torch.__version__,
                ", autocast %s" % str(self.autocast).replace("torch.", "") if self.autocast else "",
            ),
        }

    def evaluate(self, f32=False):
        """(loss, accuracy, samples): eval mode, inference mode, batch means weighted by their units;
        under autocast when the contract asks for bf16/fp16 (not with ``f32``: Hessian work), the loss
        accumulated in f32/f64."""
        self.need_model()
        acc_wanted = isinstance(self.loss, str) and C.has_accuracy(self.loss)
        total, units, correct, predicted = 0.0, 0, 0, 0
        cast = (
            torch.autocast(self.device.type, dtype=self.autocast)
            if self.autocast is not None and not f32
            else contextlib.nullcontext()
        )
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
