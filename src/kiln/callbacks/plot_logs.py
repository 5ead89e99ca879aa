"""`PlotLogs`: one figure per logged quantity, written when `fit` ends; `plot_history` draws one.

matplotlib is imported only here, when something is drawn, and only through its object API
(`matplotlib.figure.Figure`): no pyplot, no global backend, no window, so it works on a server
and leaves a user's own pyplot settings alone.

What lives here: choosing the quantities, drawing one figure from a `History`, writing the files
atomically. What does not: the values (`history.py`) or live plots during training.
"""

from __future__ import annotations

import functools
import math
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.callbacks.base import Callback
from kiln.callbacks.log_files import resolve_log_path
from kiln.callbacks.monitor import resolve_mode
from kiln.callbacks.progress import format_value
from kiln.checkpoint.files import atomic_write, remove_leftover_temporaries

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from kiln.history import History
    from kiln.trainer import Trainer

_AXIS_LABELS = {"lr": "learning rate", "time": "seconds"}


def _figure_class() -> type[Figure]:
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            f"Plotting the logs needs matplotlib, which could not be imported ({error}). "
            "Install it with `pip install matplotlib` (or `pip install kiln[plots]`), or "
            "remove PlotLogs from the callbacks."
        ) from error
    return Figure


def _number(value: Any) -> float | None:
    """Return `value` as a float to draw, or `None` for a missing or non-numeric value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else math.nan  # NaN leaves a gap in the line


def plotted_quantities(history: History) -> list[str]:
    """Return the quantities that get a figure: every numeric logged name except `epoch`.

    A `val_` value is drawn with its training counterpart (`val_loss` in the figure `loss`), so
    it gets its own figure only when it has none.

    Example:
        >>> from kiln import History
        >>> history = History()
        >>> history.append({"epoch": 1, "loss": 0.5, "lr": 0.1, "val_loss": 0.6, "val_f1": 0.7})
        >>> plotted_quantities(history)
        ['loss', 'lr', 'val_f1']
    """
    keys = history.keys()
    return [
        key
        for key in keys
        if key != "epoch"
        and not (key.startswith("val_") and key.removeprefix("val_") in keys)
        and any(_number(value) is not None for value in history[key])
    ]


def plot_history(history: History, key: str, axes: Axes | None = None) -> Figure:
    """Draw `key` (and `val_<key>` when logged) against the epoch, on one set of axes.

    The epoch where the quantity was best (lowest loss, highest accuracy; validation when there
    is one) is marked and named in the title; a learning rate that spans more than a factor 10
    is drawn on a log scale. The figure is not attached to pyplot: save it with `savefig`, or
    show it in a notebook by leaving it as a cell's result.

    Args:
        history: The values of a run, such as the `History` that `Trainer.fit` returns.
        key: A logged name, such as `"loss"`, `"accuracy"`, `"lr"` or `"time"`.
        axes: Draw into these axes (one panel of a larger figure, as `History.plot` does)
            rather than into a new figure of their own.

    Returns:
        A `matplotlib.figure.Figure` with one axes, or the figure that holds `axes`.

    Raises:
        KeyError: If neither `key` nor `val_<key>` was logged.
        ImportError: If matplotlib is not installed.

    Example:
        >>> from kiln import History
        >>> from kiln.callbacks.plot_logs import plot_history
        >>> history = History()
        >>> for epoch, (loss, val_loss) in enumerate([(0.9, 1.0), (0.5, 0.7), (0.3, 0.8)], 1):
        ...     history.append({"epoch": epoch, "loss": loss, "val_loss": val_loss})
        >>> figure = plot_history(history, "loss")  # needs matplotlib
        >>> axes = figure.axes[0]
        >>> [line.get_label() for line in axes.get_lines()], axes.get_title()
        (['loss', 'val_loss', 'best'], 'loss (best val_loss: 0.7000 at epoch 2)')
    """
    names = [name for name in (key, f"val_{key}") if name in history]
    if not names:
        raise KeyError(
            f"plot_history: {key!r} was never logged, nor {'val_' + key!r}. Logged values: "
            f"{', '.join(history.keys()) or 'none'}."
        )
    figure_class = _figure_class()
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    epochs = history["epoch"] if "epoch" in history else list(range(1, len(history) + 1))
    if axes is None:
        figure = figure_class(figsize=(6.4, 4.2))
        # Fixed margins wide enough for tick labels such as 0.00100: an automatic layout
        # engine would double the time each figure takes to draw.
        figure.subplots_adjust(left=0.14, right=0.97, bottom=0.12, top=0.91)
        axes = figure.add_subplot()
    best: tuple[str, float, float] | None = None
    for name in names:
        points = [
            (x, y)
            for x, y in zip(epochs, map(_number, history[name]), strict=True)
            if y is not None
        ]
        if not points:
            continue
        xs, ys = [x for x, _ in points], [y for _, y in points]
        marker = "o" if len(points) <= 30 else None  # single epochs stay visible
        axes.plot(xs, ys, marker=marker, markersize=3, label=name)
        best = _best_point(name, xs, ys) or best
    if best is not None:
        name, epoch, value = best
        axes.plot([epoch], [value], "k*", markersize=10, label="best")
        axes.set_title(f"{key} (best {format_value(name, value)} at epoch {epoch:g})")
    else:
        axes.set_title(key)
    axes.set_xlabel("epoch")
    axes.set_ylabel(_AXIS_LABELS.get(key, key))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    values = [v for name in names for v in map(_number, history[name]) if v is not None]
    if key.endswith("lr") and min(values, default=0) > 0 and max(values) > 10 * min(values):
        axes.set_yscale("log")
    else:  # short tick labels (a shared "1e-3" and offset), so the fixed margins hold them
        formatter = ScalarFormatter(useMathText=True)
        formatter.set_powerlimits((-3, 4))
        axes.yaxis.set_major_formatter(formatter)
    axes.grid(alpha=0.3)
    axes.legend()
    return axes.figure  # type: ignore[return-value]


def _best_point(name: str, xs: list[Any], ys: list[float]) -> tuple[str, float, float] | None:
    """Return `(name, epoch, value)` where `name` was best, or `None` if no direction is known."""
    try:
        mode = resolve_mode("plot_history", name, "auto")
    except ValueError:  # lr, time and other values that are neither better low nor high
        return None
    finite = [(x, y) for x, y in zip(xs, ys, strict=True) if not math.isnan(y)]
    if not finite:
        return None
    pick = min if mode == "min" else max
    epoch, value = pick(finite, key=lambda point: point[1])
    return name, float(epoch), value


def save_plots(
    history: History, directory: str | os.PathLike[str], formats: Iterable[str] = ("png",)
) -> list[Path]:
    """Write `directory/<quantity>.<format>` for every quantity `plotted_quantities` returns.

    Each file is written to a temporary name and renamed, so a file is always whole. Characters
    that do not belong in a file name (such as `/`) become `_`.

    Returns:
        The paths written.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for key in plotted_quantities(history):
        figure = plot_history(history, key)
        stem = re.sub(r"[^\w.-]", "_", key)
        for file_format in formats:
            path = directory / f"{stem}.{file_format}"
            atomic_write(path, functools.partial(figure.savefig, format=file_format))
            written.append(path)
    return written


