"""Tests of `kiln.metrics.joined`: metrics keeping the same batches join them once."""

from __future__ import annotations

import torch

from kiln.loop.step_methods import StepOutput
from kiln.loop.tracking import PassTracker
from kiln.metrics import F1, Accuracy, ConfusionMatrix
from kiln.metrics.joined import forget, join, predicted_classes

GEN = torch.Generator().manual_seed(11)


class Scores(torch.Tensor):
    """Scores that count every arg-max taken of them (or of tensors joined from them)."""

    argmaxes = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.argmax, torch.Tensor.max):  # the CPU's arg-max is `max`
            cls.argmaxes += 1
        return super().__torch_function__(func, types, args, kwargs or {})


def batches(count: int, size: int = 8, classes: int = 4):
    return [
        (
            torch.randn(size, classes, generator=GEN),
            torch.randint(0, classes, (size,), generator=GEN),
        )
        for _ in range(count)
    ]


def test_join_is_shared_only_for_the_very_same_tensors():
    """The same tensors give the same join; equal copies or another order do not."""
    (a, x), (b, y) = batches(2)
    first = join([a, b], [x, y])
    assert join([a, b], [x, y]) is first
    assert torch.equal(first.output, torch.cat([a, b]))
    assert join([a.clone(), b], [x, y]) is not first
    again = join([a, b], [x, y])
    assert join([b, a], [y, x]) is not again
    assert join([a, b], [y, x]) is not join([a, b], [x, y])


def test_predicted_classes_is_taken_once_per_join():
    """The arg-max of the last joined output is kept; of any other tensor, taken anew."""
    (a, x), (b, y) = batches(2)
    joined = join([a, b], [x, y])
    predicted = predicted_classes(joined.output)
    assert predicted_classes(joined.output) is predicted
    assert torch.equal(predicted, torch.cat([a, b]).argmax(1))
    assert predicted_classes(a) is not predicted_classes(a)
    forget()
    assert predicted_classes(joined.output) is not predicted


def test_predicted_classes_is_argmax_on_ties_nans_and_infinities():
    """The first of the largest values, a NaN counting as the largest, in every float dtype."""
    scores = torch.randn(300, 6, generator=GEN).round()  # many ties
    scores[torch.rand(300, 6, generator=GEN) < 0.05] = float("nan")
    scores[torch.rand(300, 6, generator=GEN) < 0.1] = float("inf")
    scores[torch.rand(300, 6, generator=GEN) < 0.1] = float("-inf")
    scores[torch.rand(300, 6, generator=GEN) < 0.2] = -0.0
    scores[:3] = float("-inf")  # rows with nothing above minus infinity
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        rows = scores.to(dtype)
        assert torch.equal(predicted_classes(rows), rows.argmax(1))
        joined = join([rows[:100], rows[100:]], [torch.zeros(100), torch.zeros(200)])
        assert torch.equal(predicted_classes(joined.output), rows.argmax(1))


def test_accuracy_and_f1_take_one_arg_max_per_count():
    """In one tracker, accuracy and F1 share the arg-max; their values are unchanged."""
    data = batches(5)
    Scores.argmaxes = 0
    tracker = PassTracker([Accuracy(), F1()])
    for output, target in data:
        scores = output.as_subclass(Scores)
        tracker.update(StepOutput(torch.tensor(1.0), len(target), scores, target))
    values = tracker.compute()
    # The first batch is counted at once, the four others together when the value is read.
    assert Scores.argmaxes == 2

    alone = PassTracker([Accuracy(), F1()])
    for metric in alone.metrics:
        metric.buffer_batches = 1
    for output, target in data:
        alone.update(StepOutput(torch.tensor(1.0), len(target), output, target))
    assert values == alone.compute()


def test_metrics_counting_at_other_steps_join_on_their_own():
    """A metric that keeps fewer batches counts its own joins, to the same value."""
    data = batches(7)
    grouped, often, alone = ConfusionMatrix(), ConfusionMatrix(), ConfusionMatrix()
    often.buffer_batches, alone.buffer_batches = 2, 1
    for output, target in data:
        for metric in (grouped, often, alone):
            metric.update(output, target)
    assert torch.equal(grouped.compute(), alone.compute())
    assert torch.equal(often.compute(), alone.compute())
