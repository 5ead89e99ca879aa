"""Learning-rate curves: warmup then cosine, linear, exponential and constant.

Each curve runs for a length counted in epochs or in training samples, from `lr1` to `lr2`; a
curve is a small immutable description, and `value(done, lr1, lr2)` is its exact formula, with
`done` the epochs or samples completed since the curve started:

- `WarmupCosine`: `lr1 + (lr_hot - lr1) * done / warmup` while `done < warmup`, then
  `lr2 + (lr_hot - lr2) * (1 + cos(pi * (done - warmup) / (length - warmup))) / 2`;
- `LinearSchedule`: `lr1 + (lr2 - lr1) * done / length`;
- `ExponentialSchedule`: `lr1 * exp(ln(lr2 / lr1) * done / length)` (a straight line on a log
  scale; constant at `lr1` when either end is 0);
- `ConstantSchedule`: `lr1`.

When `done` reaches the length, the curve ends at `lr2` (`lr1` for the constant one). `lr1` or
`lr2` left as `None` take the optimizer's learning rate when the curve starts.

`EpochFunction` wraps the other form of schedule, a function `fn(epoch) -> lr`.

Compatibility: QuNet's curves, with the same formulas and argument names.

What lives here: the curves, `EpochFunction` and their argument checks. What does not: running
the curves one after another and their state during a run (`optim/schedule_chain.py`), applying
them to an optimizer (`kiln.callbacks.LRScheduler`) and drawing them (`optim/schedule_plot.py`).
"""

from __future__ import annotations

import math
from typing import Any

UNITS = ("epochs", "samples")


def check_lr(owner: str, name: str, value: Any) -> float:
    """Return `value` as a float learning rate.

    Raises:
        TypeError: If `value` is not a number.
        ValueError: If it is negative, infinite or NaN.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{owner}: `{name}` must be a number (a learning rate); received "
            f"{type(value).__name__} {value!r}."
        )
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(
            f"{owner}: `{name}` must be a learning rate of 0 or more; received {value!r}."
        )
    return float(value)


def _optional_lr(owner: str, name: str, value: Any) -> float | None:
    return None if value is None else check_lr(owner, name, value)


def _count(owner: str, name: str, value: Any, minimum: int) -> int:
    """Return `value` as an int count of epochs or samples (`1e5` is accepted as 100000)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{owner}: `{name}` must be a whole number; received {type(value).__name__} {value!r}."
        )
    if not (math.isfinite(value) and value == int(value) and value >= minimum):
        raise ValueError(
            f"{owner}: `{name}` must be a whole number of at least {minimum}; received {value!r}."
        )
    return int(value)


class Schedule:
    """A learning-rate curve from `lr1` to `lr2` over a number of epochs or samples.

    Give exactly one of `epochs` and `samples`: the curve advances by one at each epoch, or by
    the number of training samples seen. Subclasses define `value`.

    Args:
        lr1: The learning rate at the start, or `None` for the optimizer's rate then.
        lr2: The learning rate at the end, or `None` for the optimizer's rate at the start.
        epochs: The curve's length in epochs.
        samples: The curve's length in training samples.

    Example:
        >>> from kiln.optim import LinearSchedule
        >>> curve = LinearSchedule(1e-2, 1e-3, samples=1e5)
        >>> curve.unit, curve.length
        ('samples', 100000)
    """

    def __init__(
        self,
        lr1: float | None = None,
        lr2: float | None = None,
        epochs: int | None = None,
        samples: int | None = None,
    ) -> None:
        owner = type(self).__name__
        if (epochs is None) == (samples is None):
            raise ValueError(
                f"{owner} needs exactly one of `epochs` and `samples` (its length); received "
                f"epochs={epochs!r}, samples={samples!r}. Example: {owner}(..., epochs=10)."
            )
        self.lr1 = _optional_lr(owner, "lr1", lr1)
        self.lr2 = _optional_lr(owner, "lr2", lr2)
        self.unit = "epochs" if epochs is not None else "samples"
        self.length = _count(owner, self.unit, epochs if epochs is not None else samples, 1)

    def value(self, done: int, lr1: float, lr2: float) -> float:
        """Return the learning rate after `done` epochs or samples (`0 <= done < length`)."""
        raise NotImplementedError

    def final(self, lr1: float, lr2: float) -> float:
        """Return the learning rate the curve ends at and keeps."""
        return lr2

    def _describe(self) -> str:
        return f"lr1={self.lr1!r}, lr2={self.lr2!r}, {self.unit}={self.length}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._describe()})"


