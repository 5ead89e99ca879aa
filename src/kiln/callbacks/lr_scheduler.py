"""`LRScheduler`: change the learning rate during training, by epoch or by optimizer step.

One callback takes three kinds of schedule: any `torch.optim.lr_scheduler` (an instance, or a
factory `fn(optimizer)` built when `fit` starts), kiln's curves run one after another
(`kiln.optim.WarmupCosine` and friends), and a function `fn(epoch) -> lr`
(`kiln.optim.EpochFunction`). `golden_ratio_decay` is a plateau decay, ready-made.

When it steps: per epoch, at `epoch_end`, after the trainer has logged the epoch's `lr`, so the
logged value is the one the epoch used. Per optimizer step, the optimizer steps a batch made
(none while it accumulates gradients, or when a mixed-precision step is skipped) are counted at
the start of the next batch, so the `lr` logged for an epoch is the one its last step used.
Either way no value is read from the device.

What lives here: the callback and the preset. What does not: the curves, their chain and plans
(`kiln.optim`).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch.optim.lr_scheduler import LRScheduler as TorchScheduler
from torch.optim.lr_scheduler import ReduceLROnPlateau

from kiln.callbacks.base import Callback
from kiln.optim.plateau import golden_ratio_plateau
from kiln.optim.schedule_chain import Plan, ScheduleChain
from kiln.optim.schedule_plan import epoch_batches, plan_schedule
from kiln.optim.schedule_plot import plot_plan
from kiln.optim.schedules import EpochFunction, Schedule

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kiln.trainer import Trainer

    Mode = Literal["min", "max"]

INTERVALS = ("epoch", "step")


def _set_lrs(optimizer: torch.optim.Optimizer, lrs: list[float]) -> None:
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr


class LRScheduler(Callback):
    """Change the learning rate during training, per epoch or per optimizer step.

    Args:
        schedule: One of: a `torch.optim.lr_scheduler` instance built on the trainer's
            optimizer; a factory `fn(optimizer) -> scheduler`, built when `fit` starts (use it
            when the trainer builds the optimizer, as with `optimizer="adam"`); a kiln curve
            (`WarmupCosine`, `LinearSchedule`, `ExponentialSchedule`, `ConstantSchedule`) or a
            list of them, run one after another; an `EpochFunction(fn)` of a function
            `fn(epoch) -> lr`; or `None`, to `set` one later.
        interval: `"epoch"`: step after each epoch; `"step"`: after each optimizer step.
        monitor: The logged value a `ReduceLROnPlateau` receives after each epoch.

    A chain of kiln curves sets the optimizer's learning rate to the first curve's `lr1` when
    `fit` starts. `set`, `add` and `clear` change the schedule between `fit` calls; `restart`
    goes back to the start; `plan` and `plot` show the curve before training. `ends` lists
    `[epoch, step, samples]` where each kiln curve ended.

    Example:
        >>> import torch
        >>> from kiln.callbacks.lr_scheduler import LRScheduler
        >>> from kiln.optim import ConstantSchedule, WarmupCosine
        >>> cosine = LRScheduler(WarmupCosine(1e-4, 1e-2, 1e-3, epochs=8, warmup=2))
        >>> cosine.add(ConstantSchedule(1e-3, epochs=2))
        >>> [f"{lr:.3g}" for lr in cosine.plan(4).lrs]
        ['0.0001', '0.00505', '0.01', '0.0094']
        >>> step_lr = LRScheduler(
        ...     lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, step_size=10))
    """

    def __init__(self, schedule: Any = None, interval: str = "epoch", monitor: str = "val_loss"):
        if interval not in INTERVALS:
            raise ValueError(
                f"LRScheduler: `interval` must be 'epoch' or 'step'; received {interval!r}."
            )
        if not isinstance(monitor, str):
            raise TypeError(
                f"LRScheduler: `monitor` must be a logged name such as 'val_loss'; received "
                f"{type(monitor).__name__}."
            )
        self.interval, self._monitor = interval, monitor
        self.ends: list[list[int]] = []
        self._trainer: Trainer | None = None
        self.set(schedule)

    @property
    def monitor(self) -> str | None:
        """The logged value a `ReduceLROnPlateau` steps with; `None` for other schedules."""
        return self._monitor if isinstance(self.scheduler, ReduceLROnPlateau) else None

    @property
    def schedule_ends(self) -> list[int]:
        """The epochs where a kiln curve ended (`TrainingPlot` draws a line at each)."""
        return [end[0] for end in self.ends]

    @property
    def empty(self) -> bool:
        """Whether no schedule is set: the learning rate is left as it is."""
        kinds = (self.function, self.scheduler, self._factory)
        return not self.chain.schedules and all(kind is None for kind in kinds)

    def set(self, schedule: Any) -> None:
        """Replace the schedule by `schedule` (any kind the constructor takes); start it afresh.

        A kiln curve's `lr1` is applied to the optimizer at once when the trainer is known,
        else when `fit` starts.
        """
        self.chain = ScheduleChain()
        self.function: EpochFunction | None = None
        self.scheduler: TorchScheduler | None = None
        self._factory: Callable[[torch.optim.Optimizer], Any] | None = None
        self._initial_state: dict[str, Any] | None = None  # the torch scheduler's, fresh
        self._loaded: dict[str, Any] | None = None  # saved state waiting for the factory
        self._initial_lrs: list[float] | None = None
        self._started, self._counted, self._seen, self._epoch_offset = False, 0, 0, 0
        if isinstance(schedule, (Schedule, list, tuple, ScheduleChain)):
            self.chain = (
                schedule if isinstance(schedule, ScheduleChain) else ScheduleChain(schedule)
            )
            for curve in self.chain.schedules:
                self._check_curve(curve)
        elif isinstance(schedule, EpochFunction):
            if self.interval == "step":
                raise ValueError(
                    "LRScheduler: an EpochFunction gives a learning rate per epoch, so it needs "
                    "interval='epoch'; received interval='step'."
                )
            self.function = schedule
        elif isinstance(schedule, TorchScheduler):
            self._check_torch(schedule)
            self.scheduler, self._initial_state = schedule, copy.deepcopy(schedule.state_dict())
        elif callable(schedule):
            self._factory = schedule
        elif schedule is not None:
            raise TypeError(
                "LRScheduler takes a torch.optim.lr_scheduler instance, a function "
                "`fn(optimizer) -> scheduler`, a kiln schedule or a list of them, or an "
                f"EpochFunction; received {type(schedule).__name__}."
            )
        if self._trainer is not None and self._trainer.optimizer is not None:
            self._start(self._trainer, self._trainer.optimizer)

    def add(self, schedule: Schedule) -> None:
        """Append a kiln curve to run after the others."""
        if self.scheduler is not None or self._factory is not None or self.function is not None:
            raise ValueError(
                "LRScheduler.add appends a kiln curve to a chain of kiln curves, but this "
                "schedule is a torch scheduler or a function. Use `set(...)` to replace it."
            )
        self.chain.add(schedule)
        self._check_curve(schedule)

    def clear(self) -> None:
        """Remove the schedule: the learning rate stays where it is (`clear_schedulers`)."""
        self.set(None)

    def _check_curve(self, curve: Schedule) -> None:
        if self.interval == "step" and curve.unit == "epochs":
            raise ValueError(
                f"LRScheduler(interval='step') counts samples, but {curve!r} is measured in "
                "epochs. Give its length in `samples=`, or use interval='epoch'."
            )

    def _check_torch(self, scheduler: TorchScheduler) -> None:
        if isinstance(scheduler, ReduceLROnPlateau) and self.interval == "step":
            raise ValueError(
                "LRScheduler: ReduceLROnPlateau steps with the monitored value of each epoch, "
                "so it needs interval='epoch'; received interval='step'."
            )

    def on_fit_start(self, trainer: Trainer) -> None:
        """Build the scheduler if needed, and set the starting rate unless the run resumes."""
        optimizer = trainer.optimizer
        if optimizer is None:
            raise ValueError(
                "LRScheduler changes the optimizer's learning rate, but this trainer has no "
                "optimizer. Create the trainer with one, e.g. `optimizer='adam'`."
            )
        self._trainer = trainer
        if self._factory is not None and (
            self.scheduler is None or self.scheduler.optimizer is not optimizer
        ):
            self._build(optimizer)
        if self.scheduler is not None and self.scheduler.optimizer is not optimizer:
            raise ValueError(
                "LRScheduler received a scheduler built on another optimizer than the trainer's. "
                "Pass a factory instead, `LRScheduler(lambda optimizer: StepLR(optimizer, 10))`, "
                "which is built on the trainer's optimizer when `fit` starts."
            )
        plateau = isinstance(self.scheduler, ReduceLROnPlateau)
        if plateau and self._monitor.startswith("val_") and trainer.state.val_data is None:
            raise ValueError(
                f"LRScheduler: ReduceLROnPlateau watches {self._monitor!r}, but `fit` has no "
                "validation data. Pass `val=` to fit, or monitor a training value such as "
                "monitor='loss'."
            )
        if not trainer.state.resumed and not self._started:
            self._start(trainer, optimizer)

    def _build(self, optimizer: torch.optim.Optimizer) -> None:
        """Build the factory's scheduler; with a saved state, load it and keep the resumed lrs."""
        groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        built = self._factory(optimizer) if self._factory is not None else None
        if not isinstance(built, TorchScheduler):
            raise TypeError(
                "LRScheduler: the factory must return a torch.optim.lr_scheduler built on the "
                f"optimizer it receives; it returned {type(built).__name__}. For a function "
                "`fn(epoch) -> lr`, pass `kiln.optim.EpochFunction(fn)`."
            )
        self._check_torch(built)
        self.scheduler, self._initial_state = built, copy.deepcopy(built.state_dict())
        if self._loaded is not None:
            # Building moved the rates to the schedule's first value; the resumed optimizer
            # already holds the right ones.
            built.load_state_dict(self._loaded)
            self._loaded = None
            for group, saved in zip(optimizer.param_groups, groups, strict=True):
                group.update(saved)

    def _start(
        self, trainer: Trainer, optimizer: torch.optim.Optimizer, lrs: list[float] | None = None
    ) -> None:
        """Put the optimizer at the schedule's starting rates; count from here."""
        start = self.chain.start_lr()
        if lrs is not None:
            _set_lrs(optimizer, lrs)
        elif start is not None:
            _set_lrs(optimizer, [start] * len(optimizer.param_groups))
        self._initial_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        state = trainer.state
        self._epoch_offset, self._seen, self._counted = state.epoch, state.samples, state.step
        self._started = False

    def on_train_batch_start(self, trainer: Trainer) -> None:
        """Per optimizer step: step once for each optimizer step taken since the last batch."""
        if self.interval == "step":
            while self._counted < trainer.state.step:  # 0 or 1 times, or more after a pass end
                self._counted += 1
                self._step(trainer, epochs=0)

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Per epoch: step, now that the epoch's `lr` and monitored value are logged."""
        # Not in an epoch that `restart` ended: the next epoch runs at the starting rate.
        if self.interval == "epoch" and trainer.state.epoch != self._epoch_offset:
            self._step(trainer, epochs=1)

    def _step(self, trainer: Trainer, epochs: int) -> None:
        optimizer, state = trainer.optimizer, trainer.state
        if optimizer is None:  # checked at fit start; tells the type checker
            return
        self._started = True
        if isinstance(self.scheduler, ReduceLROnPlateau):
            value = self._monitored(trainer)
            if value is not None:
                self.scheduler.step(value)
        elif self.scheduler is not None:
            self.scheduler.step()
        elif self.function is not None:
            lr = self.function(state.epoch - 1 - self._epoch_offset)
            _set_lrs(optimizer, [lr] * len(optimizer.param_groups))
        else:
            samples, self._seen = state.samples - self._seen, state.samples
            new, ended = self.chain.advance(float(optimizer.param_groups[0]["lr"]), epochs, samples)
            if new is not None:
                _set_lrs(optimizer, [new] * len(optimizer.param_groups))
            if ended:
                self.ends.append([state.epoch, state.step, state.samples])

    def _monitored(self, trainer: Trainer) -> float | None:
        logs, monitor = trainer.state.logs, self._monitor
        if monitor in logs:
            return float(logs[monitor])
        if monitor.startswith("val_") and not any(key.startswith("val_") for key in logs):
            return None  # no validation this epoch
        raise ValueError(
            f"LRScheduler(monitor={monitor!r}) names a value that is not logged, so "
            f"ReduceLROnPlateau cannot step. Logged values: {', '.join(sorted(logs))}."
        )

    def restart(self) -> None:
        """Go back to the start of the schedule, and the optimizer to its starting rates.

        For `RestartOnPlateau`: a torch scheduler returns to its fresh state (a factory
        is built again if the trainer's optimizer was replaced), a chain to its first curve, an
        `EpochFunction` counts epochs from 0 again.
        """
        trainer = self._trainer
        self.chain.restart()
        self._started = False
        if trainer is None or trainer.optimizer is None:
            return
        optimizer = trainer.optimizer
        if self.scheduler is not None:
            if self._factory is not None and self.scheduler.optimizer is not optimizer:
                self._build(optimizer)
            else:
                self.scheduler.load_state_dict(copy.deepcopy(self._initial_state or {}))
        self._start(trainer, optimizer, self._initial_lrs)

    def plan(
        self,
        epochs: int,
        samples_per_epoch: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
    ) -> Plan:
        """Compute the learning rate of each epoch (or optimizer step) from the start.

        See `kiln.optim.schedule_plan.plan_schedule` for the arguments and errors; `lr`, the
        optimizer's starting rate, defaults to the trainer's once `fit` has run.
        """
        if lr is None and self._initial_lrs is not None:
            lr = self._initial_lrs[0]
        schedule = self.function or self.scheduler or self._factory or self.chain
        return plan_schedule(schedule, self.interval, epochs, samples_per_epoch, batch_size, lr)

    def plot(
        self,
        epochs: int,
        samples_per_epoch: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        log: bool = True,
        title: str = "",
    ) -> Figure:
        """Draw the planned learning rate against the epoch (see `plan` for the arguments).

        Returns a matplotlib `Figure`, with a dotted line where each kiln curve ends.
        """
        plan = self.plan(epochs, samples_per_epoch, batch_size, lr)
        per_epoch = len(epoch_batches(self.interval, samples_per_epoch, batch_size))
        return plot_plan(plan, steps_per_epoch=per_epoch, log=log, title=title)

    def _kind(self) -> str:
        if self.function is not None:
            return "function"
        if self.scheduler is not None or self._factory is not None:
            return "torch"
        return "chain"

    def state_dict(self) -> dict[str, Any]:
        """Return the position in the schedule (and the torch scheduler's state): plain data."""
        scheduler = self.scheduler.state_dict() if self.scheduler is not None else self._loaded
        return {
            "kind": self._kind(),
            "chain": self.chain.state_dict(),
            "scheduler": copy.deepcopy(scheduler),
            "initial_lrs": self._initial_lrs,
            "started": self._started,
            "counted": self._counted,
            "seen": self._seen,
            "epoch_offset": self._epoch_offset,
            "ends": [list(end) for end in self.ends],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; a factory's scheduler loads it when built.

        Raises:
            ValueError: If the saved schedule is of another kind than this one.
        """
        if state["kind"] != self._kind():
            raise ValueError(
                f"The saved learning-rate schedule is a {state['kind']} schedule, but this "
                f"LRScheduler holds a {self._kind()} schedule. Resume with the same schedule."
            )
        self.chain.load_state_dict(state["chain"])
        if state["scheduler"] is not None:
            if self.scheduler is not None:
                self.scheduler.load_state_dict(copy.deepcopy(state["scheduler"]))
            else:
                self._loaded = copy.deepcopy(state["scheduler"])
        self._initial_lrs = state["initial_lrs"]
        self._started, self._counted = bool(state["started"]), int(state["counted"])
        self._seen, self._epoch_offset = int(state["seen"]), int(state["epoch_offset"])
        self.ends = [list(end) for end in state["ends"]]


def golden_ratio_decay(
    monitor: str = "val_loss", patience: int = 3, min_lr_ratio: float = 0.1, mode: Mode = "min"
) -> LRScheduler:
    """Divide the learning rate by the golden ratio on a plateau of `monitor`.

    An `LRScheduler` of `kiln.optim.golden_ratio_plateau` (a `ReduceLROnPlateau` with factor
    2/(1+sqrt(5)), floored at `min_lr_ratio` times the starting rate), stepped with `monitor`
    after each epoch; `restart()` returns the rate to its start.

    Example:
        >>> import kiln
        >>> kiln.callbacks.golden_ratio_decay().interval
        'epoch'
    """
    plateau = functools.partial(golden_ratio_plateau, patience=patience, mode=mode)
    return LRScheduler(functools.partial(plateau, min_lr_ratio=min_lr_ratio), monitor=monitor)
