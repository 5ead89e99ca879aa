"""Callbacks: objects called at the events of a run.

What lives here: the `Callback` base class, its dispatch, and the built-in callbacks, one file
each. What does not: the events themselves (`kiln.events`).
"""

from kiln.callbacks.base import Callback
from kiln.callbacks.best_models import BestModels
from kiln.callbacks.checkpoint import Checkpoint
from kiln.callbacks.csv_logger import CSVLogger
from kiln.callbacks.early_stopping import EarlyStopping
from kiln.callbacks.plot_logs import PlotLogs
from kiln.callbacks.progress import ProgressBar
from kiln.callbacks.step_checkpoint import StepCheckpoint
from kiln.callbacks.text_log import TextLog

__all__ = [
    "BestModels",
    "CSVLogger",
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "PlotLogs",
    "ProgressBar",
    "StepCheckpoint",
    "TextLog",
]
