"""The factory contract: ``module:function`` returning the model, the evaluation data and the loss, and
what they become — the module on its device in eval mode, a fixed list of batches, and a loss function
that gives each batch's mean loss with its weight (samples, or predicted tokens for ``causal_lm``).

See docs/python-worker.md for what a factory may return.
"""

import importlib
import inspect
import os
import sys

import torch
import torch.nn.functional as F

from .errors import BAD_CONTRACT, SHAPE_MISMATCH, Failure

LOSSES = ("cross_entropy", "mse", "nll", "causal_lm", "hf")
_ALIASES = {"ce": "cross_entropy", "crossentropy": "cross_entropy", "lm": "causal_lm", "huggingface": "hf"}

EXPECTED = (
    "expected (model, data, loss) or {'model': ..., 'data': ..., 'loss': ...}: model a torch.nn.Module, "
    "data tensors (inputs, targets), a list of batches or any iterable of batches, loss a name "
    "(cross_entropy, mse, nll, causal_lm, hf) or a callable (model, batch) -> loss"
)


def bad(msg):
    return Failure(BAD_CONTRACT, msg)


def import_factory(spec):
    """The factory function named by ``module:function``; errors say what failed, with the Python used."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise bad("factory %r: expected module:function (e.g. mytrain.landscape:build)" % (spec,))
    mod_name, fn_name = spec.split(":")
    try:
        mod = importlib.import_module(mod_name)
    except BaseException as e:  # SyntaxError, SystemExit in the user's module, ...
        raise bad(
            "factory %s: cannot import module %r: %s: %s (python %s, working directory %s, sys.path %s)"
            % (
                spec,
                mod_name,
                type(e).__name__,
                str(e).strip().splitlines()[0] if str(e).strip() else "",
                sys.executable,
                os.getcwd(),
                ":".join(p for p in sys.path if p)[:300],
            )
        ) from None
    fn = mod
    for part in fn_name.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise bad(
                "factory %s: module %r (%s) has no attribute %r"
                % (spec, mod_name, getattr(mod, "__file__", "?"), fn_name)
            )
    if not callable(fn):
        raise bad("factory %s: %r is a %s, not a function" % (spec, fn_name, type(fn).__name__))
    return fn


def call_factory(fn, spec, checkpoint):
    """Calls the factory, passing the checkpoint path when its signature takes one."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    takes = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    named = [p for p in params if p.name in ("checkpoint", "checkpoint_path", "ckpt", "path")]
    ckpt = None if checkpoint is None else str(checkpoint)
    try:
        if named and named[0].kind != named[0].POSITIONAL_ONLY:
            return fn(**{named[0].name: ckpt})
        if takes:
            return fn(ckpt)
        return fn()
    except Failure:
        raise
    except Exception as e:
        raise bad(
            "factory %s raised %s: %s"
            % (spec, type(e).__name__, str(e).strip().splitlines()[0] if str(e).strip() else "")
        ) from None


def unpack(result, spec, contract_loss):
    """(model, data, loss) from what the factory returned."""
    if isinstance(result, dict):
        unknown = set(result) - {"model", "data", "eval_data", "loss"}
        if "model" not in result or not ({"data", "eval_data"} & set(result)) or unknown:
            raise bad("factory %s returned a dict with keys %s; %s" % (spec, sorted(result), EXPECTED))
        model = result["model"]
        data = result["data"] if "data" in result else result["eval_data"]
        loss = result.get("loss")
    elif isinstance(result, (tuple, list)) and len(result) in (2, 3):
        model, data = result[0], result[1]
        loss = result[2] if len(result) == 3 else None
    else:
        what = (
            "a %s of %d items" % (type(result).__name__, len(result))
            if isinstance(result, (tuple, list))
            else "a %s" % type(result).__name__
        )
        raise bad("factory %s returned %s; %s" % (spec, what, EXPECTED))
    if not isinstance(model, torch.nn.Module):
        raise bad("factory %s returned a %s as the model; %s" % (spec, type(model).__name__, EXPECTED))
    if data is None:
        raise bad("factory %s returned no data; %s" % (spec, EXPECTED))
    if loss is None:
        loss = contract_loss or "cross_entropy"
    elif contract_loss and isinstance(loss, str) and normalize_loss(loss) != normalize_loss(contract_loss):
        raise bad("factory %s returned loss %r but the contract says loss %r: give one" % (spec, loss, contract_loss))
    if isinstance(loss, str):
        loss = normalize_loss(loss)
        if loss not in LOSSES:
            raise bad(
                "loss %r: unknown (expected %s, or a callable (model, batch) -> loss from the factory)"
                % (loss, ", ".join(LOSSES))
            )
    elif not callable(loss):
        raise bad("factory %s returned a %s as the loss; %s" % (spec, type(loss).__name__, EXPECTED))
    return model, data, loss


