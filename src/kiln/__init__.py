"""kiln trains PyTorch models: fast, exact, resumable, easy to read.

The public API is exactly `__all__` below (and the `__all__` of `kiln.callbacks`,
`kiln.metrics` and `kiln.optim`).

Example:
    >>> import torch, kiln
    >>> X, Y = torch.randn(100, 4), torch.randint(0, 2, (100,))
    >>> trainer = kiln.Trainer(kiln.MLP(4, [8], 2), loss="cross_entropy", metrics=["accuracy"],
    ...                        device="cpu", progress=False)
    >>> history = trainer.fit((X, Y), val=0.2, epochs=3)
    >>> len(history)
    3
"""

from kiln import callbacks, distributed, metrics, optim, presets
from kiln.callbacks import Callback
from kiln.data import Data, loader, repeat, split
from kiln.distributed.launch import launch
from kiln.estimator import Estimator
from kiln.events import Event
from kiln.history import Evaluation, History
from kiln.loop.step_methods import StepOutput
from kiln.modules import MLP
from kiln.options import LoopOptions
from kiln.presets import AutoTrainer
from kiln.saving.recipe import build
from kiln.seed import seed_everything
from kiln.state import TrainState
from kiln.tools.lr_finder import LRFinderResult, lr_find
from kiln.tools.summary import ModelSummary, summary
from kiln.trainer import Trainer, load

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "AutoTrainer",
    "ModelSummary",
    "Callback",
    "Data",
    "Estimator",
    "Evaluation",
    "Event",
    "History",
    "LRFinderResult",
    "LoopOptions",
    "StepOutput",
    "TrainState",
    "Trainer",
    "__version__",
    "build",
    "callbacks",
    "distributed",
    "launch",
    "load",
    "loader",
    "lr_find",
    "metrics",
    "optim",
    "presets",
    "repeat",
    "seed_everything",
    "split",
    "summary",
]
