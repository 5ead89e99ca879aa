"""`TrainingPlot`: the training figure every `period` epochs, in the notebook and on disk.

Every `period` epochs (and after the last one) the callback draws
`kiln.tools.plotting.training_figure`
from the whole history (so a resumed run draws the epochs before the interruption too), shows it
inline when the code runs in a Jupyter kernel, replacing the figure it showed before, writes it
atomically as a PNG in the run directory, and then lets every callback draw its own figures:
each callback with an `on_plot(trainer)` method is called, and finds
the figure in `TrainingPlot.figure`.

What lives here: when to draw, where the files go, the `on_plot` hook. What does not: the drawing
(`kiln.tools.plotting`) and the end-of-run figures of every value (`plot_logs.py`).
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from kiln.callbacks.base import Callback
from kiln.callbacks.dispatch import call_hook
from kiln.callbacks.log_files import resolve_log_path
from kiln.checkpoint.files import atomic_write, remove_leftover_temporaries

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kiln.trainer import Trainer


class TrainingPlot(Callback):
    """Draw the training figure every `period` epochs; show it in a notebook, save it as PNG.

    The figure (see `kiln.tools.plotting.training_figure`) has a score panel (the logged `score`,
    else the first metric, such as `accuracy`) and a loss panel, each with the training and
    validation curves, a dot at each new best validation value, the best value and its epoch
    in the title, and the learning rate on a log-scaled twin axis. Vertical dotted lines mark
    the epochs in `marks`, and those where a schedule ended: any callback of the trainer with a
    `schedule_ends` attribute (a list of epochs) provides them. Its title gives the epoch,
    samples, steps, learning rate, seconds per epoch and parameter count.

    When it draws: at the end of every epoch whose number is a multiple of `period`, after the
    last epoch of each `fit` (also one stopped early or by an error), never twice for one
    epoch. Then every other callback's `on_plot(trainer)` is called (a hook of this callback,
    not an event of the loop), so that it can draw its own figures; `self.figure` holds the
    training figure meanwhile.

    Files: `file` in `directory`; by default `training.png` in the trainer's directory, and no
    file when the trainer has none. `per_metric=True` also writes one figure per value there,
    named with the 0-based epoch index `e`:
    `epoch_{e}_loss.png` (training loss, red), `train_{name}_epoch_{e}.png` and
    `test_{name}_epoch_{e}.png` (a metric on the training and validation data, blue), each
    against the 0-based epoch; a new set of files each time it draws.

    Compatibility: QuNet's figure and `on_after_plot`; TorchFusion's per-value file names.

    Args:
        period: Draw every this many epochs.
        file: The PNG's file name, or `None` for none.
        directory: Where the files go: `None` for the trainer's directory (nothing written
            without one); a path, relative to the trainer's directory when it has one, else to
            the current directory.
        show: Show the figure inline: `None` when running in a Jupyter kernel, `True` always
            (needs IPython), `False` never.
        score: The score panel's value (`None`: chosen as above; `""`: no score panel).
        mode: `"max"` if a higher score is better, `"min"` if lower, `"auto"` from the name.
        marks: Epochs at which to draw a vertical line.
        smooth: Smooth curves longer than this many points (0: never).
        per_metric: Also write the per-value figures.

    Example:
        >>> import torch, kiln
        >>> from kiln.callbacks.training_plot import TrainingPlot
        >>> plot = TrainingPlot(period=5, show=False)
        >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", callbacks=[plot],
        ...                        device="cpu", progress=False)
        >>> _ = trainer.fit((torch.randn(16, 2), torch.randn(16, 1)), epochs=2)  # needs matplotlib
        >>> plot.epochs_drawn, plot.figure.axes[0].get_title().startswith("loss (min:")
        ([2], True)
    """

    #: Under torchrun, runs on rank 0 only: it only draws and writes files.
    main_process_only = True

    def __init__(
        self,
        period: int = 1,
        file: str | os.PathLike[str] | None = "training.png",
        directory: str | os.PathLike[str] | None = None,
        show: bool | None = None,
        *,
        score: str | None = None,
        mode: str = "auto",
        marks: Iterable[float] = (),
        smooth: int = 200,
        per_metric: bool = False,
    ) -> None:
        if isinstance(period, bool) or not isinstance(period, int):
            raise TypeError(
                "TrainingPlot: `period` must be a whole number of epochs, such as 1 or 10; "
                f"received {type(period).__name__}."
            )
        if period < 1:
            raise ValueError(
                f"TrainingPlot: `period` must be at least 1 epoch; received {period}. To draw "
                "no figure during training, leave TrainingPlot out of the callbacks."
            )
        for name, value in (("file", file), ("directory", directory)):
            if value is not None and (
                not isinstance(value, (str, os.PathLike)) or not os.fspath(value)
            ):
                raise TypeError(
                    f"TrainingPlot: `{name}` must be a non-empty path or None; received {value!r}."
                )
        if show is not None and not isinstance(show, bool):
            raise TypeError(f"TrainingPlot: `show` must be None, True or False; received {show!r}.")
        if mode not in ("auto", "min", "max"):
            raise ValueError(
                f"TrainingPlot: `mode` must be 'auto', 'min' or 'max'; received {mode!r}."
            )
        if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 0:
            raise ValueError(
                "TrainingPlot: `smooth` must be a whole number of points >= 0 (0 never "
                f"smooths); received {smooth!r}."
            )
        marks = list(marks)
        if not all(isinstance(m, (int, float)) and not isinstance(m, bool) for m in marks):
            raise TypeError(f"TrainingPlot: `marks` must be epoch numbers; received {marks!r}.")
        self.period, self.show, self.score, self.mode = period, show, score, mode
        self.file = None if file is None else Path(file).expanduser()
        self.directory = None if directory is None else Path(directory).expanduser()
        self.marks, self.smooth, self.per_metric = marks, smooth, per_metric
        #: The last training figure drawn (a matplotlib `Figure`), for `on_plot` callbacks.
        self.figure: Figure | None = None
        #: The epochs at which a figure was drawn, in this process.
        self.epochs_drawn: list[int] = []
        #: The files written by the last drawing.
        self.written: list[Path] = []
        self._handle: Any = None  # the notebook display the next figure replaces

    def on_fit_start(self, trainer: Trainer) -> None:
        """Check that matplotlib is there before training; start a new inline figure.

        The temporary files that a run killed while writing a figure left go.
        """
        from kiln.callbacks.plot_logs import _figure_class

        _figure_class()  # raises an ImportError that says how to install it
        if self.show:
            try:
                importlib.import_module("IPython.display")
            except ImportError as error:
                raise ImportError(
                    f"TrainingPlot(show=True) shows the figure with IPython, which could not be "
                    f"imported ({error}). Run in Jupyter, or pass show=None (show only in a "
                    "notebook) or show=False."
                ) from error
        self._handle = None
        directory = self._directory(trainer)
        if directory is not None:
            remove_leftover_temporaries(directory)

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Draw every `period` epochs and after the last epoch of the run."""
        state = trainer.state
        if state.epoch % self.period == 0 or state.epoch >= state.max_epochs or state.should_stop:
            self.draw(trainer)

    def on_fit_end(self, trainer: Trainer) -> None:
        """Draw the last epoch if a stop (a budget, an error) came before `epoch_end` did."""
        if not trainer.history.epochs or trainer.state.epoch in self.epochs_drawn[-1:]:
            return
        if trainer.state.error is None:
            self.draw(trainer)
            return
        try:
            self.draw(trainer)
        except Exception as error:  # the run's own error matters more
            warnings.warn(
                f"TrainingPlot could not draw the run that failed: {error!r}.",
                RuntimeWarning,
                stacklevel=2,
            )

    def draw(self, trainer: Trainer) -> Figure:
        """Draw the figure now, show and write it, and call the other callbacks' `on_plot`."""
        from kiln.callbacks.progress import in_notebook
        from kiln.tools.plotting import show_png, to_png, training_figure

        figure = training_figure(
            trainer.history,
            score=self.score,
            mode=self.mode,
            marks=[*self.marks, *schedule_ends(trainer)],
            smooth=self.smooth,
            title=_title(trainer),
        )
        self.figure = figure
        self.epochs_drawn.append(trainer.state.epoch)
        directory = self._directory(trainer)
        show = in_notebook() if self.show is None else self.show
        png = to_png(figure) if show or (directory is not None and self.file is not None) else b""
        self.written = []
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            if self.file is not None:
                path = directory / self.file
                self.written.append(atomic_write(path, functools.partial(_write, png)))
            if self.per_metric:
                self.written += _write_per_metric(trainer, directory)
        if show:
            self._handle = show_png(png, self._handle)
        # The other callbacks draw their own figures now, beside this one.
        call_hook((cb for cb in trainer.callbacks if cb is not self), "on_plot", trainer)
        return figure

    def _directory(self, trainer: Trainer) -> Path | None:
        if self.directory is None:
            return trainer.dir
        return resolve_log_path(self.directory, trainer)


