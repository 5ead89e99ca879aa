"""`OptunaPruning`: report a monitored value to an Optuna trial each epoch, and prune the run.

Optuna is an optional dependency (`pip install 'kiln[optuna]'`), imported when the callback is
built. What lives here: the callback. What does not: the study, the sampler and the pruner,
which are Optuna's, and the monitored value, which the trainer puts in `trainer.state.logs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kiln.callbacks.base import Callback
from kiln.callbacks.dispatch import call_hook
from kiln.callbacks.monitor import read_monitored

if TYPE_CHECKING:
    from kiln.trainer import Trainer

#: The user attribute of the trial that records the epoch at which it was pruned.
PRUNED_ATTR = "kiln_pruned_epoch"


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError as error:
        raise ImportError(
            f"OptunaPruning needs the optuna package ({error}). Install it with "
            "`pip install 'kiln[optuna]'` (or `pip install optuna`)."
        ) from error
    return optuna


def _reported_steps(trial: Any) -> set[int]:
    """Return the steps `trial` already holds a value for (none for a `FixedTrial`)."""
    study = getattr(trial, "study", None)
    if study is None:
        return set()
    for frozen in study.get_trials(deepcopy=False):
        if frozen.number == trial.number:
            return set(frozen.intermediate_values)
    return set()


class OptunaPruning(Callback):
    """Report `monitor` to an Optuna trial after each epoch, and prune the trial when told to.

    Each epoch's value is reported with `trial.report(value, step=epoch)` (epochs count from
    1, as in `trainer.history`); an epoch without the value (no validation that epoch) reports
    nothing. When `trial.should_prune()` says so, the run stops as with `trainer.request_stop`:
    the epoch is logged and saved like any other, every callback's `on_fit_end` runs, and then
    `fit` raises `optuna.TrialPruned`, which `study.optimize` records as the trial's `PRUNED`
    state (the way Optuna's own integrations end a pruned trial). The trial's user attribute
    `kiln_pruned_epoch` holds the epoch, and the callback's `pruned_epoch` too.

    Resuming: a trial's run directory (`Trainer(dir=...)`, one per trial, such as
    `f"runs/trial_{trial.number}"`) resumes with `fit(..., resume=True)` like any run. Each
    epoch is reported once: an epoch the trial already holds (reported by the interrupted run
    after its last checkpoint) is not reported again, and a resumed run reported to another
    trial (one that retries the interrupted one) first reports the epochs of the saved history
    that trial lacks, then asks the pruner. A pruned run stays pruned: resuming it raises
    `optuna.TrialPruned` again without training.

    A monitor that is never logged fails on the first batch, as for `EarlyStopping`. Under
    `torchrun`, rank 0 reports, and its stop stops every rank.

    Args:
        trial: The `optuna.trial.Trial` the objective function received (or a `FixedTrial`).
        monitor: The logged value to report, such as `"val_loss"` or `"val_accuracy"`; the
            study's direction says whether lower or higher is better.

    Raises:
        TypeError: If `trial` is not an Optuna trial, or `monitor` not a string.

    Example:
        >>> import optuna, torch, kiln
        >>> def objective(trial):
        ...     trainer = kiln.Trainer(torch.nn.Linear(4, 1), loss="mse", device="cpu",
        ...                            lr=trial.suggest_float("lr", 1e-3, 1e-1, log=True),
        ...                            callbacks=[OptunaPruning(trial, "val_loss")],
        ...                            progress=False)
        ...     history = trainer.fit((torch.randn(32, 4), torch.randn(32, 1)), val=0.25, epochs=3)
        ...     return history.val_loss[-1]
        >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
        >>> study = optuna.create_study(pruner=optuna.pruners.MedianPruner())
        >>> study.optimize(objective, n_trials=2)
        >>> sorted(study.trials[0].intermediate_values)  # one value per epoch
        [1, 2, 3]
    """

    #: Under torchrun, runs on rank 0 only: one process reports to the trial.
    main_process_only = True

    def __init__(self, trial: Any, monitor: str = "val_loss") -> None:
        optuna = _import_optuna()
        if not isinstance(trial, optuna.trial.BaseTrial):
            raise TypeError(
                "OptunaPruning: `trial` must be the optuna.trial.Trial that the objective "
                f"function receives; received {type(trial).__name__}."
            )
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(
                "OptunaPruning: `monitor` must be the name of a logged value, such as "
                f"'val_loss'; received {monitor!r}."
            )
        self.trial = trial
        self.monitor = monitor
        #: The epoch at which the trial was pruned, or None.
        self.pruned_epoch: int | None = None
        self._reported: set[int] = set()

    def on_fit_start(self, trainer: Trainer) -> None:
        """Read what the trial holds; on a resume, report the epochs it lacks."""
        self._reported = _reported_steps(self.trial)
        if self.pruned_epoch is not None:  # a pruned trial stays pruned
            trainer.request_stop(self._reason(self.pruned_epoch))
            return
        if not (trainer.state.resumed or trainer.state.epoch > 0):
            return
        reported = False
        for number, logs in enumerate(trainer.history.epochs, 1):
            epoch = int(logs.get("epoch", number))
            if self.monitor in logs and epoch not in self._reported:
                reported = self._report(float(logs[self.monitor]), epoch) or reported
        if reported and self.trial.should_prune():
            self._prune(trainer, trainer.state.epoch)

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Report the epoch's value; stop the run when the trial should be pruned."""
        value = read_monitored("OptunaPruning", self.monitor, trainer.state.logs)
        if value is None or self.pruned_epoch is not None:
            return
        epoch = trainer.state.epoch
        if self._report(value, epoch) and self.trial.should_prune():
            self._prune(trainer, epoch)

    def _report(self, value: float, epoch: int) -> bool:
        """Report `value` at `epoch` unless the trial holds it already; tell whether it did."""
        if epoch in self._reported:
            return False
        self.trial.report(value, step=epoch)
        self._reported.add(epoch)
        return True

    def _prune(self, trainer: Trainer, epoch: int) -> None:
        self.pruned_epoch = epoch
        self.trial.set_user_attr(PRUNED_ATTR, epoch)
        trainer.request_stop(self._reason(epoch))

    def _reason(self, epoch: int) -> str:
        return f"Optuna pruned trial {self.trial.number} at epoch {epoch} ({self.monitor})"

    def on_fit_end(self, trainer: Trainer) -> None:
        """Raise `optuna.TrialPruned` for a pruned trial, once the other callbacks have ended.

        kiln calls `on_fit_end` in list order and an exception ends the round, so the
        callbacks listed after this one end first, as they would after any stop.
        """
        if self.pruned_epoch is None or trainer.state.error is not None:
            return
        callbacks = list(trainer.callbacks)
        after = callbacks[callbacks.index(self) + 1 :] if self in callbacks else []
        call_hook(after, "on_fit_end", trainer)
        raise _import_optuna().TrialPruned(self._reason(self.pruned_epoch))

    def state_dict(self) -> dict[str, Any]:
        """Return the epoch at which the trial was pruned (None if it was not)."""
        return {"pruned_epoch": self.pruned_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        pruned = state.get("pruned_epoch")
        self.pruned_epoch = None if pruned is None else int(pruned)
