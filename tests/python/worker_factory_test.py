"""The Python worker's factory contract without a worker process: what a factory may return, how data
becomes batches (tensors, dicts, lists, iterables, subsampling), the losses (shapes checked, causal_lm's
shift, ignore_index and padding, weights), binding rules, and the calls with or without a checkpoint
path. Run by tests/python_worker.rs (python -m unittest)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from landscaped_worker import factory as C  # noqa: E402
from landscaped_worker.errors import Failure  # noqa: E402
from landscaped_worker.model import strip  # noqa: E402
from landscaped_worker.session import Session  # noqa: E402


class Lin(torch.nn.Module):
    def __init__(self, i=3, o=2):
        super().__init__()
        self.l = torch.nn.Linear(i, o)

    def forward(self, x):
        return self.l(x)


class UnpackTest(unittest.TestCase):
    def test_tuples_dicts_and_defaults(self):
        m, d = Lin(), (torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
        self.assertEqual(C.unpack((m, d, "ce"), "f:g", None)[2], "cross_entropy")
        self.assertEqual(C.unpack((m, d), "f:g", "mse")[2], "mse")
        self.assertEqual(C.unpack((m, d), "f:g", None)[2], "cross_entropy")
        self.assertEqual(C.unpack({"model": m, "eval_data": d, "loss": "nll"}, "f:g", None)[2], "nll")
        fn = lambda model, batch: model(batch[0]).sum()  # noqa: E731
        self.assertIs(C.unpack((m, d, fn), "f:g", None)[2], fn)

    def test_wrong_returns_are_one_line(self):
        m, d = Lin(), (torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
        for bad, what in (
            ((m,), "tuple of 1 items"),
            ({"model": m}, "dict with keys"),
            ((m, d, 3), "int as the loss"),
            ((m, d, "hinge"), "unknown"),
            ((m, None), "no data"),
        ):
            with self.assertRaises(Failure) as cm:
                C.unpack(bad, "f:g", None)
            self.assertIn(what, cm.exception.message)
            self.assertNotIn("\n", cm.exception.message)
        with self.assertRaises(Failure) as cm:
            C.unpack((m, d, "mse"), "f:g", "cross_entropy")
        self.assertIn("give one", cm.exception.message)

    def test_the_checkpoint_path_is_passed_when_the_signature_takes_it(self):
        seen = []
        C.call_factory(lambda: seen.append("none"), "f", "/ck")
        C.call_factory(lambda path: seen.append(path), "f", "/ck")
        C.call_factory(lambda *, checkpoint=None: seen.append(checkpoint), "f", "/ck")
        C.call_factory(lambda other=1, checkpoint=None: seen.append(checkpoint), "f", "/ck")
        self.assertEqual(seen, ["none", "/ck", "/ck", "/ck"])


class DataTest(unittest.TestCase):
    def test_tensors_are_cut_into_batches_and_subsampled(self):
        x, y = torch.arange(10.0).view(10, 1), torch.arange(10)
        b = C.materialize((x, y), 4, None)
        self.assertEqual([len(t[0]) for t in b], [4, 4, 2])
        b = C.materialize((x, y), 4, 5)
        self.assertEqual([len(t[0]) for t in b], [4, 1])
        b = C.materialize({"input_ids": torch.zeros(7, 3), "labels": torch.zeros(7, 3)}, 3, None)
        self.assertEqual([len(t["input_ids"]) for t in b], [3, 3, 1])
        self.assertEqual([len(t) for t in C.materialize(torch.zeros(5, 2), 2, None)], [2, 2, 1])

    def test_iterables_are_read_once_in_order_and_subsampled_across_batches(self):
        ds = torch.utils.data.TensorDataset(torch.arange(10.0).view(10, 1), torch.arange(10))
        b = C.materialize(torch.utils.data.DataLoader(ds, batch_size=4), 99, 6)
        self.assertEqual([t[1].tolist() for t in b], [[0, 1, 2, 3], [4, 5]])
        gen = ((torch.ones(2, 1) * i, torch.zeros(2, dtype=torch.long)) for i in range(3))
        self.assertEqual(len(C.materialize(gen, 1, None)), 3)
        with self.assertRaises(Failure):
            C.materialize(iter([]), 1, None)
        with self.assertRaises(Failure):
            C.materialize((torch.zeros(3, 1), torch.zeros(4)), 2, None)

    def test_float_targets_for_classification_are_refused(self):
        with self.assertRaises(Failure) as cm:
            C.prepare_targets([(torch.zeros(2, 3), torch.zeros(2))], "cross_entropy")
        self.assertIn("integer classes", cm.exception.message)


def close_f32(case, got, want):
    """The same float32 operations in another order at most: within 4 float32 ulps (measured: equal)."""
    got, want = float(got), float(want)
    case.assertLessEqual(abs(got - want), 4 * torch.finfo(torch.float32).eps * abs(want), (got, want))


class LossTest(unittest.TestCase):
    def setUp(self):
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()

    def tearDown(self):
        self.no_grad.__exit__(None, None, None)

    def test_named_losses_check_shapes(self):
        m = Lin()
        x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
        r = C.batch_loss(m, (x, y), "cross_entropy", True)
        close_f32(self, r.loss, F.cross_entropy(m(x), y))
        self.assertEqual((r.units, r.predicted), (4, 4))
        r = C.batch_loss(m, (x, torch.randn(4, 2)), "mse", False)
        self.assertEqual(r.correct, None)
        with self.assertRaises(Failure) as cm:
            C.batch_loss(m, (x, torch.randn(4, 3)), "mse", False)
        self.assertIn("[4, 2]", cm.exception.message)
        self.assertEqual(cm.exception.kind, "shape_mismatch")
        with self.assertRaises(Failure):
            C.batch_loss(m, (x, torch.tensor([[0, 1]] * 4)), "nll", False)
        with self.assertRaises(Failure):
            C.batch_loss(m, (x, y), lambda model, b: model(b[0]), False)  # not a scalar

    def test_causal_lm_shifts_ignores_and_masks_padding(self):
        torch.manual_seed(0)
        emb = torch.nn.Embedding(11, 11)
        ids = torch.randint(0, 11, (2, 5))
        logits = emb(ids)
        want = F.cross_entropy(logits[:, :-1].reshape(-1, 11), ids[:, 1:].reshape(-1))
        r = C.batch_loss(emb, ids, "causal_lm", True)
        close_f32(self, r.loss, want)
        self.assertEqual(r.units, 8)
        mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
        model = lambda input_ids, attention_mask: emb(input_ids)  # noqa: E731
        r = C.batch_loss(model, {"input_ids": ids, "attention_mask": mask}, "causal_lm", False)
        self.assertEqual(r.units, 2 + 4)
        keep = mask[:, 1:].reshape(-1).bool()
        want = F.cross_entropy(logits[:, :-1].reshape(-1, 11)[keep], ids[:, 1:].reshape(-1)[keep])
        close_f32(self, r.loss, want)


class BindingTest(unittest.TestCase):
    def test_prefixes_both_sides_tied_weights_and_buffers(self):
        self.assertEqual(strip("module._orig_mod.model.fc.weight", ["module.", "model.", "_orig_mod."]), "fc.weight")

        class Tied(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = torch.nn.Embedding(5, 3)
                self.head = torch.nn.Linear(3, 5, bias=False)
                self.head.weight = self.emb.weight
                self.bn = torch.nn.BatchNorm1d(3)

        s = Session()
        s.model = torch.compile(Tied(), backend="eager")
        s.bind_module()
        names = [x.name for x in s.slots]
        self.assertEqual(names, ["emb.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"])
        self.assertEqual(s.ignored, ["bn.num_batches_tracked"])
        self.assertEqual(sorted(s.slots[0].aliases), ["emb.weight", "head.weight"])


if __name__ == "__main__":
    unittest.main()