def schedule_ends(trainer: Trainer) -> list[float]:
    """The epochs where a schedule ended, from every callback's `schedule_ends` attribute.

    A schedule callback provides them by keeping `schedule_ends`, a list of epoch numbers (the
    epoch after which each of its curves ended), in its resumable state.
    """
    ends: list[float] = []
    for callback in trainer.callbacks:
        ends += [float(epoch) for epoch in getattr(callback, "schedule_ends", None) or ()]
    return ends


def _title(trainer: Trainer) -> str:
    state, history = trainer.state, trainer.history
    times = [t for t in history["time"] if t is not None] if "time" in history else []
    params = sum(p.numel() for p in trainer.model.parameters())
    parts = [f"epoch {state.epoch}", f"samples={state.samples}", f"steps={state.step}"]
    if trainer.optimizer is not None:
        parts.append(f"lr={trainer.optimizer.param_groups[0]['lr']:.1e}")
    if times:
        parts.append(f"{sum(times) / len(times):.3g} s/epoch")
    parts.append(f"params={params / 1000:.1f}k" if params >= 1000 else f"params={params}")
    return ", ".join(parts)


def _write_per_metric(trainer: Trainer, directory: Path) -> list[Path]:
    """The per-value files: `epoch_{e}_loss.png`, `train_{name}_epoch_{e}.png`, `test_...`."""
    from kiln.tools.plotting import metric_figure, to_png

    history, index = trainer.history, trainer.state.epoch - 1
    figures: list[tuple[str, list[float], str, str]] = []
    keys = history.keys()
    if "loss" in keys:
        figures.append((f"epoch_{index}_loss.png", history["loss"], "Train Loss", "red"))
    for key in keys:
        name = key.removeprefix("val_")
        if name in ("epoch", "loss", "lr", "time") or name.endswith("_lr"):
            continue
        stage = "test" if key.startswith("val_") else "train"
        label = f"{stage.capitalize()} {name}"
        figures.append((f"{stage}_{name}_epoch_{index}.png", history[key], label, "blue"))
    written = []
    for file_name, values, label, color in figures:
        numbers = [v for v in values if isinstance(v, (int, float))]
        if not numbers:
            continue
        png = to_png(metric_figure(numbers, label, color))
        path = directory / re.sub(r"[^\w. -]", "_", file_name)
        written.append(atomic_write(path, functools.partial(_write, png)))
    return written


def _write(data: bytes, file: IO[bytes]) -> None:
    file.write(data)