def normalize_loss(name):
    n = name.strip().lower().replace("-", "_")
    return _ALIASES.get(n, n)


# ---- data -------------------------------------------------------------------------------------------


def first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, dict):
        x = list(x.values())
    if isinstance(x, (list, tuple)):
        for v in x:
            t = first_tensor(v)
            if t is not None:
                return t
    return None


def batch_samples(b):
    t = first_tensor(b)
    return int(t.shape[0]) if t is not None and t.dim() > 0 else 1


def narrow(b, start, length, n):
    """Rows [start, start+length) of every tensor whose first dimension is ``n``."""
    if isinstance(b, torch.Tensor):
        return b.narrow(0, start, length) if b.dim() > 0 and b.shape[0] == n else b
    if isinstance(b, dict):
        return {k: narrow(v, start, length, n) for k, v in b.items()}
    if isinstance(b, tuple):
        return tuple(narrow(v, start, length, n) for v in b)
    if isinstance(b, list):
        return [narrow(v, start, length, n) for v in b]
    return b


def to_device(b, device):
    if isinstance(b, torch.Tensor):
        if b.dtype in (torch.float64, torch.float16, torch.bfloat16):
            b = b.float()
        return b.to(device)
    if isinstance(b, dict):
        return {k: to_device(v, device) for k, v in b.items()}
    if isinstance(b, tuple):
        return tuple(to_device(v, device) for v in b)
    if isinstance(b, list):
        return [to_device(v, device) for v in b]
    if hasattr(b, "to") and hasattr(b, "keys"):  # transformers' BatchEncoding
        return {k: to_device(b[k], device) for k in b.keys()}
    return b


def materialize(data, batch_size, subsample):
    """A fixed list of batches: tensors (or a dict of tensors) cut into ``batch_size`` rows, a list or
    iterable of batches taken as given (once, in order); the first ``subsample`` samples only."""
    whole = None
    if isinstance(data, torch.Tensor):
        whole = data
    elif isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        whole = data
    elif isinstance(data, dict) and data and all(isinstance(t, torch.Tensor) for t in data.values()):
        whole = data
    if whole is not None:
        n = batch_samples(whole)
        firsts = [
            t.shape[0] if t.dim() else None
            for t in (whole.values() if isinstance(whole, dict) else (whole if isinstance(whole, tuple) else [whole]))
        ]
        if any(f != n for f in firsts):
            raise bad(
                "the data's tensors have different numbers of samples: %s"
                % [list(t.shape) for t in (whole.values() if isinstance(whole, dict) else whole)]
            )
        if n == 0:
            raise bad("the evaluation data has no samples")
        if subsample:
            n = min(n, subsample)
        return [narrow(whole, s, min(batch_size, n - s), batch_samples(whole)) for s in range(0, n, batch_size)]
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise bad("the data is a %s; %s" % (type(data).__name__, EXPECTED))
    out, seen = [], 0
    for b in data:
        if subsample and seen >= subsample:
            break
        k = batch_samples(b)
        if subsample and seen + k > subsample:
            b = narrow(b, 0, subsample - seen, k)
            k = subsample - seen
        out.append(b)
        seen += k
    if not out:
        raise bad("the evaluation data has no batches")
    return out


# ---- losses -----------------------------------------------------------------------------------------


def logits_of(out):
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits") and isinstance(out.logits, torch.Tensor):
        return out.logits
    if isinstance(out, dict) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise Failure(
        SHAPE_MISMATCH,
        "the model returned a %s; expected a tensor of logits (or an output with .logits)" % type(out).__name__,
    )


