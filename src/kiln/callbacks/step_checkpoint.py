"""`StepCheckpoint`: save the whole run in the middle of epochs, so long epochs can resume."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from kiln.callbacks.base import Callback
from kiln.checkpoint import run as checkpoints
from kiln.distributed.context import world_size

if TYPE_CHECKING:
    from kiln.trainer import Trainer


class StepCheckpoint(Callback):
    """Save the trainer's whole state to `dir/last.ckpt` every N steps or every T seconds.

    A trainer with `dir` already saves after every epoch; this adds saves inside epochs, so that
    a run killed in the middle of a long epoch loses at most N steps (or T seconds) of work.
    `fit(..., resume=True)` then continues from that batch and, on the CPU, ends bit for bit
    where the uninterrupted run ends: the checkpoint holds the position in the data order, the
    sums of the epoch's loss and metrics so far, and every random generator.

    Put it last in the callback list: it saves at `train_batch_end`, and callbacks after it
    would not have handled that batch yet in the saved state.

    For a `DataLoader`, resuming iterates (loads and discards) the batches the epoch had already
    done, to reproduce its order and random draws; a `kiln.Data` jumps to its batch directly.

    Args:
        every_n_steps: Save after every this many optimizer steps.
        every_seconds: Save when this many seconds have passed since the last save (or since
            `fit` started).

    Example:
        >>> import kiln
        >>> saver = kiln.callbacks.StepCheckpoint(every_n_steps=500, every_seconds=600)
        >>> saver.every_n_steps, saver.every_seconds
        (500, 600.0)
    """

    def __init__(
        self, every_n_steps: int | None = None, every_seconds: float | None = None
    ) -> None:
        if every_n_steps is None and every_seconds is None:
            raise ValueError(
                "StepCheckpoint needs `every_n_steps` or `every_seconds` (or both); received "
                "neither. Example: `StepCheckpoint(every_n_steps=1000)`."
            )
        if every_n_steps is not None and (
            isinstance(every_n_steps, bool)
            or not isinstance(every_n_steps, int)
            or every_n_steps < 1
        ):
            raise ValueError(
                f"StepCheckpoint: `every_n_steps` must be a positive integer; received "
                f"{every_n_steps!r}."
            )
        if every_seconds is not None and not every_seconds > 0:
            raise ValueError(
                f"StepCheckpoint: `every_seconds` must be a positive number; received "
                f"{every_seconds!r}."
            )
        self.every_n_steps = every_n_steps
        self.every_seconds = None if every_seconds is None else float(every_seconds)
        self._next_save_time = float("inf")
        self._saved_step = -1

    def on_fit_start(self, trainer: Trainer) -> None:
        """Check that there is a directory to save to, and start the clock."""
        if trainer.dir is None:
            raise ValueError(
                "StepCheckpoint saves to the trainer's experiment directory, but this trainer "
                "has none: create it with `Trainer(..., dir='runs/name')`."
            )
        if self.every_seconds is not None and world_size() > 1:
            raise ValueError(
                "StepCheckpoint(every_seconds=...) cannot run under torchrun: every rank must "
                "save at the same step, and their clocks differ. Use `every_n_steps`."
            )
        if self.every_seconds is not None:
            self._next_save_time = time.monotonic() + self.every_seconds
        self._saved_step = trainer.state.step  # saved already, or the start of the run

    def on_train_batch_end(self, trainer: Trainer) -> None:
        """Save when N steps or T seconds have passed."""
        step = trainer.state.step
        # With gradient accumulation the step count stays put for a group's batches: once.
        by_steps = self.every_n_steps is not None and step % self.every_n_steps == 0
        by_steps = by_steps and step != self._saved_step
        if trainer.dir is None or (not by_steps and time.monotonic() < self._next_save_time):
            return
        checkpoints.save_last(trainer, trainer.dir)
        self._saved_step = step
        if self.every_seconds is not None:
            self._next_save_time = time.monotonic() + self.every_seconds
