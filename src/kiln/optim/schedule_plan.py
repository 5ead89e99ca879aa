"""Planning the learning rate of any schedule `LRScheduler` takes, without training.

What lives here: `plan_schedule`, which picks the plan for a kind of schedule, the batch sizes of
one epoch, and the plans of an `EpochFunction` and of a torch scheduler factory (run on a
stand-in optimizer). What does not: the plan of a chain of kiln curves (`ScheduleChain.plan`),
and drawing (`optim/schedule_plot.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler as TorchScheduler
from torch.optim.lr_scheduler import ReduceLROnPlateau

from kiln.optim.schedule_chain import Plan, ScheduleChain
from kiln.optim.schedules import EpochFunction, check_lr
from kiln.options import whole_number


def plan_schedule(
    schedule: Any,
    interval: str,
    epochs: int,
    samples_per_epoch: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
) -> Plan:
    """Compute the learning rate of each epoch (or optimizer step) of `schedule` from its start.

    Args:
        schedule: A `ScheduleChain`, an `EpochFunction` or a factory `fn(optimizer)` of a torch
            scheduler that depends on the step count alone.
        interval: `"epoch"` or `"step"`: what one step of the plan is.
        epochs: How many epochs to plan.
        samples_per_epoch: Training samples in an epoch: needed by curves in samples and by
            `interval="step"`.
        batch_size: Samples per batch, for `interval="step"` (the last batch may be short).
        lr: The optimizer's starting rate, when the schedule starts from it.

    Raises:
        ValueError: If a number the plan needs is missing, or the schedule depends on values
            only training gives (`ReduceLROnPlateau`, a torch scheduler instance).

    Example:
        >>> from kiln.optim import ConstantSchedule, ScheduleChain
        >>> from kiln.optim.schedule_plan import plan_schedule
        >>> chain = ScheduleChain(ConstantSchedule(0.1, samples=10))
        >>> plan_schedule(chain, "step", 1, samples_per_epoch=12, batch_size=4)
        Plan(lrs=[0.1, 0.1, 0.1], ends=[3])
    """
    if whole_number(epochs) is None or epochs < 1:
        raise ValueError(
            f"LRScheduler.plan: `epochs` must be a positive whole number; received {epochs!r}."
        )
    epochs = int(epochs)
    sizes = epoch_batches(interval, samples_per_epoch, batch_size)
    steps = epochs * len(sizes)
    if isinstance(schedule, ScheduleChain):
        if samples_per_epoch is None and any(c.unit == "samples" for c in schedule.schedules):
            raise ValueError(
                "This schedule counts samples, so its plan needs `samples_per_epoch=`."
            )
        return schedule.plan(steps, sizes, lr=lr, interval=interval)
    if isinstance(schedule, TorchScheduler):
        raise ValueError(
            "LRScheduler.plan cannot run a scheduler instance without changing it; pass a "
            "factory `fn(optimizer) -> scheduler` to plan it."
        )
    if lr is None:
        raise ValueError(
            "LRScheduler.plan starts from the optimizer's learning rate; pass `lr=` (or plan "
            "after `fit` has run)."
        )
    start = check_lr("LRScheduler.plan", "lr", lr)
    if isinstance(schedule, EpochFunction):
        return plan_function(schedule, steps, start)
    return plan_factory(schedule, steps, start)


def epoch_batches(
    interval: str, samples_per_epoch: int | None, batch_size: int | None
) -> list[int]:
    """Return the samples of each step of one epoch: one step, or one per batch.

    Args:
        interval: `"epoch"` (one step an epoch) or `"step"` (one step a batch).
        samples_per_epoch: Training samples in an epoch (0 when unknown, for `"epoch"`).
        batch_size: Samples per batch; the last batch holds what remains.

    Raises:
        ValueError: If `interval="step"` and either number is missing or not positive.

    Example:
        >>> from kiln.optim.schedule_plan import epoch_batches
        >>> epoch_batches("step", 10, 4), epoch_batches("epoch", 10, None)
        ([4, 4, 2], [10])
    """
    if interval == "epoch":
        return [samples_per_epoch or 0]
    if not samples_per_epoch or not batch_size or samples_per_epoch < 1 or batch_size < 1:
        raise ValueError(
            "A plan per optimizer step needs `samples_per_epoch=` and `batch_size=` "
            f"(positive); received {samples_per_epoch!r} and {batch_size!r}."
        )
    full, rest = divmod(samples_per_epoch, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


def plan_function(function: EpochFunction, steps: int, start: float) -> Plan:
    """Plan a function `fn(epoch) -> lr`: epoch 0 at `start`, epoch `e + 1` at `fn(e)`.

    Example:
        >>> from kiln.optim import EpochFunction
        >>> from kiln.optim.schedule_plan import plan_function
        >>> plan_function(EpochFunction(lambda epoch: 0.5 ** (epoch + 1)), 3, 1.0).lrs
        [1.0, 0.5, 0.25]
    """
    return Plan(lrs=[start] + [function(epoch) for epoch in range(steps - 1)])


def plan_factory(factory: Callable[[torch.optim.Optimizer], Any], steps: int, start: float) -> Plan:
    """Plan a torch scheduler factory by stepping its scheduler on a stand-in optimizer.

    Raises:
        ValueError: If the factory builds no scheduler, or one that needs monitored values.

    Example:
        >>> from torch.optim.lr_scheduler import StepLR
        >>> from kiln.optim.schedule_plan import plan_factory
        >>> plan_factory(lambda opt: StepLR(opt, step_size=2, gamma=0.5), 4, 1.0).lrs
        [1.0, 1.0, 0.5, 0.5]
    """
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=start)
    built = factory(optimizer)
    if not isinstance(built, TorchScheduler) or isinstance(built, ReduceLROnPlateau):
        raise ValueError(
            "LRScheduler.plan needs a scheduler that depends on the step count alone; "
            f"the factory returned {type(built).__name__}."
        )
    plan = Plan()
    for _ in range(steps):
        plan.lrs.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.step()  # a no-op without gradients; torch expects it before the scheduler
        built.step()
    return plan
