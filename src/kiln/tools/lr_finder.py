"""The learning-rate range test: `lr_find`, its result `LRFinderResult`, and the curve's plot.

The test (Leslie Smith, 2017; fastai) trains briefly with a rate that grows at every optimizer
step, from tiny to huge, and records each step's loss: the loss barely moves, falls, then stops
falling and blows up. A good rate lies on the falling part.

It runs the trainer's own `fit`, so what makes a step (a model's `training_step`, a `Trainer`
subclass, the loss, device, precision, accumulation, clipping) is as in training; meanwhile the
trainer has fresh counters, history and data position, no directory, and only the test's
callback (its own callbacks write no checkpoint or log). Afterwards, also after an error, all
is as it was (weights, buffers, gradients, optimizer state and rates, train/eval modes, every
trainer attribute, every random generator): training after `lr_find` equals training without.

Stopping at divergence reads the loss on the host once per step, accepted for a short
diagnostic; with `diverge=None` the losses stay on the device until the end (on the CPU the
trainer reads each loss anyway, to catch a NaN before the step).

What lives here: rates, smoothing, suggestion, plot. Not here: the optimizer step and the loop.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from kiln.callbacks.base import Callback
from kiln.data.in_memory import Data
from kiln.data.sources import as_batches
from kiln.loop.first_batch import check_can_train
from kiln.options import whole_number
from kiln.seed import get_rng_state, set_rng_state

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kiln.trainer import Trainer


@dataclass(frozen=True)
class LRFinderResult:
    """The outcome of `lr_find`: the rates tried, their losses and a suggested rate.

    The suggestion is a tenth of the rate with the lowest smoothed loss (fastai's `lr_min`). The
    smoothed curve lags the losses, so its lowest point is where the loss has stopped falling:
    the steps overshoot there, at the edge of divergence; ten times lower keeps most of the
    speed with a margin. The steepest descent reads the slope of a noisy
    curve and moves from run to run; the minimum is stable. A lowest loss at the first rate
    gives a suggestion below the range tested: start lower.

    Attributes:
        lrs: The rate of each step (of the first parameter group; the others keep their ratio).
        losses: The loss of each step, as its batches computed it (before its update).
        smoothed: The losses after an exponential moving average (bias-corrected).
        suggestion: The suggested learning rate.
        diverged: Whether the test stopped early because the loss diverged.

    Example:
        >>> result = LRFinderResult([1e-3, 1e-2, 1e-1], [1.0, 0.5, 2.0], [1.0, 0.6, 1.5],
        ...                         suggestion=1e-3, diverged=False)
        >>> result.best_lr
        0.01
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    diverged: bool

    @property
    def best_lr(self) -> float:
        """The rate at which the smoothed loss was lowest (ten times the suggestion)."""
        return self.lrs[_lowest(self.smoothed)]

    def plot(self) -> Figure:
        """Draw the losses against the learning rate (log scale), marking the suggestion.

        Returns:
            A `matplotlib.figure.Figure` (object API, no pyplot): `figure.savefig(path)`.

        Raises:
            ImportError: If matplotlib is not installed.
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as error:
            raise ImportError(
                f"Plotting the range test needs matplotlib ({error}): `pip install matplotlib`. "
                "The values are in `result.lrs` and `result.losses`."
            ) from error
        figure = Figure(figsize=(6.4, 4.2), layout="constrained")
        axes = figure.add_subplot(xscale="log", xlabel="learning rate", ylabel="loss")
        axes.plot(self.lrs, self.losses, color="0.7", linewidth=0.8, label="loss")
        axes.plot(self.lrs, self.smoothed, color="C0", linewidth=1.8, label="smoothed loss")
        best = _lowest(self.smoothed)
        axes.plot([self.lrs[best]], [self.smoothed[best]], "o", color="C0", fillstyle="none")
        finite = [i for i, y in enumerate(self.smoothed) if math.isfinite(y)]
        logs, values = [math.log(self.lrs[i]) for i in finite], [self.smoothed[i] for i in finite]
        at = float(np.interp(math.log(self.suggestion), logs, values))  # on the smoothed curve
        label = f"suggestion {self.suggestion:.2g} (lowest smoothed loss / 10)"
        axes.plot([self.suggestion], [at], "o", color="C3", label=label)
        axes.axvline(self.suggestion, color="C3", linestyle="--", linewidth=1)
        stopped = " (stopped: the loss diverged)" if self.diverged else ""
        axes.set_title(f"learning-rate range test{stopped}")
        # The tail after divergence can be orders of magnitude above the rest: show the losses
        # up to the lowest smoothed one, with room above for the start of the rise.
        shown = [v for v in self.losses[: best + 1] + self.smoothed[: best + 1] if math.isfinite(v)]
        low, high = min(shown), max(shown)
        span = (high - low) or abs(high) or 1.0
        axes.set_ylim(low - 0.05 * span, high + 0.3 * span)
        axes.grid(True, alpha=0.3)
        axes.legend()
        return figure


def lr_find(
    trainer: Trainer,
    train: Any,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    mode: str = "exp",
    smooth: float = 0.05,
    diverge: float | None = 4.0,
    batch_size: int | None = None,
    callbacks: Iterable[Any] = (),
) -> LRFinderResult:
    """Run a learning-rate range test on `trainer`, then put the trainer back as it was.

    Trains `num_steps` optimizer steps (over `train` as many times as needed) with the rate
    rising from `start_lr` to `end_lr`, records each step's loss and suggests a rate (see
    `LRFinderResult`). Afterwards the trainer and the random generators are exactly as before.

    Args:
        trainer: The trainer to test, with an optimizer.
        train: The training data, of any kind `fit` accepts.
        start_lr: The rate of the first step.
        end_lr: The rate of the last step (if the loss has not diverged before).
        num_steps: How many steps (rates) to try.
        mode: `"exp"`: rates evenly spaced on a log scale (the usual choice, for a range over
            several orders of magnitude); `"linear"`: evenly spaced rates.
        smooth: The weight of each new loss in the moving average of the smoothed curve, in
            (0, 1]; 1 is no smoothing.
        diverge: Stop once the smoothed loss exceeds `diverge` times its lowest value so far;
            `None`: try every rate. A NaN or infinite loss always ends the test.
        batch_size: Samples per batch for tensors, arrays and Datasets (default 32).
        callbacks: Callbacks to run during the test, such as one that clips gradients. The
            trainer's own callbacks do not run.

    Returns:
        The rates, the raw and smoothed losses, and the suggested rate.

    Raises:
        TypeError: If `trainer` is not a `kiln.Trainer`.
        ValueError: For a trainer without an optimizer, bad numbers, or no finite loss.

    Example:
        >>> import torch, kiln
        >>> X = torch.randn(64, 3); Y = X @ torch.tensor([[1.0], [-2.0], [0.5]])
        >>> trainer = kiln.Trainer(torch.nn.Linear(3, 1), loss="mse", optimizer="sgd",
        ...                        device="cpu", progress=False)
        >>> result = lr_find(trainer, (X, Y), start_lr=1e-4, end_lr=10, num_steps=50)
        >>> 1e-4 < result.suggestion < 1.0, len(result.lrs) <= 50
        (True, True)
    """
    from kiln.trainer import Trainer

    if not isinstance(trainer, Trainer):
        raise TypeError(
            f"lr_find tests a kiln.Trainer; received {type(trainer).__name__}. Wrap the model "
            "first: `kiln.lr_find(kiln.Trainer(model, loss=..., optimizer=...), data)`."
        )
    if trainer.optimizer is None:
        raise ValueError(
            "lr_find varies the optimizer's learning rate, but this trainer has no optimizer. "
            "Create it with one, e.g. `Trainer(model, loss=..., optimizer='sgd')`."
        )
    check_can_train(
        trainer.optimizer, trainer.loss, trainer.defines("training_step"), trainer.model
    )
    lrs = schedule(start_lr, end_lr, num_steps, mode)
    if not _is_number(smooth) or not 0 < smooth <= 1:
        raise ValueError(f"`smooth` must be in (0, 1] (1: no smoothing); received {smooth!r}.")
    if diverge is not None and not (_is_number(diverge) and diverge > 1):
        raise ValueError(
            f"`diverge` (how many times the lowest loss counts as diverged) must be a number "
            f"above 1 such as 4.0, or None to try every rate; received {diverge!r}."
        )
    recorder = _RangeTest(lrs, smooth, diverge)
    with _isolated(trainer, [recorder, *callbacks]):
        batches = as_batches(train, "train", batch_size, shuffle=True)
        epoch = batches.epoch if isinstance(batches, Data) else 0
        try:
            trainer.fit(batches, epochs=num_steps)  # stopped by the recorder after the last step
        except FloatingPointError:  # a NaN or infinite loss: diverged, for good
            recorder.failed = True
        finally:
            if isinstance(batches, Data):
                batches.epoch = epoch  # the user's Data counts its passes: as it was
    return recorder.result()


def schedule(start_lr: float, end_lr: float, num_steps: int, mode: str = "exp") -> list[float]:
    """Return the rates of a range test: `num_steps` rates from `start_lr` to `end_lr`.

    Raises:
        ValueError: If the rates are not `0 < start_lr < end_lr`, `num_steps` is below 2, or
            `mode` is unknown.

    Example:
        >>> schedule(1e-3, 1e-1, 3)
        [0.001, 0.01, 0.1]
        >>> schedule(0.1, 0.3, 3, mode="linear")
        [0.1, 0.2, 0.3]
    """
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr)):
        if not _is_number(value) or not 0 < value < math.inf:
            raise ValueError(f"`{name}` must be a positive finite number; received {value!r}.")
    if start_lr >= end_lr:
        raise ValueError(
            f"The range test goes from `start_lr` up to `end_lr`, so `start_lr` must be below "
            f"`end_lr`; received start_lr={start_lr!r}, end_lr={end_lr!r}."
        )
    if whole_number(num_steps) is None or num_steps < 2:
        raise ValueError(
            f"`num_steps` must be an integer of at least 2 (the rates tried); received "
            f"{num_steps!r}. The usual is 100."
        )
    if mode not in ("exp", "linear"):
        raise ValueError(f"`mode` must be 'exp' or 'linear'; received {mode!r}.")
    last = num_steps - 1
    if mode == "linear":
        return [start_lr + (end_lr - start_lr) * i / last for i in range(num_steps)]
    ratio = end_lr / start_lr
    return [start_lr * ratio ** (i / last) for i in range(num_steps)]


def smooth_losses(losses: Iterable[float], smooth: float) -> list[float]:
    """Return the exponential moving average of `losses`, corrected for its start at zero.

    Example:
        >>> [round(value, 3) for value in smooth_losses([1.0, 3.0, 3.0], 0.5)]
        [1.0, 2.333, 2.714]
    """
    smoother = _Smoother(smooth)
    return [smoother.add(loss) for loss in losses]


class _Smoother:
    """An exponential moving average divided by its weight so far, so the first value is exact."""

    def __init__(self, smooth: float) -> None:
        self.keep, self.average, self.weight = 1.0 - smooth, 0.0, 0.0

    def add(self, value: float) -> float:
        self.average = self.keep * self.average + (1.0 - self.keep) * value
        self.weight = self.keep * self.weight + (1.0 - self.keep)
        return self.average / self.weight


class _RangeTest(Callback):
    """Sets the rate of each optimizer step, records its loss, and stops when done.

    A step is `trainer.state.step` of the test's fresh state; with gradient accumulation it
    spans several batches, whose mean loss is the step's.
    """

    def __init__(self, lrs: list[float], smooth: float, diverge: float | None) -> None:
        self.lrs, self.smooth, self.diverge = lrs, smooth, diverge
        self.losses: list[Tensor] = []  # one per optimizer step, on the device
        self.diverged, self.failed = False, False  # failed: a step's loss was NaN or infinite
        self._batches: list[Tensor] = []  # the losses of the current step's batches
        self._best, self._smoother = math.inf, _Smoother(smooth)
        self._ratios: list[float] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        """Keep the ratios between the parameter groups' rates (discriminative rates)."""
        groups = trainer.optimizer.param_groups  # type: ignore[union-attr]  # checked
        first = float(groups[0]["lr"])
        self._ratios = [float(g["lr"]) / first if first > 0 else 1.0 for g in groups]

    def on_train_batch_start(self, trainer: Trainer) -> None:
        """Set the current step's rate in every parameter group."""
        lr = self.lrs[trainer.state.step]
        groups = trainer.optimizer.param_groups  # type: ignore[union-attr]  # checked
        for group, ratio in zip(groups, self._ratios, strict=True):
            if isinstance(group["lr"], Tensor):  # a tensor rate (capturable, fused): in place
                group["lr"].fill_(lr * ratio)
            else:
                group["lr"] = lr * ratio

    def on_train_batch_end(self, trainer: Trainer) -> None:
        """Keep the batch's loss; after the step's last batch, record the step."""
        self._batches.append(trainer.state.output.loss.detach())  # type: ignore[union-attr]
        if trainer.state.step > len(self.losses):
            self._end_step(trainer)

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        """Record a last group of data without a length, stepped after the loop."""
        if trainer.state.step > len(self.losses) and self._batches:
            self._end_step(trainer)

    def _end_step(self, trainer: Trainer) -> None:
        batches, self._batches = self._batches, []
        loss = batches[0] if len(batches) == 1 else torch.stack(batches).mean()
        self.losses.append(loss)
        if self.diverge is not None and self._diverges(float(loss), self.diverge):  # 1 read/step
            self.diverged = True
            trainer.request_stop("lr_find: the loss diverged")
        elif len(self.losses) == len(self.lrs):
            trainer.request_stop("lr_find: all rates tried")

    def _diverges(self, loss: float, diverge: float) -> bool:
        smoothed = self._smoother.add(loss)
        if not math.isfinite(smoothed):
            return True
        self._best = min(self._best, smoothed)
        # `diverge` times the best, written so that it also reads sensibly for negative losses.
        return smoothed - self._best > (diverge - 1) * abs(self._best)

    def result(self) -> LRFinderResult:
        losses = torch.stack(self.losses).double().cpu().tolist() if self.losses else []
        if self.failed and len(losses) < len(self.lrs):  # the step whose loss stopped the run
            losses.append(math.nan)
        if not losses:
            raise ValueError(
                "`train` yielded no batch, so no rate was tried. Give data with at least one "
                "batch (with `drop_last=True`, at least `batch_size` samples)."
            )
        smoothed = smooth_losses(losses, self.smooth)
        if not any(math.isfinite(v) for v in smoothed):
            raise ValueError(
                f"The loss was not finite at any rate tried ({losses[:3]}...), so the range "
                "test cannot suggest a rate. Check that the data holds no NaN or infinite "
                "values and that training at a small rate works."
            )
        lrs = self.lrs[: len(losses)]
        suggestion = lrs[_lowest(smoothed)] / 10
        return LRFinderResult(lrs, losses, smoothed, suggestion, self.diverged or self.failed)


