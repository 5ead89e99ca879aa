"""Tests of `kiln.metrics.buffered`: counting kept batches together changes no value."""

from __future__ import annotations

import pytest
import torch

from kiln.metrics import F1, Accuracy, ConfusionMatrix
from kiln.metrics.buffered import BufferedMetric

GEN = torch.Generator().manual_seed(6)
BATCHES = [
    (torch.randn(size, 5, generator=GEN), torch.randint(0, 5, (size,), generator=GEN))
    for size in [7, 16, 16, 3, 16, 9, 16, 1]
]


def one_at_a_time(cls):
    metric = cls()
    metric.buffer_batches = 1
    return metric


@pytest.mark.parametrize("cls", [Accuracy, F1, ConfusionMatrix])
@pytest.mark.parametrize("limit", [2, 3, 32])
def test_grouping_changes_no_value(cls, limit):
    """Counting batches in groups gives the value of counting each alone, bitwise."""
    alone, grouped = one_at_a_time(cls), cls()
    grouped.buffer_batches = limit
    for output, target in BATCHES:
        alone.update(output, target)
        grouped.update(output, target)
    assert torch.equal(grouped.compute(), alone.compute())


def test_batches_are_kept_then_counted():
    """The first batch is counted at once; later ones wait for the limit or a read."""
    metric = Accuracy()
    metric.buffer_batches = 3
    for output, target in BATCHES[:3]:
        metric.update(output, target)
    assert len(metric._outputs) == 2
    metric.update(*BATCHES[3])
    assert metric._outputs == []  # the limit counted them
    metric.update(*BATCHES[4])
    metric.state_dict()
    assert metric._outputs == []  # a checkpoint counts them first


def test_element_limit():
    """Batches holding many elements are counted without waiting for the batch limit."""
    metric = F1()
    metric.buffer_elements = 20
    metric.update(*BATCHES[0])
    metric.update(*BATCHES[1])  # 80 elements
    assert metric._outputs == []


def test_batches_of_other_shapes_are_counted_apart():
    """Sequence outputs of changing lengths cannot be concatenated: counted separately."""
    short = (torch.randn(2, 3, 4, generator=GEN), torch.randint(0, 3, (2, 4), generator=GEN))
    long = (torch.randn(2, 3, 6, generator=GEN), torch.randint(0, 3, (2, 6), generator=GEN))
    grouped, alone = Accuracy(), one_at_a_time(Accuracy)
    for batch in (short, short, long, short):
        grouped.update(*batch)
        alone.update(*batch)
    assert torch.equal(grouped.compute(), alone.compute())


def test_kept_evaluation_batches_count_outside_inference_mode():
    """Batches kept in inference mode are counted when the value is read outside it."""
    metric = F1()
    with torch.inference_mode():
        for output, target in BATCHES[:3]:
            metric.update(output, target)
    alone = one_at_a_time(F1)
    for output, target in BATCHES[:3]:
        alone.update(output, target)
    assert torch.equal(metric.compute(), alone.compute())


def test_subclass_must_implement_check_and_update():
    """A subclass without `_check` or `_update` raises NotImplementedError naming itself."""

    class Bare(BufferedMetric):
        pass

    with pytest.raises(NotImplementedError, match=r"Bare must implement `_check`"):
        Bare("bare").update(torch.zeros(1), torch.zeros(1))

    class Checked(BufferedMetric):
        def _check(self, output, target):
            pass

    with pytest.raises(NotImplementedError, match=r"Checked must implement `_update`"):
        Checked("checked").update(torch.zeros(1), torch.zeros(1))


def test_bad_later_batch_is_rejected_when_given():
    """Shape errors of a kept batch are raised at its update, not when it is counted."""
    metric = Accuracy()
    metric.update(*BATCHES[0])
    with pytest.raises(ValueError, match=r"need one label per sample"):
        metric.update(BATCHES[1][0], BATCHES[1][1].view(-1, 1))
