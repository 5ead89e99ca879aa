"""Callbacks: objects called at the events of a run.

What lives here: the `Callback` base class, its dispatch, and the built-in callbacks, one file
each. What does not: the events themselves (`kiln.events`).
"""

from kiln.callbacks.base import Callback
from kiln.callbacks.best_average import BestAverage
from kiln.callbacks.best_models import BestModels
from kiln.callbacks.checkpoint import Checkpoint
from kiln.callbacks.csv_logger import CSVLogger
from kiln.callbacks.early_stopping import EarlyStopping
from kiln.callbacks.lr_monitor import LRMonitor
from kiln.callbacks.lr_scheduler import LRScheduler, golden_ratio_decay
from kiln.callbacks.mlflow_logger import MLflowLogger
from kiln.callbacks.optuna_pruning import OptunaPruning
from kiln.callbacks.plot_logs import PlotLogs
from kiln.callbacks.progress import ProgressBar
from kiln.callbacks.restarts import RestartOnPlateau
from kiln.callbacks.step_checkpoint import StepCheckpoint
from kiln.callbacks.stop_file import StopFile
from kiln.callbacks.swa import SWA
from kiln.callbacks.tensorboard import TensorBoard
from kiln.callbacks.text_log import TextLog
from kiln.callbacks.training_plot import TrainingPlot
from kiln.callbacks.wandb_logger import WandbLogger
from kiln.callbacks.weight_averaging import EMA, WeightAverage

__all__ = [
    "EMA",
    "SWA",
    "BestAverage",
    "BestModels",
    "CSVLogger",
    "Callback",
    "Checkpoint",
    "EarlyStopping",
    "LRMonitor",
    "LRScheduler",
    "MLflowLogger",
    "OptunaPruning",
    "PlotLogs",
    "ProgressBar",
    "RestartOnPlateau",
    "StepCheckpoint",
    "StopFile",
    "TensorBoard",
    "TextLog",
    "TrainingPlot",
    "WandbLogger",
    "WeightAverage",
    "golden_ratio_decay",
]
