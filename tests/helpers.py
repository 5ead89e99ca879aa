"""Helpers shared by tests in several folders."""

from __future__ import annotations

import warnings

import kiln
from kiln.callbacks import PlotLogs


def without_plots(trainer: kiln.Trainer) -> kiln.Trainer:
    """Drop the plots an experiment directory draws at the end of `fit` (slow in tests).

    The trainer warns that a callback it added is gone: that is what is wanted here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        trainer.callbacks = [cb for cb in trainer.callbacks if not isinstance(cb, PlotLogs)]
    return trainer


class SimulatedCrashError(Exception):
    """Stands for the process dying."""


class CrashAtStep(kiln.Callback):
    """Raises `SimulatedCrashError` at the end of the batch that completes optimizer step `step`."""

    def __init__(self, step: int | None) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: kiln.Trainer) -> None:
        if trainer.state.step == self.step:
            raise SimulatedCrashError(f"crash after step {self.step}")
