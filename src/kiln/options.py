"""The options of the training loop, checked once: `LoopOptions` and `FitOptions`.

What lives here: the two frozen dataclasses behind the keyword arguments of `Trainer(...)` (how
each optimizer step is made) and of `fit(...)` (how long to train, when to validate), with
their validation and error messages; and the task presets of `Trainer(task=...)`. What does not:
acting on them (`loop/optimizer_step.py`, `loop/precision.py`, `loop/passes.py` and the loop in
`trainer.py`).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.state import TrainState

#: The accepted spellings of each precision, by the name kiln uses.
PRECISIONS = {
    "32": ("32", 32, "fp32", "float32"),
    "bf16": ("bf16", "bfloat16", "bf16-mixed"),
    "fp16": ("fp16", "16", 16, "float16", "16-mixed"),
}
#: What `nonfinite=` accepts: stop with an error, or leave the batch out of the step.
NONFINITE = ("raise", "skip")


def whole_number(value: Any) -> int | None:
    """Return `value` as an `int` if it is an integer, Python's or numpy's; else `None`.

    Counts (`batch_size`, `epochs`, `accumulate`, ...) are often computed with numpy, whose
    `np.int64(8)` is no Python `int`: every count kiln takes goes through this. A bool is not a
    count.

    Example:
        >>> import numpy as np
        >>> whole_number(np.int64(8)), whole_number(8.0), whole_number(True)
        (8, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    return int(value)


def _positive_int(owner: str, name: str, value: Any, optional: bool = False) -> Any:
    """Return `value` as an `int` (or `None` where optional), or raise naming `owner`."""
    if optional and value is None:
        return None
    number = whole_number(value)
    if number is None:
        kind = "a positive integer or None" if optional else "a positive integer"
        raise TypeError(f"{owner}: `{name}` must be {kind}; received {value!r}.")
    if number < 1:
        raise ValueError(f"{owner}: `{name}` must be a positive integer; received {value!r}.")
    return number


def _positive_number(owner: str, name: str, value: Any) -> float | None:
    """Return `value` as a `float` (numpy's too), or `None`; raise naming `owner` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: `{name}` must be a positive number or None; received {value!r}.")
    number = float(value)
    if not number > 0 or number == float("inf"):
        raise ValueError(
            f"{owner}: `{name}` must be a positive, finite number; received {value!r}."
        )
    return number


def check_flags(owner: str, **flags: Any) -> None:
    """Raise a `TypeError` naming `owner` for any of the keyword `flags` that is not a bool.

    The one check of on/off arguments, shared by the trainer's options and the callbacks.

    Example:
        >>> check_flags("CSVLogger", append=True, batch_granularity=False)
    """
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(
                f"{owner}: `{name}` must be True or False; received {value!r} "
                f"({type(value).__name__})."
            )


def resolve_precision(precision: Any) -> str:
    """Return kiln's name (`"32"`, `"bf16"` or `"fp16"`) for a spelling of a precision.

    Example:
        >>> resolve_precision(16), resolve_precision("bf16-mixed"), resolve_precision(32)
        ('fp16', 'bf16', '32')

    Raises:
        ValueError: For a precision kiln does not know (the message lists the known ones).
    """
    for name, spellings in PRECISIONS.items():
        if any(
            precision == spelling and type(precision) is type(spelling) for spelling in spellings
        ):
            return name
    raise ValueError(
        f"`precision` must be '32' (full precision), 'bf16' (bfloat16 autocast, CPU or CUDA) or "
        f"'fp16' (float16 autocast with a gradient scaler, CUDA); received {precision!r}."
    )


@dataclass(frozen=True)
class LoopOptions:
    """How each optimizer step is made: the `Trainer(...)` arguments of the same names.

    Every batch runs: forward and loss (under autocast with `precision`), the loss check
    (`nonfinite`), backward (of the loss divided by the group's size with `accumulate`); and at
    the last batch of a group: unscaling (fp16), the `before_optimizer_step` event, clipping,
    the optimizer step, `zero_grad`.

    Args:
        precision: `"32"` (default), `"bf16"` (bfloat16 autocast on the CPU or CUDA) or
            `"fp16"` (float16 autocast with a `torch.amp.GradScaler`, CUDA only).
        accumulate: Batches whose gradients are summed into one optimizer step. Under
            `torchrun` they are reduced over the ranks once, at the group's last batch.
        clip_norm: Clip the gradients' total 2-norm to this value before each step.
        clip_value: Clip each gradient element to `[-clip_value, clip_value]` instead.
        nonfinite: What a NaN or infinite training loss does: `"raise"` stops the run with
            an error before the optimizer step; `"skip"` leaves the batch out and counts it.
            Under `torchrun`, `"skip"` leaves a batch out on every rank when its loss is not
            finite on any one (the ranks agree by an all-reduce of a flag, each batch), so
            their weights and `skipped_batches` stay the same.
        compile: Compile the model's forward with `torch.compile` (eager if that fails).

    Example:
        >>> LoopOptions(precision="bf16", accumulate=4, clip_norm=1.0).accumulate
        4
    """

    precision: str = "32"
    accumulate: int = 1
    clip_norm: float | None = None
    clip_value: float | None = None
    nonfinite: str = "raise"
    compile: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", resolve_precision(self.precision))
        object.__setattr__(
            self, "accumulate", _positive_int("Trainer", "accumulate", self.accumulate)
        )
        for name in ("clip_norm", "clip_value"):
            value = _positive_number("Trainer", name, getattr(self, name))
            object.__setattr__(self, name, value)
        if self.clip_norm is not None and self.clip_value is not None:
            raise ValueError(
                f"Trainer: pass `clip_norm` or `clip_value`, not both; received clip_norm="
                f"{self.clip_norm!r} and clip_value={self.clip_value!r}."
            )
        if self.nonfinite not in NONFINITE:
            raise ValueError(
                f"Trainer: `nonfinite` must be 'raise' (stop with an error) or 'skip' (leave the "
                f"batch out); received {self.nonfinite!r}."
            )
        check_flags("Trainer", compile=self.compile)


#: The loop options of a `Trainer` given none.
DEFAULT_LOOP_OPTIONS = LoopOptions()


def loop_options(options: Any, flat: LoopOptions) -> LoopOptions:
    """Return the trainer's loop options: `options` when given, else the flat keywords' `flat`.

    The keywords (`Trainer(precision=..., accumulate=...)`) are a shorter spelling of
    `Trainer(options=LoopOptions(...))`; one trainer takes one of the two.

    Example:
        >>> loop_options(None, LoopOptions(accumulate=2)).accumulate
        2

    Raises:
        TypeError: If `options` is not a `LoopOptions`.
        ValueError: If both `options` and a keyword other than its default are given.
    """
    if options is None:
        return flat
    if not isinstance(options, LoopOptions):
        raise TypeError(
            f"Trainer: `options` must be a kiln.LoopOptions; received {type(options).__name__}."
        )
    given = {
        name: getattr(flat, name)
        for name in LoopOptions.__dataclass_fields__
        if getattr(flat, name) != getattr(DEFAULT_LOOP_OPTIONS, name)
    }
    if given:
        spelled = ", ".join(f"{name}={value!r}" for name, value in given.items())
        raise ValueError(
            f"Trainer: received both `options` and the keywords {spelled}. Give the loop "
            "options one way: all in `options=kiln.LoopOptions(...)`, or as keywords."
        )
    return options


@dataclass(frozen=True)
class FitOptions:
    """How long `fit` trains and when it validates: the `fit(...)` arguments of the same names.

    Args:
        epochs: Epochs to train in this call (with `resume=True`: the run's total).
        val_every: Validate after every this many epochs (and after the last one of the call,
            and after an epoch that stops the run).
        pre_val: Validate once before the first epoch of the call (not when it resumes a run).
        max_steps: Stop once the run has taken this many optimizer steps in this call (with
            `resume=True`: in the whole run), also in the middle of an epoch, which is then
            logged and counted as done. A budget stop pauses the run: `resume=True` with a
            larger budget continues it.
        max_samples: Stop once this many training samples were seen, counted the same way
            and checked after each optimizer step (so it may be passed by up to a step).
        repeat_train: Training passes over the data in one epoch; the epoch's values are
            sample-weighted means over all of them.
        repeat_val: Validation passes in one validation, averaged the same way.
        epoch_hook: A function `hook(trainer)` called after each epoch's values are computed
            (before the `epoch_end` callbacks).

    Example:
        >>> from kiln import TrainState
        >>> FitOptions(epochs=10, val_every=2).validates(TrainState(epoch=3, max_epochs=10))
        False
    """

    epochs: int = 1
    val_every: int = 1
    pre_val: bool = False
    max_steps: int | None = None
    max_samples: int | None = None
    repeat_train: int = 1
    repeat_val: int = 1
    epoch_hook: Callable[[Any], Any] | None = None

    def __post_init__(self) -> None:
        epochs = whole_number(self.epochs)
        if epochs is None or epochs <= 0:
            raise ValueError(f"`epochs` must be a positive integer; received {self.epochs!r}.")
        object.__setattr__(self, "epochs", epochs)
        for name in ("val_every", "repeat_train", "repeat_val"):
            object.__setattr__(self, name, _positive_int("fit", name, getattr(self, name)))
        for name in ("max_steps", "max_samples"):
            value = _positive_int("fit", name, getattr(self, name), optional=True)
            object.__setattr__(self, name, value)
        check_flags("fit", pre_val=self.pre_val)
        if self.epoch_hook is not None and not callable(self.epoch_hook):
            raise TypeError(
                "fit: `epoch_hook` must be a function `hook(trainer)` or None; received "
                f"{type(self.epoch_hook).__name__}."
            )

    def check_validation_data(self, has_val: bool) -> None:
        """Raise `ValueError` if validation options are given but `fit` has no `val`."""
        asked = {"pre_val": self.pre_val, "val_every": self.val_every != 1}
        asked["repeat_val"] = self.repeat_val != 1
        given = [name for name, value in asked.items() if value]
        if given and not has_val:
            raise ValueError(
                f"fit: {', '.join(f'`{name}`' for name in given)} set how to validate, but `fit` "
                "received no validation data. Pass `val=` (data, or a fraction of `train`)."
            )

    def validates(self, state: TrainState) -> bool:
        """Tell whether the epoch just completed (`state.epoch`, 1-based) is validated."""
        return (
            state.epoch % self.val_every == 0
            or state.epoch >= state.max_epochs
            or state.should_stop
        )

    def set_limits(self, state: TrainState, resume: bool) -> None:
        """Set the counts the run stops at: this call's on top of the run's, or totals on resume.

        Example:
            >>> from kiln import TrainState
            >>> state = TrainState(epoch=3, step=30)
            >>> FitOptions(epochs=2, max_steps=5).set_limits(state, resume=False)
            >>> state.max_epochs, state.max_steps, state.max_samples
            (5, 35, None)
        """
        base = (0, 0, 0) if resume else (state.epoch, state.step, state.samples)
        state.max_epochs = base[0] + self.epochs
        state.max_steps = None if self.max_steps is None else base[1] + self.max_steps
        state.max_samples = None if self.max_samples is None else base[2] + self.max_samples


def spent_budget(state: TrainState) -> str | None:
    """Return why the run must stop if its step or sample budget is spent, else None.

    Example:
        >>> from kiln import TrainState
        >>> spent_budget(TrainState(step=10, max_steps=10))
        'reached max_steps (10 steps)'
    """
    for name, done, limit in (
        ("max_steps", state.step, state.max_steps),
        ("max_samples", state.samples, state.max_samples),
    ):
        if limit is not None and done >= limit:
            return f"reached {name} ({done} {name.removeprefix('max_')})"
    return None


@dataclass(frozen=True)
class TaskPreset:
    """What a task preset chooses when the user does not."""

    loss: str
    metrics: list[str] = field(default_factory=list)
    monitor: str = "val_loss"


#: The presets `Trainer(task=...)` accepts (a prefix such as "classif" works).
#: Compatibility: Poutyne's `task` argument.
TASK_PRESETS = {
    "classification": TaskPreset("cross_entropy", ["accuracy"], "val_accuracy"),
    "regression": TaskPreset("mse", ["mae"], "val_loss"),
}


def apply_task_preset(
    task: str | None, loss: Any, metrics: Any, monitor: str | None
) -> tuple[Any, Any, str]:
    """Fill in the loss, metrics and monitored value the user left out, from `task`.

    Example:
        >>> apply_task_preset("classif", None, None, None)
        ('cross_entropy', ['accuracy'], 'val_accuracy')

    Raises:
        ValueError: If `task` names no preset.
    """
    if task is None:
        return loss, metrics, monitor or "val_loss"
    matches = [
        name for name in TASK_PRESETS if isinstance(task, str) and task and name.startswith(task)
    ]
    if len(matches) != 1:
        raise ValueError(
            f"`task` must be one of {sorted(TASK_PRESETS)} (or a prefix, such as 'classif'); "
            f"received {task!r}."
        )
    preset = TASK_PRESETS[matches[0]]
    if metrics is not None:  # the preset's monitored value may not be among the user's metrics
        return preset.loss if loss is None else loss, metrics, monitor or "val_loss"
    return preset.loss if loss is None else loss, list(preset.metrics), monitor or preset.monitor
