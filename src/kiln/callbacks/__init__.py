"""Callbacks: objects called at the events of a run.

What lives here: the `Callback` base class, its dispatch, and the built-in callbacks, one file
each. What does not: the events themselves (`kiln.events`).
"""

from kiln.callbacks.base import Callback
from kiln.callbacks.early_stopping import EarlyStopping
from kiln.callbacks.progress import ProgressBar
from kiln.callbacks.step_checkpoint import StepCheckpoint

__all__ = ["Callback", "EarlyStopping", "ProgressBar", "StepCheckpoint"]
