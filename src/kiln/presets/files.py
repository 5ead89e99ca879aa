"""The auto preset's files, `{name}.pt` and `{name}_avg.pt`: weights, recipe and criterion.

A file holds tensors and plain data only, read back with `torch.load(weights_only=True)`, so
reading it runs no code and it does not depend on the code that wrote it:

    {"format": "kiln-auto", "epoch": e, "logs": {...}, "model": state_dict,
     "recipe": {"kind", "target", "args", "kwargs", "problem"},   # kiln.saving.recipe
     "criterion": MixedCriterion.state_dict() or None}

The recipe records the builder's import path and arguments, so `AutoTrainer.load(name)` can
build the network again (a builder *function* is only called when passed in, never looked up
from the file). A file holds a `"model"` weights dict, so `kiln.load(path, model=...)` and
`kiln.checkpoint.weights.load_weights` read it too.

What lives here: the record, reading it with clear errors, and the two callbacks that write it
(`SaveBest` on every improvement, `SaveAverage` after best-N averaging). What does not: safe
writing (`kiln.checkpoint.files`) and the averaging itself (`kiln.callbacks.BestAverage`).

Compatibility: PytorchTrainer's file names and when each is written.
"""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from kiln.callbacks.base import Callback
from kiln.callbacks.best_average import BestAverage
from kiln.callbacks.monitor import read_monitored
from kiln.checkpoint.files import (
    CheckpointError,
    atomic_save,
    remove_leftover_temporaries,
    safe_load,
)
from kiln.checkpoint.weights import WEIGHTS_FORMAT
from kiln.saving.recipe import LoadHints, recipe_of
from kiln.saving.trainer_file import SAVED_TRAINER

if TYPE_CHECKING:
    from kiln.trainer import Trainer

#: The value of the "format" key of an auto preset file.
AUTO_FORMAT = "kiln-auto"
#: How messages name what `AutoTrainer.load` takes instead of what a file cannot choose: a
#: builder class or function passed as `builder=` (called with the recorded arguments).
AUTO_LOAD = LoadHints(
    model="AutoTrainer(net, ...).load(name)",
    builder="AutoTrainer.load(name, builder={name})",
    classes="AutoTrainer.load(name, builder={name})",
)


def model_file(name: str | os.PathLike[str], suffix: str = "") -> Path:
    """The file of run `name`: `{name}.pt`, or `{name}_avg.pt` with `suffix="_avg"`.

    A name that already ends in `.pt` is the file itself.

    Example:
        >>> str(model_file("digits")), str(model_file("runs/digits", "_avg"))
        ('digits.pt', 'runs/digits_avg.pt')
    """
    text = os.fspath(name)
    if text.endswith(".pt") and not suffix:
        return Path(text)
    return Path(f"{text}{suffix}.pt")


