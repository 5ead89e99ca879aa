"""The auto preset's files, `{name}.pt` and `{name}_avg.pt`: weights, recipe and criterion.

PytorchTrainer pickled itself (criterion, builder and all) next to the weights, which ties the
file to the code and runs code when it is read. Kiln writes tensors and plain data only, read
back with `torch.load(weights_only=True)`:

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
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from kiln.callbacks.base import Callback
from kiln.callbacks.best_average import BestAverage
from kiln.callbacks.monitor import read_monitored
from kiln.checkpoint.files import atomic_save, safe_load
from kiln.saving.recipe import recipe_of

if TYPE_CHECKING:
    from kiln.trainer import Trainer

#: The value of the "format" key of an auto preset file.
AUTO_FORMAT = "kiln-auto"


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


def read_auto_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an auto preset file without running code from it.

    Raises:
        FileNotFoundError: If there is no such file (the message says which names exist).
        ValueError: If the file is not an auto preset file.
    """
    path = Path(path)
    if not path.is_file():
        nearby = sorted(p.name for p in path.absolute().parent.glob("*.pt"))[:10]
        raise FileNotFoundError(
            f"No model file {path}: `train(dataset, name=...)` writes `{{name}}.pt` when the "
            f"validation score first improves. .pt files there: {', '.join(nearby) or 'none'}."
        )
    content = safe_load(path)
    if not (isinstance(content, dict) and content.get("format") == AUTO_FORMAT):
        kind = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise ValueError(
            f"{path} is not a file of kiln's auto preset (format {kind!r}; expected "
            f"{AUTO_FORMAT!r}). For other kiln files use kiln.load(path, ...)."
        )
    return content


class SaveBest(Callback):
    """Write `{name}.pt` each time `monitor` reaches a new minimum (PytorchTrainer's file).

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
        """Start afresh unless the run resumes."""
        if not trainer.state.resumed:
            self.best, self.best_epoch = math.inf, 0

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
    is close enough to be averaged), and not otherwise, as in PytorchTrainer.

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
