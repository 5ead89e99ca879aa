"""Tests of `Metric.sync` and `kiln.metrics.sync`: several processes' states made one.

Two "ranks" run in two threads and exchange tensors through `FakeGroup`, whose `all_reduce`
and `all_gather` follow the contract in `kiln.metrics.sync` (and, like real collectives, wait
until every rank has called them). Each metric synced over two halves of the data must equal
one metric that saw all of it.
"""

from __future__ import annotations

import threading

import pytest
import torch

from kiln.metrics import (
    AUROC,
    F1,
    Accuracy,
    ConfusionMatrix,
    FunctionMetric,
    MeanSquaredError,
    Precision,
    R2Score,
)


class FakeGroup:
    """Collectives between threads: each call waits for every rank's tensor."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.barrier = threading.Barrier(world_size)
        self.slots: list[torch.Tensor | None] = [None] * world_size

    def _exchange(self, rank: int, tensor: torch.Tensor) -> list[torch.Tensor]:
        assert tensor.dtype == torch.float64  # the contract
        assert tensor.dim() == 1
        self.slots[rank] = tensor.clone()
        self.barrier.wait()
        everyone = [slot for slot in self.slots if slot is not None]
        self.barrier.wait()  # nobody overwrites a slot before all have read
        return everyone

    def functions(self, rank: int):
        def all_reduce(tensor: torch.Tensor) -> torch.Tensor:
            parts = self._exchange(rank, tensor)
            assert len({len(part) for part in parts}) == 1
            return torch.stack(parts).sum(0)

        def all_gather(tensor: torch.Tensor) -> torch.Tensor:
            return torch.cat(self._exchange(rank, tensor))

        return all_reduce, all_gather


def sync_all(metrics: list) -> None:
    """Sync every metric as the ranks of one group would, concurrently."""
    group = FakeGroup(len(metrics))
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        try:
            metrics[rank].sync(*group.functions(rank))
        except BaseException as error:  # reported in the main thread
            errors.append(error)
            group.barrier.abort()

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(len(metrics))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    if errors:
        raise errors[0]


GEN = torch.Generator().manual_seed(3)
LOGITS = torch.randn(30, 4, generator=GEN)
LABELS = torch.arange(30) % 4
PROBS = torch.rand(30, generator=GEN)
BINARY = torch.randint(0, 2, (30,), generator=GEN)
VALUES = torch.randn(30, 2, generator=GEN)
TARGETS = torch.randn(30, 2, generator=GEN)

CASES = {
    "accuracy": (lambda: Accuracy(), LOGITS, LABELS),
    "top2": (lambda: Accuracy(top_k=2), LOGITS, LABELS),
    "f1": (lambda: F1(), LOGITS, LABELS),
    "precision_binary": (lambda: Precision(average="binary"), PROBS, BINARY),
    "auroc": (lambda: AUROC(), LOGITS, LABELS),
    "auroc_binary": (lambda: AUROC(), PROBS, BINARY),
    "confusion": (lambda: ConfusionMatrix(), LOGITS, LABELS),
    "mse": (lambda: MeanSquaredError(), VALUES, TARGETS),
    "r2": (lambda: R2Score(), VALUES, TARGETS),
    "function": (lambda: FunctionMetric(lambda o, t: (o - t).mean(), "d"), VALUES, TARGETS),
}


@pytest.mark.parametrize("case", list(CASES))
def test_two_halves_synced_equal_one_metric_over_all(case):
    """After sync, each rank's value is the value over both ranks' data."""
    make, output, target = CASES[case]
    whole = make()
    whole.update(output, target)
    ranks = [make(), make()]
    ranks[0].update(output[:11], target[:11])
    ranks[0].update(output[11:13], target[11:13])
    ranks[1].update(output[13:], target[13:])
    sync_all(ranks)
    # Counts are exact; float32 batch sums round differently when the batches differ.
    tolerance = 1e-6 if case in ("mse", "function") else 1e-12
    for rank in ranks:
        torch.testing.assert_close(rank.compute(), whole.compute(), rtol=tolerance, atol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_a_rank_without_samples_takes_part(case):
    """A rank that saw nothing still joins the collectives and gets everyone's value."""
    make, output, target = CASES[case]
    whole = make()
    whole.update(output, target)
    ranks = [make(), make()]
    ranks[0].update(output, target)
    sync_all(ranks)
    for rank in ranks:
        torch.testing.assert_close(rank.compute(), whole.compute(), rtol=1e-12, atol=1e-12)


def test_no_rank_with_samples():
    """When no rank saw anything, compute still says so."""
    ranks = [F1(), F1()]
    sync_all(ranks)
    with pytest.raises(ValueError, match=r"has seen no samples"):
        ranks[0].compute()
    aurocs = [AUROC(), AUROC()]
    sync_all(aurocs)
    with pytest.raises(ValueError, match=r"has seen no samples"):
        aurocs[1].compute()


def test_sync_after_restore_from_checkpoint():
    """Sums restored from a checkpoint (not yet moved) are synced too."""
    first = Accuracy()
    first.update(LOGITS[:10], LABELS[:10])
    restored = Accuracy()
    restored.load_state_dict(first.state_dict())
    other = Accuracy()
    other.update(LOGITS[10:], LABELS[10:])
    sync_all([restored, other])
    whole = Accuracy()
    whole.update(LOGITS, LABELS)
    torch.testing.assert_close(restored.compute(), whole.compute())


def test_sync_twice_raises():
    """A second sync in one pass would count every sample again: ValueError."""
    metric = F1()
    metric.update(LOGITS, LABELS)
    same = lambda tensor: tensor  # noqa: E731 - one rank
    metric.sync(same, same)
    with pytest.raises(ValueError, match=r"'f1' already holds the state of all processes"):
        metric.sync(same, same)
    metric.reset()
    metric.update(LOGITS, LABELS)
    metric.sync(same, same)  # a new pass may sync again


def test_ranks_with_different_class_counts():
    """Ranks whose outputs have different widths raise ValueError instead of mixing them."""
    ranks = [F1(), F1()]
    ranks[0].update(LOGITS, LABELS)
    ranks[1].update(LOGITS[:, :3], LABELS % 3)
    with pytest.raises(ValueError, match=r"The ranks saw sums of different widths \[16, 25\]"):
        sync_all(ranks)
