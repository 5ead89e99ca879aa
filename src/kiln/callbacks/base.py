"""The `Callback` base class: one no-op method per event, all with the same signature."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from kiln.trainer import Trainer


class Callback:
    """Code to run at the events of a run; override the `on_<event>` methods you need.

    Every method takes the trainer alone: what a callback may want to know is in
    `trainer.state` (counters, the current batch and output, the epoch's logs), `trainer.model`,
    `trainer.optimizer` and `trainer.history`. To end the run, call
    `trainer.request_stop(reason)`. Methods left as they are here are never called, so an
    unused event costs nothing. Callbacks with state worth resuming implement `state_dict` and
    `load_state_dict`. See `kiln.Event` for when each event fires.

    Example:
        >>> import kiln
        >>> class PrintLoss(kiln.Callback):
        ...     def on_epoch_end(self, trainer):
        ...         print(trainer.state.epoch, round(trainer.state.logs["loss"], 3))
    """

    #: Under `torchrun`, True runs the callback on rank 0 only (it prints or writes files).
    main_process_only: ClassVar[bool] = False

    def on_fit_start(self, trainer: Trainer) -> None:
        """Called once when `fit` starts, before the first epoch."""

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        """Called before each epoch's training pass."""

    def on_train_batch_start(self, trainer: Trainer) -> None:
        """Called before each training batch; `trainer.state.batch` is on the device."""

    def on_before_optimizer_step(self, trainer: Trainer) -> None:
        """Called after backward, before the optimizer step: gradients are ready."""

    def on_train_batch_end(self, trainer: Trainer) -> None:
        """Called after each training batch; `trainer.state.output` holds its output."""

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        """Called after each training pass; `trainer.state.logs` holds its values."""

    def on_validation_start(self, trainer: Trainer) -> None:
        """Called before each validation pass."""

    def on_validation_batch_end(self, trainer: Trainer) -> None:
        """Called after each validation batch."""

    def on_validation_end(self, trainer: Trainer) -> None:
        """Called after each validation pass; `val_` values are in `trainer.state.logs`."""

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Called at the end of each epoch, when its logs are complete and in the history."""

    def on_exception(self, trainer: Trainer) -> None:
        """Called when the run raises; `trainer.state.error` holds the exception."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """Called once when `fit` ends, also after an exception or a stop."""

    def state_dict(self) -> dict[str, Any]:
        """Return the state to save in a checkpoint (nothing by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by `state_dict`."""