@contextmanager
def _isolated(trainer: Trainer, callbacks: list[Any]) -> Iterator[None]:
    """Give `trainer` a clean slate with `callbacks` only; restore everything on the way out."""
    model, optimizer = trainer.model, trainer.optimizer
    parameters = list(model.parameters())
    tensors = [*parameters, *model.buffers()]
    values = [tensor.detach().clone() for tensor in tensors]
    grads = [None if p.grad is None else p.grad.detach().clone() for p in parameters]
    modes = [(module, module.training) for module in model.modules()]
    optimizer_state = copy.deepcopy(optimizer.state_dict())  # type: ignore[union-attr]
    rng = get_rng_state()
    try:
        with trainer.trial(callbacks):
            yield
    finally:
        with torch.no_grad():
            for tensor, value in zip(tensors, values, strict=True):
                tensor.copy_(value)
        for parameter, grad in zip(parameters, grads, strict=True):
            parameter.grad = grad
        for module, training in modes:
            module.training = training
        optimizer.load_state_dict(optimizer_state)  # type: ignore[union-attr]  # checked
        set_rng_state(rng)


def _lowest(values: list[float]) -> int:
    finite = [i for i, value in enumerate(values) if math.isfinite(value)]
    return min(finite, key=values.__getitem__) if finite else 0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
