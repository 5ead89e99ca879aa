"""`RestartOnPlateau`: give the optimizer a fresh start when the monitored value stalls.

What lives here: when to restart (a plateau of a monitored value, at most once per improvement)
and what a restart does to the optimizer (its state cleared, its hyperparameters back to their
values at the start of `fit`) and to the callbacks (their `restart()` is called). What does not:
learning-rate schedules themselves (`kiln.callbacks.LRScheduler`, which restarts when told) and
stopping the run (`early_stopping.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from kiln.callbacks.base import Callback
from kiln.callbacks.early_stopping import (
    EarlyStopping,
    check_patience,
    check_rel_delta,
    is_number,
    resolve_patience,
)
from kiln.callbacks.monitor import improved, initial_best, read_monitored, resolve_mode
from kiln.callbacks.progress import format_value

if TYPE_CHECKING:
    from kiln.trainer import Trainer

#: The share of the early-stopping window after which the optimizer restarts.
SHARE_OF_EARLY_STOPPING = 0.2


class RestartOnPlateau(Callback):
    """Restart the optimizer when `monitor` has not improved for `patience` epochs.

    A restart makes the optimizer as it was when `fit` started: its state is cleared (momentum
    buffers, Adam's moments and step counts) and every parameter group's hyperparameters (the
    learning rate, momentum, betas, ...) get back their values at the start of `fit` (a torch
    scheduler's `initial_lr`, where it set one). Then `restart()` is called on the optimizer, if
    it has one, and on every callback that has one, such as `kiln.callbacks.LRScheduler`, so
    that the schedule starts over too. There is at most one restart per improvement: the next
    waits until the value has improved again. Put it after the LR scheduler callback in the
    list, so that a restarted schedule is not stepped with the epoch that caused the restart.

    Arguments left unset (None) are taken from the trainer's `EarlyStopping`, so that both agree
    on what progress is; `patience` is then 20% of its window: the optimizer is restarted after a
    fifth of the early-stopping countdown has passed. With the schedule and the early stopping::

        callbacks=[scheduler, RestartOnPlateau(),
                   EarlyStopping(patience=0.2, min_rel_delta=0.005, countdown=True)]

    Compatibility: PytorchTrainer's `with_restarts`, rule for rule.

    Args:
        patience: Epochs without improvement before a restart: an int, a float in (0, 1) for
            that fraction of the epochs the run goes to, or None for 20% of the early-stopping
            window.
        monitor: The logged value to watch (else the `EarlyStopping`'s, else `"val_loss"`).
        mode: `"min"`, `"max"` or `"auto"` (else the `EarlyStopping`'s, else `"auto"`).
        min_delta: The smallest change that counts as an improvement (else the
            `EarlyStopping`'s, else 0).
        min_rel_delta: The smallest change as a fraction of the best (likewise).
        countdown: Restart once the epochs without improvement before the current one reach
            `patience` (likewise; see `EarlyStopping`).
        verbose: Print a line at each restart.

    After a run, `restarts` lists the epochs (1-based) at whose end the optimizer was restarted;
    it carries on across a resume, with the counters.

    Raises:
        TypeError: For arguments of the wrong type; ValueError for bad values, and at the start
            of `fit` when `patience` is unset and there is no single `EarlyStopping` to take it
            from.

    Example:
        >>> import torch, kiln
        >>> from kiln.callbacks import EarlyStopping
        >>> X, Y = torch.randn(32, 3), torch.randn(32, 1)
        >>> restarts = RestartOnPlateau(verbose=False)
        >>> stopper = EarlyStopping(patience=0.2, min_rel_delta=0.005, countdown=True)
        >>> trainer = kiln.Trainer(torch.nn.Linear(3, 1), loss="mse", device="cpu",
        ...                        callbacks=[restarts, stopper], progress=False)
        >>> history = trainer.fit((X, Y), val=(X, Y), epochs=10)
        >>> restarts.patience_epochs  # 20% of the early-stopping window, 0.2 * 10 epochs
        0.4
        >>> restarts.monitor, restarts.min_rel_delta, restarts.countdown
        ('val_loss', 0.005, True)
    """

    def __init__(
        self,
        patience: float | None = None,
        *,
        monitor: str | None = None,
        mode: str | None = None,
        min_delta: float | None = None,
        min_rel_delta: float | None = None,
        countdown: bool | None = None,
        verbose: bool = True,
    ) -> None:
        owner = "RestartOnPlateau"
        if patience is not None:
            check_patience(owner, patience)
        if monitor is not None and not isinstance(monitor, str):
            raise TypeError(
                f"{owner}: `monitor` must be a logged name such as 'val_loss'; received "
                f"{type(monitor).__name__}."
            )
        if mode not in (None, "auto", "min", "max"):
            raise ValueError(f"{owner}: `mode` must be 'auto', 'min' or 'max'; received {mode!r}.")
        if min_delta is not None:
            if not is_number(min_delta):
                raise TypeError(
                    f"{owner}: `min_delta` must be a number; received {type(min_delta).__name__}."
                )
            if not min_delta >= 0:
                raise ValueError(
                    f"{owner}: `min_delta` must be zero or positive; received {min_delta!r}."
                )
        if min_rel_delta is not None:
            check_rel_delta(owner, min_rel_delta)
        self._given: dict[str, Any] = {
            "monitor": monitor,
            "mode": mode,
            "min_delta": min_delta,
            "min_rel_delta": min_rel_delta,
            "countdown": countdown,
        }
        self.patience = patience
        self.verbose = verbose
        # Resolved when `fit` starts (from the arguments, else from the EarlyStopping).
        self.monitor: str | None = monitor
        self.mode: str | None = None
        self.min_delta, self.min_rel_delta, self.countdown = 0.0, 0.0, False
        self.patience_epochs: float | None = None
        # The run's state: saved in checkpoints.
        self.best, self.best_epoch, self.wait = initial_best("min"), 0, 0
        self.restarted = False  # restarted since the last improvement
        self.restarts: list[int] = []
        self._initial: list[dict[str, Any]] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        """Settle what to watch; record the optimizer's hyperparameters (unless resuming)."""
        self._resolve(trainer)
        if trainer.state.resumed:
            return  # the counters and the initial hyperparameters come from the checkpoint
        self.best, self.best_epoch, self.wait = initial_best(self.mode or "min"), 0, 0
        self.restarted, self.restarts = False, []
        self._initial = [_hyperparameters(group) for group in _optimizer(trainer).param_groups]

    def _resolve(self, trainer: Trainer) -> None:
        given = self._given
        stopper = self._find_stopper(trainer)

        def pick(name: str, default: Any) -> Any:
            if given[name] is not None:
                return given[name]
            return getattr(stopper, name) if stopper is not None else default

        self.monitor = pick("monitor", "val_loss")
        self.mode = resolve_mode("RestartOnPlateau", self.monitor, pick("mode", "auto"))
        self.min_delta = float(pick("min_delta", 0.0))
        self.min_rel_delta = float(pick("min_rel_delta", 0.0))
        self.countdown = bool(pick("countdown", False))
        max_epochs = trainer.state.max_epochs
        if self.patience is not None:
            self.patience_epochs = resolve_patience(self.patience, max_epochs)
        elif stopper is not None:
            window = resolve_patience(stopper.patience, max_epochs)
            self.patience_epochs = SHARE_OF_EARLY_STOPPING * window

    def _find_stopper(self, trainer: Trainer) -> EarlyStopping | None:
        stoppers = [cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping)]
        if self._given["monitor"] is not None and len(stoppers) > 1:
            stoppers = [cb for cb in stoppers if cb.monitor == self._given["monitor"]]
        if len(stoppers) == 1:
            return stoppers[0]
        if self.patience is None:
            found = "no EarlyStopping" if not stoppers else f"{len(stoppers)} EarlyStopping"
            raise ValueError(
                f"RestartOnPlateau(patience=None) restarts after 20% of the early-stopping "
                f"window, but the trainer has {found} callbacks to take it from. Add one "
                "EarlyStopping, or pass `patience=` (epochs, or a fraction of the run's epochs)."
            )
        return None

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Count the epochs without improvement; restart when there are enough of them."""
        monitor, mode = self.monitor or "val_loss", self.mode or "min"
        value = read_monitored("RestartOnPlateau", monitor, trainer.state.logs)
        if value is None:
            return
        if improved(value, self.best, mode, self.min_delta, self.min_rel_delta):
            self.best, self.best_epoch, self.wait = value, trainer.state.epoch, 0
            self.restarted = False
            return
        self.wait += 1
        # The countdown tests its count before counting the current epoch.
        counted = self.wait - 1 if self.countdown else self.wait
        patience = self.patience_epochs if self.patience_epochs is not None else float("inf")
        if not self.restarted and counted >= patience:
            self._restart(trainer)

    def _restart(self, trainer: Trainer) -> None:
        """Restart the optimizer, then every other callback (and optimizer) with `restart()`."""
        optimizer = _optimizer(trainer)
        optimizer.state.clear()  # a new optimizer has no moments, buffers or step counts
        # Groups added during the run (none usually) keep their values.
        for group, initial in zip(optimizer.param_groups, self._initial, strict=False):
            for key, value in initial.items():
                if isinstance(group.get(key), torch.Tensor):
                    group[key].copy_(torch.as_tensor(value))  # in place, as torch schedulers do
                else:
                    group[key] = value
        for target in (optimizer, *trainer.callbacks):
            method = getattr(target, "restart", None)
            if callable(method):
                method()
        self.restarted = True
        self.restarts.append(trainer.state.epoch)
        if self.verbose:
            best = format_value(self.monitor or "", self.best)
            lr = format_value("lr", float(optimizer.param_groups[0]["lr"]))
            print(
                f"Epoch {trainer.state.epoch}: restarted the optimizer ({self.monitor} did not "
                f"improve for {self.wait} epochs, best {best} at epoch {self.best_epoch}); "
                f"{lr}",
                flush=True,
            )

    def state_dict(self) -> dict[str, Any]:
        """Return the counters, the restarts so far and the optimizer's initial values."""
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "restarted": self.restarted,
            "restarts": list(self.restarts),
            "initial": [dict(group) for group in self._initial],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.wait = int(state["wait"])
        self.restarted = bool(state["restarted"])
        self.restarts = [int(epoch) for epoch in state["restarts"]]
        self._initial = [dict(group) for group in state["initial"]]


def _optimizer(trainer: Trainer) -> torch.optim.Optimizer:
    if trainer.optimizer is None:  # fit refuses to start without one; tells the type checker
        raise RuntimeError("RestartOnPlateau needs a trainer with an optimizer")
    return trainer.optimizer


def _hyperparameters(group: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a parameter group (not its parameters or flags), as a restart restores."""
    values: dict[str, Any] = {}
    for key, value in group.items():
        if key == "params":
            continue
        if isinstance(value, torch.Tensor):
            values[key] = value.detach().clone()
        elif is_number(value) or (isinstance(value, tuple) and all(map(is_number, value))):
            values[key] = value
    if "initial_lr" in values:  # a torch scheduler has already moved `lr` from its start
        values["lr"] = values["initial_lr"]
    return values
