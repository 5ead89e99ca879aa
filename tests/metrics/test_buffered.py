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
    """Kept batches are counted before one more would take them past `buffer_elements`."""
    metric = F1()
    metric.buffer_elements = 100
    metric.update(*BATCHES[0])  # the first batch of a pass: counted at once (7 samples)
    metric.update(*BATCHES[1])  # 80 elements: kept
    assert len(metric._outputs) == 1
    assert metric._count == 7
    metric.update(*BATCHES[2])  # 80 more would make 160: the kept batch is counted first
    assert len(metric._outputs) == 1
    assert metric._count == 7 + 16


class CountingChecks(Accuracy):
    """Accuracy that counts its calls of `_check`."""

    checks = 0

    def _check(self, output, target):
        self.checks += 1
        super()._check(output, target)


def test_a_batch_of_the_last_layout_is_not_checked_again():
    """Only a batch whose shapes or dtypes differ from the last one's is checked."""
    metric = CountingChecks()
    for output, target in BATCHES:  # sizes 7, 16, 16, 3, 16, 9, 16, 1
        metric.update(output, target)
    assert metric.checks == 7  # the second 16 follows a 16
    metric.update(BATCHES[0][0].double(), BATCHES[0][1])  # another dtype
    assert metric.checks == 8
    metric.reset()
    metric.update(*BATCHES[7])  # a new pass checks its first batch
    assert metric.checks == 9


def test_loading_a_state_drops_kept_batches_and_checks_again():
    """`load_state_dict` replaces kept batches too; the next batch is checked against it."""
    saved = F1()
    saved.update(*BATCHES[0])
    metric = F1()
    for output, target in BATCHES[:3]:
        metric.update(output, target)
    metric.load_state_dict(saved.state_dict())
    assert metric._outputs == []
    assert torch.equal(metric.compute(), saved.compute())

    three = F1()
    three.update(torch.randn(4, 3, generator=GEN), torch.tensor([0, 1, 2, 0]))
    metric.load_state_dict(three.state_dict())
    with pytest.raises(ValueError, match=r"earlier batches of the pass were multiclass with 3"):
        metric.update(*BATCHES[1])  # the layout this metric saw last, but not 3 classes


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