class PlotLogs(Callback):
    """When `fit` ends, draw one figure per logged quantity into `directory`.

    Each quantity gets `{directory}/{name}.{format}`: the training and validation curves of the
    same quantity on one set of axes (`loss.png` holds `loss` and `val_loss`), against the
    epoch, with a legend, a title naming the best epoch and labelled axes; `lr.png` and
    `time.png` too. The figures cover the whole history, earlier `fit` calls and resumed runs
    included. matplotlib is needed (`pip install matplotlib`); it is checked when `fit` starts,
    so a missing install fails before training rather than after. After a run that raised, the
    plots are still drawn; a failure to draw them then is a warning, so the run's own error is
    the one that propagates.

    Args:
        directory: Where the files go; a relative path is relative to `trainer.dir` when the
            trainer has one, else to the current directory.
        formats: File formats, one file each: `"png"`, `"pdf"`, `"svg"`, ... (any that
            matplotlib writes). A single string is one format.
        required: If False, a missing matplotlib is a warning and no plots are drawn, rather
            than an error (what an experiment directory does: plots are a convenience there).

    `formats=()` draws nothing: given to a trainer with `dir`, it leaves the plots out of the
    directory (and matplotlib's import out of the run), as `kiln fit` does for its short runs.

    Example:
        >>> import kiln
        >>> plots = kiln.callbacks.PlotLogs("plots", formats=("png", "pdf"))
        >>> plots.formats
        ('png', 'pdf')
    """

    #: Under torchrun, runs on rank 0 only: it only writes files.
    main_process_only = True

    def __init__(
        self,
        directory: str | os.PathLike[str] = "plots",
        formats: str | Iterable[str] = ("png",),
        required: bool = True,
    ) -> None:
        if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
            raise TypeError(
                "PlotLogs: `directory` must be a non-empty directory name or path, such as "
                f"'plots'; received {directory!r}."
            )
        if isinstance(formats, str):
            formats = (formats,)
        if not isinstance(formats, Iterable):
            raise TypeError(
                "PlotLogs: `formats` must be a format name or a sequence of them, such as "
                f"('png', 'pdf'); received {type(formats).__name__}."
            )
        formats = tuple(formats)
        if not all(isinstance(f, str) and f.strip(".") for f in formats):
            raise ValueError(
                "PlotLogs: `formats` must hold file format names, such as ('png',) or "
                f"('png', 'pdf'); received {formats!r}."
            )
        self.directory = Path(directory).expanduser()
        self.formats = tuple(f.strip(".").lower() for f in formats)
        self.required = required
        self._skipped = False
        #: The files written by the last `fit`.
        self.written: list[Path] = []

    def on_fit_start(self, trainer: Trainer) -> None:
        """Check now that matplotlib is there and writes every format, not after training.

        The temporary files that a run killed while writing a figure left go. With no
        formats, nothing is checked or drawn (and matplotlib is not imported).
        """
        if not self.formats:
            self._skipped = True
            return
        try:
            figure_class = _figure_class()
        except ImportError as error:
            if self.required:
                raise
            warnings.warn(f"{error} No plots will be drawn.", RuntimeWarning, stacklevel=2)
            self._skipped = True
            return
        self._skipped = False
        supported = figure_class().canvas.get_supported_filetypes()
        unknown = [f for f in self.formats if f not in supported]
        if unknown:
            raise ValueError(
                f"PlotLogs: matplotlib cannot write the format(s) {', '.join(unknown)}. "
                f"Choose among: {', '.join(sorted(supported))}."
            )
        directory = resolve_log_path(self.directory, trainer)
        if directory.exists() and not directory.is_dir():
            raise ValueError(
                f"PlotLogs: {directory} is a file, but the plots need a directory there. Pass "
                "another `directory`, or move the file."
            )
        remove_leftover_temporaries(directory)  # of a run killed while writing a figure

    def on_fit_end(self, trainer: Trainer) -> None:
        """Draw every quantity of the history, and write the files."""
        self.written = []
        if not trainer.history.epochs or self._skipped:
            return
        directory = resolve_log_path(self.directory, trainer)
        if trainer.state.error is None:
            self.written = save_plots(trainer.history, directory, self.formats)
            return
        try:
            self.written = save_plots(trainer.history, directory, self.formats)
        except Exception as error:  # the run's own error matters more
            warnings.warn(
                f"PlotLogs could not draw the plots of the run that failed: {error!r}.",
                RuntimeWarning,
                stacklevel=2,
            )