def auto_record(
    model: nn.Module, criterion: Any, epoch: int | None = None, logs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return what an auto preset file holds (see the module's docstring).

    Example:
        >>> import kiln
        >>> record = auto_record(kiln.MLP(2, [4], 1), None, epoch=3)
        >>> record["format"], record["recipe"]["target"], record["criterion"]
        ('kiln-auto', 'kiln:MLP', None)
    """
    state = getattr(criterion, "state_dict", None)
    return {
        "format": AUTO_FORMAT,
        "epoch": epoch,
        "logs": dict(logs or {}),
        "model": model.state_dict(),
        "recipe": recipe_of(model),
        "criterion": state() if callable(state) else None,
    }


def _file_kind(content: Any) -> str:
    """Name the kind of kiln file `content` was read from, for messages."""
    if not isinstance(content, dict):
        return f"a file holding a {type(content).__name__}"
    if content.get("kiln") == SAVED_TRAINER:
        return "a trainer written by `Trainer.save()`"
    if {"format", "model", "optimizer", "state"} <= set(content):
        return "a checkpoint of a run (such as `last.ckpt`)"
    if content.get("format") == WEIGHTS_FORMAT:
        return "a weights file"
    if content and all(isinstance(value, Tensor) for value in content.values()):
        return "a bare `state_dict`"
    return "another kind of file"


def read_auto_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an auto preset file without running code from it.

    Raises:
        FileNotFoundError: If there is no such file (the message says which names exist).
        CheckpointError: If the file is damaged (empty, truncated, a directory, a part missing
            or of the wrong kind) or is not an auto preset file; a `ValueError` too.
    """
    path = Path(path)
    if not path.exists():
        nearby = sorted(p.name for p in path.absolute().parent.glob("*.pt"))[:10]
        raise FileNotFoundError(
            f"No model file {path}: `train(dataset, name=...)` writes `{{name}}.pt` when the "
            f"validation score first improves. .pt files there: {', '.join(nearby) or 'none'}."
        )
    content = safe_load(path)
    if not (isinstance(content, dict) and content.get("format") == AUTO_FORMAT):
        kind = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise CheckpointError(
            errno.EINVAL,
            f"{path} is {_file_kind(content)}, not a file of kiln's auto preset (format "
            f"{kind!r}; expected {AUTO_FORMAT!r}): `AutoTrainer.load(name)` reads the "
            "`{name}.pt` (or `{name}_avg.pt`) that `AutoTrainer.train(..., name=name)` writes. "
            "To use this file, `kiln.load(path)` rebuilds a `kiln.Trainer` (not an "
            "AutoTrainer) with its `predict` and `evaluate`, or `kiln.load(path, model=net)` "
            "loads the weights into your network; the auto preset's criterion, which "
            "post-processes its predictions, is not in such a file.",
        )
    problem = _record_problem(content)
    if problem is not None:
        raise CheckpointError(
            errno.EINVAL,
            f"{path} is damaged or was not written by kiln: {problem}. Train again, or load an "
            "intact copy.",
        )
    return content


def _record_problem(content: dict[str, Any]) -> str | None:
    """Say which part of an auto preset record is not what `auto_record` writes, else None."""
    model = content.get("model")
    if not (
        isinstance(model, dict)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items())
    ):
        return f"its 'model' is a {type(model).__name__}, where the weights (tensors) belong"
    parts: dict[str, type | tuple[type, ...]] = {
        "recipe": dict,
        "criterion": (dict, type(None)),
        "logs": dict,
    }
    for key, kind in parts.items():
        if not isinstance(content.get(key), kind):
            return f"its {key!r} is a {type(content.get(key)).__name__}"
    return None


class SaveBest(Callback):
    """Write `{name}.pt` each time `monitor` reaches a new minimum.

    Args:
        path: The file, overwritten atomically at each improvement.
        criterion: The criterion whose `state_dict()` goes into the file (or None).
        monitor: The logged value to minimise.

    The best value and its epoch (`best`, `best_epoch`) carry on over a resume.

    Example:
        >>> import tempfile, torch, kiln
        >>> path = Path(tempfile.mkdtemp()) / "net.pt"
        >>> X, Y = torch.randn(16, 2), torch.randn(16, 1)
        >>> best = SaveBest(path, None, monitor="val_loss")
        >>> trainer = kiln.Trainer(kiln.MLP(2, [], 1), loss="mse", callbacks=[best], device="cpu",
        ...                        progress=False)
        >>> history = trainer.fit((X, Y), val=(X, Y), epochs=3)
        >>> read_auto_record(path)["epoch"] == best.best_epoch, best.best == min(history.val_loss)
        (True, True)
    """

    def __init__(self, path: str | os.PathLike[str], criterion: Any, monitor: str) -> None:
        self.path, self.criterion, self.monitor = Path(path), criterion, monitor
        self.best, self.best_epoch = math.inf, 0

    def on_fit_start(self, trainer: Trainer) -> None:
        """Start afresh unless the run resumes; remove what a killed write left in the folder."""
        if not trainer.state.resumed:
            self.best, self.best_epoch = math.inf, 0
        remove_leftover_temporaries(self.path.absolute().parent)  # `SaveAverage`'s folder too

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Write the file when the value is a new minimum."""
        logs = trainer.state.logs
        value = read_monitored("SaveBest", self.monitor, logs)
        if value is None or not value < self.best:
            return
        self.best, self.best_epoch = value, trainer.state.epoch
        self.path.absolute().parent.mkdir(parents=True, exist_ok=True)
        record = auto_record(trainer.model, self.criterion, trainer.state.epoch, logs)
        atomic_save(record, self.path)

    def state_dict(self) -> dict[str, Any]:
        """The best value and its epoch."""
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])


class SaveAverage(Callback):
    """After `BestAverage` averaged snapshots into the model, write it to `{name}_avg.pt`.

    Put it after the `BestAverage` in the callback list (it reads the averaged model when `fit`
    ends). The file is written whenever more than one snapshot was kept (even if only the best
    is close enough to be averaged), and not otherwise.

    Args:
        path: The file.
        criterion: The criterion whose `state_dict()` goes into the file (or None).
        averaging: The `BestAverage` callback.

    Example:
        >>> from kiln.callbacks import BestAverage
        >>> SaveAverage("net_avg.pt", None, BestAverage(n=3)).path.name
        'net_avg.pt'
    """

    def __init__(
        self, path: str | os.PathLike[str], criterion: Any, averaging: BestAverage
    ) -> None:
        self.path, self.criterion, self.averaging = Path(path), criterion, averaging
        self.saved_path: Path | None = None

    def on_fit_end(self, trainer: Trainer) -> None:
        """Write the averaged model, when there is one."""
        self.saved_path = None
        epochs = self.averaging.averaged_epochs
        if trainer.state.error is not None or not epochs:
            return
        self.path.absolute().parent.mkdir(parents=True, exist_ok=True)
        record = auto_record(trainer.model, self.criterion, trainer.state.epoch)
        record["averaged_epochs"] = list(epochs)
        self.saved_path = atomic_save(record, self.path)