class WarmupCosine(Schedule):
    """Rise linearly from `lr1` to `lr_hot` in `warmup`, then fall to `lr2` along a cosine.

    `epochs` (or `samples`) is the whole length, warmup included.

    Args:
        lr1: The learning rate at the start (`None`: the optimizer's).
        lr_hot: The peak, reached after `warmup`.
        lr2: The learning rate at the end (`None`: the optimizer's at the start).
        epochs: The whole length in epochs.
        samples: The whole length in training samples.
        warmup: The length of the linear rise, in the same unit; less than the whole length.

    Example:
        >>> from kiln.optim import WarmupCosine
        >>> curve = WarmupCosine(1e-4, 1e-2, 1e-3, epochs=8, warmup=2)
        >>> [round(curve.value(k, 1e-4, 1e-3), 5) for k in range(4)]
        [0.0001, 0.00505, 0.01, 0.0094]
    """

    def __init__(
        self,
        lr1: float | None = None,
        lr_hot: float = 1e-2,
        lr2: float | None = None,
        epochs: int | None = None,
        samples: int | None = None,
        warmup: int = 0,
    ) -> None:
        super().__init__(lr1, lr2, epochs, samples)
        self.lr_hot = check_lr("WarmupCosine", "lr_hot", lr_hot)
        self.warmup = _count("WarmupCosine", "warmup", warmup, 0)
        if self.warmup >= self.length:
            raise ValueError(
                f"WarmupCosine: `warmup` ({self.warmup}) must be shorter than the whole length "
                f"({self.unit}={self.length}), which includes the warmup."
            )

    def value(self, done: int, lr1: float, lr2: float) -> float:
        """Return the learning rate after `done` epochs or samples."""
        if done < self.warmup:
            return lr1 + (self.lr_hot - lr1) * done / self.warmup
        progress = (done - self.warmup) / (self.length - self.warmup)
        return lr2 + (self.lr_hot - lr2) * (1 + math.cos(math.pi * progress)) / 2

    def _describe(self) -> str:
        return (
            f"lr1={self.lr1!r}, lr_hot={self.lr_hot!r}, lr2={self.lr2!r}, "
            f"{self.unit}={self.length}, warmup={self.warmup}"
        )


class LinearSchedule(Schedule):
    """Change the learning rate from `lr1` to `lr2` in a straight line.

    Example:
        >>> from kiln.optim import LinearSchedule
        >>> curve = LinearSchedule(1e-2, 2e-3, epochs=4)
        >>> [round(curve.value(k, 1e-2, 2e-3), 4) for k in range(4)], curve.final(1e-2, 2e-3)
        ([0.01, 0.008, 0.006, 0.004], 0.002)
    """

    def value(self, done: int, lr1: float, lr2: float) -> float:
        """Return the learning rate after `done` epochs or samples."""
        return lr1 + done * (lr2 - lr1) / self.length


class ExponentialSchedule(Schedule):
    """Change the learning rate from `lr1` to `lr2` geometrically.

    A straight line on a log scale. With `lr1` or `lr2` equal to 0 it stays at `lr1` until it
    ends at `lr2`.

    Example:
        >>> from kiln.optim import ExponentialSchedule
        >>> curve = ExponentialSchedule(1e-3, 1e-5, epochs=4)
        >>> [f"{curve.value(k, 1e-3, 1e-5):.3g}" for k in range(4)]
        ['0.001', '0.000316', '0.0001', '3.16e-05']
    """

    def value(self, done: int, lr1: float, lr2: float) -> float:
        """Return the learning rate after `done` epochs or samples."""
        ratio = lr2 / lr1 if lr1 > 0 and lr2 > 0 else 1.0
        return lr1 * math.exp(math.log(ratio) * done / self.length)


class ConstantSchedule(Schedule):
    """Hold the learning rate at `lr1` for a while.

    Args:
        lr1: The learning rate to hold (`None`: the optimizer's).
        epochs: How many epochs to hold it.
        samples: How many training samples to hold it.

    Example:
        >>> from kiln.optim import ConstantSchedule
        >>> ConstantSchedule(1e-3, epochs=3).final(1e-3, 1e-3)
        0.001
    """

    def __init__(
        self, lr1: float | None = None, epochs: int | None = None, samples: int | None = None
    ) -> None:
        super().__init__(lr1, None, epochs, samples)

    def value(self, done: int, lr1: float, lr2: float) -> float:
        """Return `lr1`."""
        return lr1

    def final(self, lr1: float, lr2: float) -> float:
        """Return `lr1`: the constant curve ends where it stayed."""
        return lr1

    def _describe(self) -> str:
        return f"lr1={self.lr1!r}, {self.unit}={self.length}"


class EpochFunction:
    """A function `fn(epoch) -> lr` that sets the rate after each epoch, for `LRScheduler`.

    The function is called after each epoch with that epoch's 0-based number (counted from the
    start of the schedule), and its value becomes the learning rate of every parameter group for
    the next epoch; the first epoch runs at the optimizer's own rate.

    Compatibility: TorchFusion's `lr_schedule` functions run unchanged.

    Args:
        fn: Called with the 0-based number of the epoch just finished; returns a number of 0 or
            more.

    Example:
        >>> from kiln.optim import EpochFunction
        >>> schedule = EpochFunction(lambda epoch: 1e-3 if epoch < 30 else 1e-4)
        >>> schedule(29), schedule(30)
        (0.001, 0.0001)
    """

    def __init__(self, fn: Any) -> None:
        if not callable(fn):
            raise TypeError(
                f"EpochFunction needs a function `fn(epoch) -> lr`; received "
                f"{type(fn).__name__} {fn!r}."
            )
        self.fn = fn

    def __call__(self, epoch: int) -> float:
        """Return the learning rate `fn` gives after the 0-based epoch `epoch`."""
        return check_lr("EpochFunction", f"the value of fn({epoch})", self.fn(epoch))

    def __repr__(self) -> str:
        return f"EpochFunction({getattr(self.fn, '__name__', self.fn)!r})"
