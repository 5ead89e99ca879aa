"""`OptimizerStepper` with several ranks, in one process: a stand-in for `Replicas` records
its calls.

When a group's batches keep their gradients on each rank, when they are averaged by hand, the
agreed skip, and the refused mid-group checkpoint; and that one process goes the usual way.
The real thing, on two gloo ranks, is `test_ddp_accumulate.py`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from kiln import TrainState
from kiln.distributed.context import DistributedContext
from kiln.distributed.replicas import Replicas
from kiln.loop.optimizer_step import OptimizerStepper
from kiln.loop.step_methods import StepOutput
from kiln.options import LoopOptions


class FakeReplicas:
    """Two ranks as `OptimizerStepper` sees them: records which batches ran without reducing."""

    enabled = True

    def __init__(self, sharded: bool = False, others_finite: bool = True) -> None:
        self.sharded, self.others_finite = sharded, others_finite
        self.kept: list[int] = []  # batch indices run inside `no_sync()`
        self.averaged = 0
        self.batch = -1

    def keeps_gradients(self, sized: bool, skips: bool) -> bool:
        return Replicas.keeps_gradients(self, sized, skips)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        self.kept.append(self.batch)
        yield

    def average_gradients(self, params: Any) -> None:
        self.averaged += 1

    def all_finite(self, finite: bool) -> bool:
        return finite and self.others_finite


def train(
    stepper: OptimizerStepper,
    replicas: FakeReplicas | None,
    num_batches: int,
    sized: bool = True,
    nan_at: tuple[int, ...] = (),
    upto: int | None = None,
) -> list[bool]:
    """Run the trainer's loop over `num_batches` (the first `upto`); return where it stepped."""
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    stepper.begin_pass(optimizer, num_batches if sized else None, first=0)
    state, stepped = TrainState(), []
    for batch_idx in range(num_batches if upto is None else upto):
        state.batch_idx = batch_idx
        if replicas is not None:
            replicas.batch = batch_idx
        with stepper.gradient_sync(batch_idx):
            loss = model(torch.ones(1, 2)).sum() * (float("nan") if batch_idx in nan_at else 1)
            stepper.backward(StepOutput(loss, 1), state)
        ends = stepper.ends_group(batch_idx)
        stepped.append(ends and stepper.step(None))
    if not sized:
        stepped.append(stepper.finish_pass(None))
    return stepped


def make(replicas: Any, accumulate: int = 2, nonfinite: str = "raise") -> OptimizerStepper:
    options = LoopOptions(accumulate=accumulate, nonfinite=nonfinite)
    return OptimizerStepper(options, None, torch.device("cpu"), replicas)


def test_a_group_keeps_its_gradients_until_its_last_batch_reduces_them() -> None:
    replicas = FakeReplicas()
    assert train(make(replicas, accumulate=3), replicas, 5) == [False, False, True, False, True]
    assert replicas.kept == [0, 1, 3]  # not 2 nor 4: the ends of groups (4: a short last one)
    assert replicas.averaged == 0  # every group's last backward reduced it


def test_a_group_whose_last_batch_is_skipped_is_averaged_by_hand() -> None:
    replicas = FakeReplicas()
    stepper = make(replicas, nonfinite="skip")
    assert train(stepper, replicas, 4, nan_at=(1, 2)) == [False, True, False, True]
    assert replicas.averaged == 1  # batch 1 ended a group unreduced; batch 3 reduced 2's none
    assert stepper.skipped == 2


def test_data_without_a_length_averages_its_last_group_by_hand() -> None:
    replicas = FakeReplicas()
    assert train(make(replicas, accumulate=2), replicas, 3, sized=False)[-1] is True
    assert replicas.kept == [0, 2]  # the end of the data is known only after it
    assert replicas.averaged == 1


def test_fsdp_keeps_gradients_only_when_every_group_ends_in_a_backward() -> None:
    """FSDP holds kept gradients itself: no averaging by hand, so no group may end without."""
    sharded = FakeReplicas(sharded=True)
    train(make(sharded), sharded, 3)
    assert sharded.kept == [0]
    unsized = FakeReplicas(sharded=True)
    train(make(unsized), unsized, 3, sized=False)
    skipping = FakeReplicas(sharded=True)
    train(make(skipping, nonfinite="skip"), skipping, 3)
    assert unsized.kept == skipping.kept == []  # every batch reduces, as without accumulation


def test_a_loss_not_finite_on_another_rank_skips_the_batch_here() -> None:
    replicas = FakeReplicas(others_finite=False)
    stepper = make(replicas, accumulate=1, nonfinite="skip")
    assert train(stepper, replicas, 2) == [False, False]  # nothing to step
    assert stepper.skipped == 2


def test_a_checkpoint_inside_a_group_whose_gradients_are_each_ranks_is_refused() -> None:
    replicas = FakeReplicas()
    stepper = make(replicas, accumulate=3)
    train(stepper, replicas, 6, upto=2)  # a group of 3 begun: 2 batches kept on each rank
    with pytest.raises(RuntimeError, match="inside a gradient accumulation group"):
        stepper.state_dict()
    stepper.step(None)
    assert stepper.state_dict()["grads"] is None


def test_one_process_runs_every_batch_as_usual() -> None:
    replicas = Replicas(DistributedContext(0, 1, 0, torch.device("cpu"), None))
    stepper = make(replicas, accumulate=2, nonfinite="skip")
    train(stepper, None, 3)
    assert stepper.gradient_sync(0) is stepper.gradient_sync(1)  # the same null context
    assert stepper._replicas is None
    assert not stepper._keeps
    assert not stepper._agree