def call_model(model, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    return model(inputs)


def pair(b, loss, i):
    if isinstance(b, (tuple, list)) and len(b) == 2:
        return b[0], b[1]
    if isinstance(b, dict) and "inputs" in b and "targets" in b:
        return b["inputs"], b["targets"]
    what = "a dict with keys %s" % sorted(b) if isinstance(b, dict) else "a %s" % type(b).__name__
    raise bad("loss %s needs batches (inputs, targets); batch %d is %s" % (loss, i, what))


def check_shapes(loss, out, y):
    o, t = list(out.shape), list(y.shape)
    if loss == "mse":
        fits = o == t
        want = "the same shape as the targets"
    else:
        fits = len(o) >= 2 and len(o) == len(t) + 1 and o[0] == t[0] and o[2:] == t[1:]
        want = "[N, C] logits for [N] targets, or [N, C, d...] for [N, d...]"
    if not fits:
        raise Failure(
            SHAPE_MISMATCH,
            "shape mismatch: the model's output has shape %s but the targets %s; loss %s expects %s"
            % (o, t, loss, want),
        )


class BatchLoss:
    """One batch's result: the mean loss (a scalar tensor), its weight units (samples, or predicted
    tokens for causal_lm), and correct/predicted counts for classification losses (else None)."""

    __slots__ = ("loss", "units", "correct", "predicted")

    def __init__(self, loss, units, correct=None, predicted=None):
        self.loss, self.units, self.correct, self.predicted = loss, units, correct, predicted


def prepare_targets(batches, loss):
    """Casts targets once: integer classes for cross_entropy/nll (float targets refused), float for mse."""
    if loss not in ("cross_entropy", "nll", "mse"):
        return batches
    out = []
    for i, b in enumerate(batches):
        x, y = pair(b, loss, i)
        if loss == "mse":
            y = y.float()
        else:
            if y.is_floating_point():
                raise bad("batch %d: targets are floats, but loss %s needs integer classes" % (i, loss))
            y = y.long()
        out.append((x, y))
    return out


def batch_loss(model, b, loss, want_accuracy):
    """The loss of one batch (grad as the caller's mode says)."""
    if callable(loss):
        value = loss(model, b)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise Failure(
                SHAPE_MISMATCH,
                "the loss callable returned %s; expected a scalar tensor (the batch's mean loss)" % (shape,),
            )
        return BatchLoss(value.reshape(()), batch_samples(b))
    if loss == "hf":
        out = model(**b) if isinstance(b, dict) else model(*b) if isinstance(b, (tuple, list)) else model(b)
        value = getattr(out, "loss", None)
        if value is None and isinstance(out, dict):
            value = out.get("loss")
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise Failure(
                SHAPE_MISMATCH,
                "loss hf: the model's output has no scalar .loss (give the batches labels, e.g. labels = input_ids)",
            )
        return BatchLoss(value.reshape(()), batch_samples(b))
    if loss == "causal_lm":
        return causal_lm(model, b, want_accuracy)
    x, y = b
    out = logits_of(call_model(model, x))
    check_shapes(loss, out, y)
    if loss == "cross_entropy":
        value = F.cross_entropy(out, y)
    elif loss == "nll":
        value = F.nll_loss(out, y)
    else:
        value = F.mse_loss(out, y)
    if loss != "mse" and want_accuracy:
        pred = out.argmax(1)
        return BatchLoss(
            value, x.shape[0] if isinstance(x, torch.Tensor) else batch_samples(b), int((pred == y).sum()), y.numel()
        )
    return BatchLoss(value, x.shape[0] if isinstance(x, torch.Tensor) else batch_samples(b))


def causal_lm(model, b, want_accuracy):
    """Next-token loss: logits [B, T, V] at t predict labels at t+1; -100 ignored; the mean over the
    batch's predicted tokens, weighted by their count."""
    if isinstance(b, torch.Tensor):
        out = model(b)
        labels = b
    elif isinstance(b, dict):
        inputs = {k: v for k, v in b.items() if k != "labels"}
        out = model(**inputs)
        labels = b.get("labels")
        if labels is None:
            labels = inputs.get("input_ids")
            mask = inputs.get("attention_mask")
            if labels is None:
                raise bad("loss causal_lm: a batch dict needs input_ids (or labels); it has %s" % sorted(b))
            if mask is not None:
                labels = labels.masked_fill(mask == 0, -100)
    elif isinstance(b, (tuple, list)) and len(b) == 2:
        out = model(b[0])
        labels = b[1]
    else:
        raise bad("loss causal_lm needs batches of token ids [B, T], dicts with input_ids, or (input_ids, labels)")
    logits = logits_of(out)
    if logits.dim() != 3 or list(logits.shape[:2]) != list(labels.shape):
        raise Failure(
            SHAPE_MISMATCH,
            "shape mismatch: the model's output has shape %s but the labels %s; loss causal_lm expects [B, T, V] logits for [B, T] labels"
            % (list(logits.shape), list(labels.shape)),
        )
    v = logits.shape[-1]
    sl = logits[:, :-1, :].reshape(-1, v).float()
    tl = labels[:, 1:].reshape(-1).long()
    keep = tl != -100
    count = int(keep.sum())
    if count == 0:
        return BatchLoss(sl.sum() * 0.0, 0, 0 if want_accuracy else None, 0 if want_accuracy else None)
    value = F.cross_entropy(sl, tl, ignore_index=-100, reduction="sum") / count
    if want_accuracy:
        correct = int(((sl.argmax(-1) == tl) & keep).sum())
        return BatchLoss(value, count, correct, count)
    return BatchLoss(value, count)


def has_accuracy(loss):
    return loss in ("cross_entropy", "nll", "causal_lm")


def loss_name(loss):
    if callable(loss):
        return "callable %s" % getattr(loss, "__qualname__", getattr(loss, "__name__", type(loss).__name__))
    return loss
