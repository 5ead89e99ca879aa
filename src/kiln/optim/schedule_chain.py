"""`ScheduleChain`: learning-rate curves run one after another, and the planned curve.

A chain is a list of curves run in order: after each epoch (or step), only the first curve
that has not finished advances. The chain keeps its position apart from any optimizer:
`advance(current_lr, ...)` returns the next learning rate and whether a curve just ended, so the
same code runs a training and draws its plan. A curve that follows another never applies its own
starting value: the step after the previous curve ends runs at that curve's final rate, and the
next step is the new curve's first.

Compatibility: QuNet's list of schedulers, with the same hand-over between curves.

What lives here: the chain, its state for resuming, and `plan`. What does not: the curves
(`optim/schedules.py`), applying the rate to an optimizer (`kiln.callbacks.LRScheduler`), and
drawing (`optim/schedule_plot.py`).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kiln.optim.schedules import Schedule, check_lr
from kiln.options import whole_number


@dataclass
class Plan:
    """A planned learning-rate curve: the rate during each step, and where each curve ends.

    Attributes:
        lrs: The learning rate used during step `i` (an epoch or an optimizer step).
        ends: For each curve that ended, the number of steps done when it ended.

    Example:
        >>> from kiln.optim import ConstantSchedule, ScheduleChain
        >>> ScheduleChain([ConstantSchedule(0.1, epochs=2)]).plan(3)
        Plan(lrs=[0.1, 0.1, 0.1], ends=[2])
    """

    lrs: list[float] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)


def _check_schedule(schedule: Any) -> Schedule:
    if not isinstance(schedule, Schedule):
        raise TypeError(
            "A schedule chain holds kiln schedules (WarmupCosine, LinearSchedule, "
            f"ExponentialSchedule, ConstantSchedule); received {type(schedule).__name__}."
        )
    return schedule


class ScheduleChain:
    """Learning-rate curves run one after another, with the position of the run in them.

    Args:
        schedules: A curve or a list of curves, run in order.

    Attributes:
        index: The curve now running (`len(schedules)` once all have ended).
        done: The epochs or samples it has run.

    Example:
        >>> from kiln.optim import ConstantSchedule, ExponentialSchedule, ScheduleChain
        >>> chain = ScheduleChain(ConstantSchedule(1e-3, epochs=1))
        >>> chain.add(ExponentialSchedule(1e-3, 1e-5, epochs=2))
        >>> [f"{lr:.0e}" for lr in chain.plan(4).lrs]
        ['1e-03', '1e-03', '1e-04', '1e-05']
    """

    def __init__(self, schedules: Schedule | Iterable[Schedule] = ()) -> None:
        self._schedules: list[Schedule] = []
        self.index = 0
        self.done = 0
        self.started = False
        self._lr1: float | None = None  # the running curve's ends, once known
        self._lr2: float | None = None
        items: Any = [schedules] if isinstance(schedules, Schedule) else schedules
        if not isinstance(items, Iterable):
            _check_schedule(items)  # raises the TypeError that names what was received
        for schedule in items:
            self.add(schedule)

    @property
    def schedules(self) -> tuple[Schedule, ...]:
        """The curves, in the order they run."""
        return tuple(self._schedules)

    @property
    def finished(self) -> bool:
        """Whether every curve has ended (the learning rate no longer changes)."""
        return self.index >= len(self._schedules)

    def set(self, schedule: Schedule) -> None:
        """Replace the curves by `schedule`, and start from its beginning."""
        self.clear()
        self.add(schedule)

    def add(self, schedule: Schedule) -> None:
        """Append `schedule`: it runs when the curves before it have ended."""
        self._schedules.append(_check_schedule(schedule))

    def clear(self) -> None:
        """Remove every curve: the learning rate stays where it is."""
        self._schedules.clear()
        self.restart()

    def stop(self) -> None:
        """End every curve now: the learning rate stays where it is."""
        self.index, self.done, self._lr1, self._lr2 = len(self._schedules), 0, None, None

    def restart(self) -> None:
        """Go back to the beginning of the first curve."""
        self.index, self.done, self._lr1, self._lr2 = 0, 0, None, None
        self.started = False

    def start_lr(self) -> float | None:
        """The learning rate a run starts at: the first curve's `lr1` (`None`: unchanged)."""
        if self.started or not self._schedules:
            return None
        return self._schedules[0].lr1

    def advance(self, current_lr: float, epochs: int, samples: int) -> tuple[float | None, bool]:
        """Count `epochs` and `samples` more of training; return the new rate and an end flag.

        Args:
            current_lr: The optimizer's learning rate now (for an `lr1` or `lr2` of `None`).
            epochs: Epochs completed since the last call (1 per epoch; 0 per optimizer step).
            samples: Training samples seen since the last call.

        Returns:
            The learning rate for what comes next (`None` once every curve has ended), and
            whether the running curve ended at this call.
        """
        self.started = True
        if self.finished:
            return None, False
        schedule = self._schedules[self.index]
        if self._lr1 is None:
            self._lr1 = current_lr if schedule.lr1 is None else schedule.lr1
        if self._lr2 is None:
            self._lr2 = current_lr if schedule.lr2 is None else schedule.lr2
        lr1, lr2 = self._lr1, self._lr2
        self.done += epochs if schedule.unit == "epochs" else samples
        if self.done >= schedule.length:
            self.index, self.done, self._lr1, self._lr2 = self.index + 1, 0, None, None
            return schedule.final(lr1, lr2), True
        return schedule.value(self.done, lr1, lr2), False

    def plan(
        self,
        steps: int,
        samples: int | Sequence[int] = 0,
        lr: float | None = None,
        interval: str = "epoch",
    ) -> Plan:
        """Compute the learning rate of each of `steps` steps from the start, without training.

        Args:
            steps: How many epochs (or optimizer steps, with `interval="step"`) to plan.
            samples: The training samples of each step: a number, or a sequence that repeats
                (the batch sizes of one epoch, for instance).
            lr: The optimizer's learning rate at the start; needed when the first curve's
                `lr1` is `None`.
            interval: `"epoch"`: each step is an epoch; `"step"`: each step is an optimizer
                step, which counts samples only.

        Raises:
            ValueError: If `steps` is not a positive whole number, or no starting learning
                rate is known.
        """
        if whole_number(steps) is None or steps < 1:
            raise ValueError(f"`steps` must be a positive whole number; received {steps!r}.")
        steps = int(steps)
        chain = copy.deepcopy(self)
        chain.restart()
        current = chain.start_lr()
        if current is None:
            if lr is None:
                raise ValueError(
                    "The first schedule starts at the optimizer's learning rate (lr1=None), so "
                    "planning needs it: pass `lr=` (the rate the optimizer starts with)."
                )
            current = check_lr("plan", "lr", lr)
        single = whole_number(samples)
        sizes = itertools.cycle([single] if single is not None else list(samples))  # type: ignore[arg-type]
        epochs = 1 if interval == "epoch" else 0
        plan = Plan()
        for step in range(steps):
            plan.lrs.append(current)
            new, ended = chain.advance(current, epochs, next(sizes))
            current = current if new is None else new
            if ended:
                plan.ends.append(step + 1)
        return plan

    def state_dict(self) -> dict[str, Any]:
        """Return the position in the curves: plain data for a checkpoint."""
        return {
            "count": len(self._schedules),
            "index": self.index,
            "done": self.done,
            "started": self.started,
            "lr1": self._lr1,
            "lr2": self._lr2,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the position saved by `state_dict`.

        Raises:
            ValueError: If the chain had another number of curves when it was saved.
        """
        if int(state["count"]) != len(self._schedules):
            raise ValueError(
                f"The saved learning-rate schedule had {state['count']} curve(s), but this one "
                f"has {len(self._schedules)}. Resume with the same schedules as the saved run."
            )
        self.index, self.done = int(state["index"]), int(state["done"])
        self.started = bool(state["started"])
        self._lr1, self._lr2 = state["lr1"], state["lr2"]

    def __len__(self) -> int:
        return len(self._schedules)

    def __repr__(self) -> str:
        return f"ScheduleChain({self._schedules!r}, index={self.index}, done={self.done})"
