"""The results of training and evaluation: `History` and `Evaluation`.

What lives here: per-epoch values with attribute and key access, per-batch training losses, and
their export. What does not: computing the values (`loop/tracking.py`) or drawing them
(`tools/plotting.py`, which `History.plot` calls).
"""

from __future__ import annotations

import csv
import math
from collections.abc import ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class History:
    """The values logged at each epoch, with the training loss of every batch.

    `history.val_accuracy` and `history["val_accuracy"]` are per-epoch lists (`None` where an
    epoch has no such value, such as a validation that did not run); `len(history)` is the
    number of epochs; `history.epochs` holds one dict per epoch; `history.batch_losses` holds the
    training loss of every batch, across epochs.

    Example:
        >>> history = History()
        >>> history.append({"epoch": 1, "loss": 0.9}); history.append({"epoch": 2, "loss": 0.5})
        >>> len(history), history.loss, history["epoch"]
        (2, [0.9, 0.5], [1, 2])
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self.batch_losses: list[float] = []

    def append(self, logs: Mapping[str, float]) -> None:
        """Add one epoch's values."""
        self.epochs.append(dict(logs))

    def keys(self) -> list[str]:
        """The logged names, in the order they first appeared."""
        names: dict[str, None] = {}
        for row in self.epochs:
            names.update(dict.fromkeys(row))
        return list(names)

    def __len__(self) -> int:
        return len(self.epochs)

    def __contains__(self, key: object) -> bool:
        return any(key in row for row in self.epochs)

    def __getitem__(self, key: str) -> list[Any]:
        if key not in self:
            raise KeyError(f"{key!r} was never logged. Logged values: {', '.join(self.keys())}.")
        return [row.get(key) for row in self.epochs]

    def __getattr__(self, key: str) -> list[Any]:
        if key.startswith("_") or key in ("epochs", "batch_losses"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError as error:
            raise AttributeError(str(error)) from None

    def __iter__(self) -> Iterator[dict[str, float]]:
        return iter(self.epochs)

    def to_dict(self) -> dict[str, list[Any]]:
        """Return `{name: per-epoch list}`, plus `"batch_losses"`."""
        result: dict[str, list[Any]] = {key: self[key] for key in self.keys()}
        result["batch_losses"] = list(self.batch_losses)
        return result

    def to_csv(self, path: str | Path, separator: str = ",") -> None:
        """Write one row per epoch, one column per logged name (empty where absent)."""
        keys = self.keys()
        with open(path, "w", newline="") as file:
            writer = csv.writer(file, delimiter=separator)
            writer.writerow(keys)
            for row in self.epochs:
                writer.writerow(["" if row.get(k) is None else row[k] for k in keys])

    def plot(self, keys: str | Iterable[str] | None = None, *, columns: int = 3) -> Figure:
        """Draw the logged values, one panel each, and return the matplotlib `Figure`.

        Each panel is the figure `PlotLogs` writes for that value: the training and validation
        curves against the epoch, with the best epoch marked and named in the title. In a
        notebook, a cell ending in `history.plot()` shows it; elsewhere, `savefig` it. For
        the training figure (score and loss panels, the learning rate on a twin axis), see
        `kiln.tools.plotting.training_figure(history)` and `kiln.callbacks.TrainingPlot`.

        Args:
            keys: A logged name or several (`"loss"` covers `val_loss` too); default every
                numeric value but `epoch`.
            columns: Panels per row.

        Raises:
            KeyError: If a key was never logged.
            ValueError: If nothing numeric was logged.
            ImportError: If matplotlib is not installed (`pip install matplotlib`).

        Example:
            >>> history = History()
            >>> history.append({"epoch": 1, "loss": 0.9, "val_loss": 1.0, "accuracy": 0.5})
            >>> history.append({"epoch": 2, "loss": 0.5, "val_loss": 0.7, "accuracy": 0.8})
            >>> figure = history.plot()  # needs matplotlib
            >>> [axes.get_ylabel() for axes in figure.axes], figure.axes[0].get_title()
            (['loss', 'accuracy'], 'loss (best val_loss: 0.7000 at epoch 2)')
        """
        from kiln.tools.plotting import logged_figure  # imports matplotlib: only when drawing

        return logged_figure(self, keys, columns)

    def state_dict(self) -> dict[str, Any]:
        """Return the history as plain data, for checkpoints."""
        return {"epochs": [dict(row) for row in self.epochs], "batch_losses": self.batch_losses}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a history saved by `state_dict`."""
        self.epochs = [dict(row) for row in state["epochs"]]
        self.batch_losses = list(state["batch_losses"])

    def __repr__(self) -> str:
        last = self.epochs[-1] if self.epochs else {}
        shown = ", ".join(f"{k}={_format(v)}" for k, v in last.items())
        return f"History({len(self)} epochs; last: {shown})"


class Evaluation:
    """The values of one evaluation: `evaluation.loss`, `evaluation["accuracy"]`.

    Iterating gives the values, the loss first, then the metrics in the order given, so that
    `loss, accuracy = trainer.evaluate(...)` works, and so does `evaluation[1]` (by position).
    The names come from `keys()`; `items()`, `to_dict()`, `dict(evaluation)` and
    `**evaluation` give the names with their values.

    Example:
        >>> evaluation = Evaluation({"loss": 0.25, "accuracy": 0.9})
        >>> loss, accuracy = evaluation
        >>> loss, accuracy, evaluation[1], evaluation.accuracy, evaluation["loss"]
        (0.25, 0.9, 0.9, 0.9, 0.25)
        >>> list(evaluation.keys()), dict(evaluation)
        (['loss', 'accuracy'], {'loss': 0.25, 'accuracy': 0.9})
    """

    def __init__(self, values: Mapping[str, float]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str | int) -> float:
        if isinstance(key, int) and not isinstance(key, bool):
            values = list(self._values.values())
            if -len(values) <= key < len(values):
                return values[key]
            raise IndexError(
                f"Evaluation index {key} is out of range: it holds {len(values)} values "
                f"({', '.join(self._values)})."
            )
        try:
            return self._values[key]  # type: ignore[index]
        except (KeyError, TypeError):
            known = ", ".join(self._values)
            raise KeyError(f"{key!r} was not evaluated. Evaluated values: {known}.") from None

    def __getattr__(self, key: str) -> float:
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError as error:
            raise AttributeError(str(error)) from None

    def __iter__(self) -> Iterator[float]:
        """Yield the values (not the names, as a dict would): `loss, accuracy = evaluation`."""
        return iter(self._values.values())

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        """Tell whether a value of this name was evaluated: `"accuracy" in evaluation`."""
        return key in self._values

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Evaluation):
            return self._values == other._values
        if isinstance(other, Mapping):
            return self._values == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def keys(self) -> KeysView[str]:
        """The names of the values, the loss first."""
        return self._values.keys()

    def values(self) -> ValuesView[float]:
        """The values, in the order of `keys()`."""
        return self._values.values()

    def items(self) -> ItemsView[str, float]:
        """The `(name, value)` pairs, in the order of `keys()`."""
        return self._values.items()

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value named `key`, or `default` when it was not evaluated."""
        return self._values.get(key, default)

    def to_dict(self) -> dict[str, float]:
        """Return the values as a plain dict."""
        return dict(self._values)

    def __repr__(self) -> str:
        return "Evaluation(" + ", ".join(f"{k}={_format(v)}" for k, v in self.items()) + ")"


def _format(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value) and value != int(value):
        return f"{value:.4g}"
    return str(value)
