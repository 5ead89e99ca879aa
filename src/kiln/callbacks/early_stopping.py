"""`EarlyStopping`: stop when a monitored value stops improving."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from kiln.callbacks.base import Callback
from kiln.callbacks.monitor import improved, initial_best, resolve_mode
from kiln.callbacks.progress import format_value

if TYPE_CHECKING:
    from torch import Tensor

    from kiln.trainer import Trainer


class EarlyStopping(Callback):
    """Stop training when `monitor` has not improved for `patience` epochs.

    A value improves when it beats the best so far by more than `min_delta` (lower for "min",
    higher for "max"). Epochs without the value (a validation that did not run) do not count.

    Args:
        monitor: The logged name to watch, such as `"val_loss"` or `"val_accuracy"`.
        mode: `"min"`, `"max"`, or `"auto"` to read it from the name (losses and errors are
            minimized; accuracies and scores maximized).
        patience: Epochs without improvement before stopping.
        min_delta: The smallest change that counts as an improvement.
        restore_best: At the end of `fit`, load the weights of the best epoch (kept in memory).

    After a run, `best`, `best_epoch` and `best_logs` (all values of the best epoch) tell what
    was best.

    Example:
        >>> import kiln
        >>> stopper = kiln.callbacks.EarlyStopping("val_accuracy", patience=3, restore_best=True)
        >>> stopper.mode
        'max'
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "auto",
        patience: int = 5,
        min_delta: float = 0.0,
        restore_best: bool = False,
    ) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(
                f"EarlyStopping: `patience` must be a positive integer; received {patience!r}."
            )
        if not min_delta >= 0:
            raise ValueError(
                f"EarlyStopping: `min_delta` must be zero or positive; received {min_delta!r}."
            )
        self.monitor = monitor
        self.mode = resolve_mode("EarlyStopping", monitor, mode)
        self.patience = patience
        self.min_delta = float(min_delta)
        self.restore_best = restore_best
        self.best = initial_best(self.mode)
        self.best_epoch = 0
        self.best_logs: dict[str, float] = {}
        self.wait = 0
        self._best_weights: dict[str, Tensor] | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        """Start counting afresh, unless the run resumes (then the saved counts go on)."""
        if trainer.state.resumed:
            return
        self.best, self.best_epoch, self.wait = initial_best(self.mode), 0, 0
        self.best_logs, self._best_weights = {}, None

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Compare this epoch's value with the best; stop after `patience` epochs without."""
        logs = trainer.state.logs
        if self.monitor not in logs:
            if self.monitor.startswith("val_") and not any(k.startswith("val_") for k in logs):
                return  # no validation this epoch
            raise ValueError(
                f"EarlyStopping(monitor={self.monitor!r}) names a value that is not logged. "
                f"Logged values: {', '.join(sorted(logs))}."
            )
        value = logs[self.monitor]
        if improved(value, self.best, self.mode, self.min_delta):
            self.best, self.best_epoch, self.wait = value, trainer.state.epoch, 0
            self.best_logs = dict(logs)
            if self.restore_best:
                self._best_weights = copy.deepcopy(trainer.model.state_dict())
            return
        self.wait += 1
        if self.wait >= self.patience:
            by = f" by more than {self.min_delta:g}" if self.min_delta > 0 else ""
            best = format_value(self.monitor, self.best)
            trainer.request_stop(
                f"early stopping: {self.monitor} did not improve{by} for {self.patience} epochs "
                f"(best {best} at epoch {self.best_epoch})"
            )

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
