"""Tests of `kiln.metrics.base`: the `Metric` base class and `FunctionMetric`."""

from __future__ import annotations

import pytest
import torch

from kiln.metrics import FunctionMetric, Metric


def mean_error(output, target):
    return (output - target).mean()


class Count(Metric):
    """A metric that counts samples, for testing the base class."""

    def update(self, output, target):
        self._add(torch.tensor(float(len(output))), len(output))


def test_metric_update_not_implemented():
    """The base class's `update` raises NotImplementedError naming the subclass."""

    class Bare(Metric):
        pass

    with pytest.raises(NotImplementedError, match=r"Bare must implement `update`"):
        Bare("bare").update(torch.zeros(1), torch.zeros(1))


def test_metric_compute_before_update():
    """`compute` before any update raises ValueError naming the metric."""
    with pytest.raises(ValueError, match=r"The metric 'count' has seen no samples"):
        Count("count").compute()


def test_metric_compute_after_reset():
    """`reset` brings the metric back to having no value."""
    metric = Count("count")
    metric.update(torch.zeros(3), None)
    metric.reset()
    with pytest.raises(ValueError, match=r"has seen no samples"):
        metric.compute()


def test_metric_add_does_not_alias_input():
    """Accumulating does not modify the tensors passed to `_add`."""
    metric = Count("count")
    first = torch.tensor(2.0, dtype=torch.float64)
    metric._add(first, 2)
    metric._add(torch.tensor(4.0, dtype=torch.float64), 4)
    assert float(first) == 2.0
    assert float(metric.compute()) == 1.0


def test_metric_repr_and_defaults():
    """The repr names the class and the metric; the direction is unknown by default."""
    metric = Count("count")
    assert repr(metric) == "Count(name='count')"
    assert Metric.higher_is_better is None


def test_function_metric_weights_by_batch_size():
    """The epoch value weighs each batch's mean by the batch size."""
    metric = FunctionMetric(mean_error)
    metric.update(torch.zeros(1), torch.full((1,), 4.0))  # mean error -4 on 1 sample
    metric.update(torch.zeros(3), torch.zeros(3))  # mean error 0 on 3 samples
    assert float(metric.compute()) == pytest.approx(-1.0)  # not (-4 + 0) / 2


def test_function_metric_accepts_numbers():
    """A function may return a plain number instead of a tensor."""
    metric = FunctionMetric(lambda output, target: 0.25, name="const")
    metric.update(torch.zeros(2), torch.zeros(2))
    metric.update(torch.zeros(6), torch.zeros(6))
    assert float(metric.compute()) == pytest.approx(0.25)


def test_function_metric_without_target_counts_one():
    """Without a target, a batch counts as one sample."""
    metric = FunctionMetric(lambda output, target: output.sum(), name="total")
    metric.update(torch.ones(3), None)
    metric.update(torch.ones(5), None)
    assert float(metric.compute()) == pytest.approx(4.0)


def test_function_metric_detaches():
    """Values with a graph are accumulated without it."""
    weight = torch.ones(2, requires_grad=True)
    metric = FunctionMetric(lambda output, target: (output * weight).sum(), name="graph")
    metric.update(torch.ones(2), torch.ones(2))
    assert not metric.compute().requires_grad


@pytest.mark.parametrize(
    ("fn", "name", "expected"),
    [
        (mean_error, None, "mean_error"),
        (mean_error, "err", "err"),
        (lambda output, target: 0.0, None, "<lambda>"),
    ],
)
def test_function_metric_name(fn, name, expected):
    """The name is given, or the function's `__name__`."""
    assert FunctionMetric(fn, name).name == expected
