"""Helpers for testing code built on kiln: `EventRecorder` records the events of a run.

What lives here: public helpers that tests of kiln and of users' callbacks share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.callbacks.base import Callback

if TYPE_CHECKING:
    from kiln.trainer import Trainer


class EventRecorder(Callback):
    """Record `(event, epoch, step, batch_idx)` at every event of a run.

    Example:
        >>> import torch, kiln
        >>> from kiln.testing import EventRecorder
        >>> recorder = EventRecorder()
        >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", callbacks=[recorder],
        ...                        device="cpu", progress=False)
        >>> _ = trainer.fit((torch.randn(4, 2), torch.randn(4, 1)), epochs=1, batch_size=4)
        >>> [name for name, *_ in recorder.events][:3]
        ['fit_start', 'train_epoch_start', 'train_batch_start']
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, int, int, int]] = []

    def _record(self, name: str, trainer: Trainer) -> None:
        state = trainer.state
        self.events.append((name, state.epoch, state.step, state.batch_idx))

    def on_fit_start(self, trainer: Trainer) -> None:  # noqa: D102
        self._record("fit_start", trainer)

    def on_train_epoch_start(self, trainer: Trainer) -> None:  # noqa: D102
        self._record("train_epoch_start", trainer)

    def on_train_batch_start(self, trainer: Trainer) -> None:  # noqa: D102
        self._record("train_batch_start", trainer)

    def on_before_optimizer_step(self, trainer: Trainer) -> None:  # noqa: D102
        self._record("before_optimizer_step", trainer)

    def on_train_batch_end(self, trainer: Trainer) -> None:  # noqa: D102
        self._record("train_batch_end", trainer)

    def on_train_epoch_end(self, trainer: Trainer) -> None:  # noqa: D102
        self._record("train_epoch_end", trainer)

    def on_validation_start(self, trainer: Trainer) -> None:  # noqa: D102
        self._record("validation_start", trainer)

    def on_validation_batch_end(self, trainer: Trainer) -> None:  # noqa: D102
        self._record("validation_batch_end", trainer)

    def on_validation_end(self, trainer: Trainer) -> None:  # noqa: D102
        self._record("validation_end", trainer)

    def on_epoch_end(self, trainer: Trainer) -> None:  # noqa: D102
        self._record("epoch_end", trainer)

    def on_exception(self, trainer: Trainer) -> None:  # noqa: D102
        self._record("exception", trainer)

    def on_fit_end(self, trainer: Trainer) -> None:  # noqa: D102
        self._record("fit_end", trainer)
