"""`EarlyStopping`: stop when a monitored value stops improving, or stops being a number.

What lives here: the callback, and the reading of a patience given in epochs or as a fraction of
the run (`resolve_patience`), which `RestartOnPlateau` shares. What does not: what "better"
means for a value (`monitor.py`), restarting the optimizer on a plateau (`restarts.py`), and
stopping on demand (`stop_file.py`).
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

from kiln.callbacks.base import Callback
from kiln.callbacks.monitor import improved, initial_best, read_monitored, resolve_mode
from kiln.callbacks.progress import format_value

if TYPE_CHECKING:
    from torch import Tensor

    from kiln.trainer import Trainer


def is_number(value: Any) -> bool:
    """Tell whether `value` is an int or a float (a bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_patience(owner: str, patience: Any) -> None:
    """Check a patience: a positive int of epochs, or a float fraction of the run in (0, 1).

    Raises:
        TypeError: If `patience` is not a number.
        ValueError: If it is an int below 1 or a float outside (0, 1).
    """
    if not is_number(patience):
        raise TypeError(
            f"{owner}: `patience` must be an int (epochs) or a float in (0, 1) (a fraction of "
            f"the run's epochs); received {type(patience).__name__}."
        )
    if isinstance(patience, int) and patience < 1:
        raise ValueError(
            f"{owner}: `patience` must be a positive integer; received {patience!r}. Pass a "
            "number of epochs (5), or a float in (0, 1) for a fraction of the run's epochs (0.15)."
        )
    if not isinstance(patience, int) and not 0 < patience < 1:
        raise ValueError(
            f"{owner}: a float `patience` is a fraction of the run's epochs and must lie in "
            f"(0, 1); received {patience!r}. For a number of epochs pass an int, such as 5."
        )


def resolve_patience(patience: float, max_epochs: int) -> float:
    """Return a patience in epochs: an int as it is, a fraction times the run's epoch count.

    Example:
        >>> resolve_patience(3, 50), resolve_patience(0.15, 10)
        (3.0, 1.5)
    """
    return float(patience) if isinstance(patience, int) else float(patience) * max_epochs


def check_rel_delta(owner: str, value: Any) -> float:
    """Return a `min_rel_delta` as a float after checking it is a number in [0, 1)."""
    if not is_number(value):
        raise TypeError(
            f"{owner}: `min_rel_delta` must be a number; received {type(value).__name__}."
        )
    if not 0 <= value < 1:
        raise ValueError(
            f"{owner}: `min_rel_delta` is a fraction of the best value and must lie in [0, 1) "
            f"(0.005 for 0.5%); received {value!r}."
        )
    return float(value)


class EarlyStopping(Callback):
    """Stop training when `monitor` has not improved for `patience` epochs.

    A value improves when it beats the best so far by more than `min_delta` plus `min_rel_delta`
    times the best's magnitude (lower for "min", higher for "max"). Epochs without the value (a
    validation that did not run) do not count. A value that is NaN or infinite stops the run at
    once: a diverged run does not come back, so waiting out the patience would only waste epochs.

    By default the run stops at the `patience`-th epoch in a row without improvement. The
    countdown (`countdown=True`) starts at the first epoch without improvement and stops once the
    epochs without improvement *before* the current one exceed `patience`: with a window of 2,
    it stops at the 4th epoch without improvement. A rule where progress is a 0.5% gain and the
    window is 20% of the epochs is::

        EarlyStopping("val_loss", patience=0.2, min_rel_delta=0.005, countdown=True)

    Compatibility: Keras's counting by default, PytorchTrainer's with `countdown=True`.

    Args:
        monitor: The logged name to watch, such as `"val_loss"` or `"val_accuracy"`.
        mode: `"min"`, `"max"`, or `"auto"` to read it from the name (losses and errors are
            minimized; accuracies and scores maximized).
        patience: Epochs without improvement before stopping: an int, or a float in (0, 1) for
            that fraction of the epoch count the run goes to (`trainer.state.max_epochs`, read
            at the start of each `fit`: the `epochs` of a first `fit` or of a resumed one).
        min_delta: The smallest change that counts as an improvement.
        restore_best: At the end of `fit`, load the weights of the best counted epoch (kept in
            memory).
        min_rel_delta: The smallest change, as a fraction of the best value, that counts as an
            improvement (0.005: a loss must fall below 99.5% of its best).
        countdown: Stop once the epochs without improvement before the current one exceed
            `patience` (above), instead of at the `patience`-th.
        check_finite: Stop when the value is NaN or infinite (else such a value only fails to
            improve).

    After a run, `best`, `best_epoch` and `best_logs` (all values of that epoch) tell the best
    counted value: the last that improved by more than the margins, so with `min_delta` or
    `min_rel_delta` a later epoch may have come a little better without counting (the stop
    message says "last counted improvement"). `wait` counts the epochs since,
    `patience_epochs` is the patience in epochs and `remaining` how many more epochs without
    improvement the run can take. All carry on across a resume.

    Raises:
        TypeError: For arguments of the wrong type; ValueError for bad values.

    Example:
        >>> import kiln
        >>> stopper = kiln.callbacks.EarlyStopping("val_accuracy", patience=3, restore_best=True)
        >>> stopper.mode
        'max'
        >>> countdown = EarlyStopping(patience=0.2, min_rel_delta=0.005, countdown=True)
        >>> countdown.patience_epochs is None  # known when fit starts: 0.2 of its epochs
        True
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "auto",
        patience: float = 5,
        min_delta: float = 0.0,
        restore_best: bool = False,
        *,
        min_rel_delta: float = 0.0,
        countdown: bool = False,
        check_finite: bool = True,
    ) -> None:
        check_patience("EarlyStopping", patience)
        if not is_number(min_delta):
            raise TypeError(
                f"EarlyStopping: `min_delta` must be a number; received {type(min_delta).__name__}."
            )
        if not min_delta >= 0:
            raise ValueError(
                f"EarlyStopping: `min_delta` must be zero or positive; received {min_delta!r}."
            )
        self.min_rel_delta = check_rel_delta("EarlyStopping", min_rel_delta)
        self.monitor = monitor
        self.mode = resolve_mode("EarlyStopping", monitor, mode)
        self.patience = patience
        self.patience_epochs: float | None = float(patience) if isinstance(patience, int) else None
        self.min_delta = float(min_delta)
        self.restore_best = restore_best
        self.countdown = bool(countdown)
        self.check_finite = bool(check_finite)
        self.best = initial_best(self.mode)
        self.best_epoch = 0
        self.best_logs: dict[str, float] = {}
        self.wait = 0
        self._best_weights: dict[str, Tensor] | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        """Start counting afresh, unless the run resumes (then the saved counts go on)."""
        self.patience_epochs = resolve_patience(self.patience, trainer.state.max_epochs)
        if trainer.state.resumed:
            return
        self.best, self.best_epoch, self.wait = initial_best(self.mode), 0, 0
        self.best_logs, self._best_weights = {}, None

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Compare this epoch's value with the best; stop when the patience has run out."""
        logs = trainer.state.logs
        value = read_monitored("EarlyStopping", self.monitor, logs)
        if value is None:
            return
        if self.check_finite and not math.isfinite(value):
            best = format_value(self.monitor, self.best) if self.best_epoch else "none yet"
            trainer.request_stop(
                f"{self.monitor} is {value}, not a finite number; the run has diverged "
                f"(best {best} at epoch {self.best_epoch})"
            )
            return
        if improved(value, self.best, self.mode, self.min_delta, self.min_rel_delta):
            self.best, self.best_epoch, self.wait = value, trainer.state.epoch, 0
            self.best_logs = dict(logs)
            if self.restore_best:
                self._best_weights = copy.deepcopy(trainer.model.state_dict())
            return
        self.wait += 1
        if self._exhausted():
            best = format_value(self.monitor, self.best)
            # With a threshold, a later value may be a little better without counting: name
            # the reference for what it is, not "best".
            since = "last counted improvement" if self._by() else "best"
            trainer.request_stop(
                f"early stopping: {self.monitor} did not improve{self._by()} for {self.wait} "
                f"epochs ({since} {best} at epoch {self.best_epoch})"
            )

    def _exhausted(self) -> bool:
        window = self.patience_epochs if self.patience_epochs is not None else math.inf
        if self.countdown:
            # The countdown tests its count before counting the current epoch.
            return self.wait - 1 > window
        return self.wait >= window

    def _by(self) -> str:
        margins = [f"{self.min_delta:g}"] if self.min_delta > 0 else []
        margins += [f"{self.min_rel_delta * 100:g}%"] if self.min_rel_delta > 0 else []
        return f" by more than {' + '.join(margins)}" if margins else ""

    @property
    def remaining(self) -> int | None:
        """Epochs without improvement the run can still take before the one that stops it.

        The auto preset's "N epochs till early stop" with `countdown=True`; `None` before `fit`
        knows a fractional patience.
        """
        if self.patience_epochs is None:
            return None
        if self.countdown:
            return max(math.floor(self.patience_epochs + 1 - self.wait), 0)
        return max(math.ceil(self.patience_epochs) - 1 - self.wait, 0)

    def on_fit_end(self, trainer: Trainer) -> None:
        """Load the best epoch's weights when asked and the last epoch was not the best."""
        weights = self._best_weights
        if self.restore_best and weights is not None and self.best_epoch != trainer.state.epoch:
            trainer.model.load_state_dict(weights)

    def state_dict(self) -> dict[str, Any]:
        """Return the counters and the best value (and weights, with `restore_best`)."""
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "best_logs": self.best_logs,
            "best_weights": self._best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.best = float(state["best"]) if state["best"] is not None else initial_best(self.mode)
        self.best_epoch = int(state["best_epoch"])
        self.wait = int(state["wait"])
        self.best_logs = dict(state.get("best_logs", {}))
        self._best_weights = state["best_weights"]
