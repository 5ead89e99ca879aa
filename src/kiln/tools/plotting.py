"""Drawing a run: the training figure, a figure per metric, and a grid of every value.

All figures are `matplotlib.figure.Figure` objects built without pyplot (no global state, no
window, nothing for a server to lack), with fixed margins rather than a layout engine, which
would double the time a figure takes. matplotlib is imported when something is drawn.

What lives here: the figures, and showing one inline in a notebook. What does not: when they are
drawn and where they are written (`kiln.callbacks.TrainingPlot`), the one-quantity figure of the
end-of-run plots (`kiln.callbacks.plot_logs.plot_history`, reused here for `History.plot`).
"""

from __future__ import annotations

import importlib
import io
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from kiln.callbacks.monitor import resolve_mode
from kiln.callbacks.plot_logs import _figure_class, _number, plot_history, plotted_quantities
from kiln.options import whole_number

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from kiln.history import History

#: Colours of the training figure: training dark blue, validation green, learning rate dark red.
TRAIN_COLOR, VAL_COLOR, LR_COLOR = "darkblue", "green", "darkred"
#: Logged names that are never the score of the left panel.
_NOT_SCORES = ("epoch", "loss", "lr", "time")


def score_key(history: History) -> str | None:
    """Return the name the score panel shows: `score` when logged, else the first metric.

    Example:
        >>> from kiln import History
        >>> history = History()
        >>> history.append({"epoch": 1, "loss": 0.5, "accuracy": 0.8, "lr": 0.1, "val_f1": 0.7})
        >>> score_key(history)
        'accuracy'
    """
    logged = history.keys()  # (iterating a History gives its epochs)
    names = [key.removeprefix("val_") for key in logged]
    if "score" in names:
        return "score"
    for name in dict.fromkeys(names):
        if name not in _NOT_SCORES and not name.endswith("_lr") and _series(history, name)[0]:
            return name
    return None


def _series(history: History, key: str) -> tuple[list[float], list[float]]:
    """The epochs and finite-or-NaN values of `key` where it was logged (no values if never)."""
    if key not in history:
        return [], []
    epochs = history["epoch"] if "epoch" in history else list(range(1, len(history) + 1))
    points = [(float(x), _number(y)) for x, y in zip(epochs, history[key], strict=True)]
    kept = [(x, y) for x, y in points if y is not None]
    return [x for x, _ in kept], [y for _, y in kept]


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Return the mean of the `window` values centred on each value (fewer near the ends).

    The result has one value per value, so the smoothed curve spans the whole run.

    Example:
        >>> moving_average([1.0, 2.0, 3.0, 4.0, 8.0], 3)
        [1.5, 2.0, 3.0, 5.0, 6.0]
    """
    sums, half, count = [0.0], window // 2, len(values)
    for value in values:
        sums.append(sums[-1] + value)
    bounds = [(max(0, i - half), min(count, i + window - half)) for i in range(count)]
    return [(sums[high] - sums[low]) / (high - low) for low, high in bounds]


def _format(value: float) -> str:
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e4 else f"{value:.3g}"


def _new_bests(xs: list[float], ys: list[float], mode: str) -> tuple[list[float], list[float]]:
    """The points where the value beat every earlier one: the figure's dots ("checks")."""
    best, kept_x, kept_y = math.inf if mode == "min" else -math.inf, [], []
    for x, y in zip(xs, ys, strict=True):
        if (y < best) if mode == "min" else (y > best):
            best = y
            kept_x.append(x)
            kept_y.append(y)
    return kept_x, kept_y


def _curve(
    axes: Axes, xs: list[float], ys: list[float], label: str, color: str, smooth: int
) -> None:
    """Draw one curve; past `smooth` points, a faint raw line under its moving average."""
    if smooth and len(ys) > smooth:
        axes.plot(xs, ys, color=color, alpha=0.5, linewidth=0.6, label=f"_{label} raw")
        # At most 50 points, so that a long curve keeps its shape; a quarter of a shorter one.
        window = max(2, min(50, len(ys) // 4))
        axes.plot(xs, moving_average(ys, window), color=color, label=label)
    else:
        axes.plot(xs, ys, color=color, marker="." if len(ys) == 1 else None, label=label)


def _panel(
    axes: Axes,
    history: History,
    key: str,
    mode: str,
    smooth: int,
    last_checks: int,
) -> None:
    """Draw `key` and `val_<key>` with the new-best dots, and the title naming the best epoch."""
    from matplotlib.ticker import MaxNLocator

    train, val = _series(history, key), _series(history, f"val_{key}")
    if train[0]:
        _curve(axes, *train, key, TRAIN_COLOR, smooth)
    if val[0]:
        _curve(axes, *val, f"val_{key}", VAL_COLOR, smooth)
    xs, ys = val if val[0] else train
    finite = [(x, y) for x, y in zip(xs, ys, strict=True) if not math.isnan(y)]
    checks = _new_bests([x for x, _ in finite], [y for _, y in finite], mode)
    if checks[0]:
        color = VAL_COLOR if val[0] else TRAIN_COLOR
        axes.plot(
            checks[0][-last_checks:],
            checks[1][-last_checks:],
            ".",
            color=color,
            markersize=6,
            label="_new best",
        )
        shown = [
            f"{'min' if mode == 'min' else 'max'}: {_format(checks[1][-1])} [{checks[0][-1]:g}]"
        ]
    else:
        shown = []
    shown += [
        f"{name}: {_format(series[1][-1])}"
        for name, series in (("val", val), ("train", train))
        if series[0]
    ]
    # A fixed title position: placing it automatically measures every axis (a third of the time).
    axes.set_title(f"{key} ({', '.join(shown)})" if shown else key, fontsize=11, y=1.01)
    axes.set_ylabel(key)
    axes.set_xlabel("epochs")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(linestyle=":", alpha=0.8)


def _learning_rate(axes: Axes, history: History) -> Axes | None:
    """The learning rate on a log-scaled twin axis, its limits rounded out to whole decades."""
    from matplotlib.ticker import NullLocator

    xs, lrs = _series(history, "lr")
    points = [(x, lr) for x, lr in zip(xs, lrs, strict=True) if lr > 0]
    if not points:
        return None
    twin = axes.twinx()
    twin.plot(*zip(*points, strict=True), ":", color=LR_COLOR, label="lr")
    twin.set_yscale("log")
    low = math.floor(math.log10(min(lr for _, lr in points)))
    high = math.ceil(math.log10(max(lr for _, lr in points)))
    if low == high:
        # A constant lr sits in the middle of two decades, not on the edge of the panel.
        low, high = low - 1, high + 1
    twin.set_ylim(10.0**low, 10.0**high)
    # Decades only: labels that read at a glance, and a faster figure.
    twin.yaxis.set_minor_locator(NullLocator())
    twin.tick_params(axis="y", colors=LR_COLOR)
    return twin


def training_figure(
    history: History,
    *,
    score: str | None = None,
    mode: str = "auto",
    marks: Iterable[float] = (),
    smooth: int = 200,
    last_checks: int = 100,
    title: str | None = None,
) -> Figure:
    """Draw the training figure: a score panel on the left, a loss panel on the right.

    Each panel has the training curve (dark blue) and the validation curve (green) against the
    epoch, a dot at each new best value (validation when there is one; the last `last_checks`
    of them), and a title with the best value and its epoch in brackets, then the last
    validation and training values: `loss (min: 0.3120 [14], val: 0.3185, train: 0.2977)`. The
    learning rate is drawn dotted on a log-scaled twin axis; `marks` are dotted vertical lines
    (where a schedule ended). A curve of more than `smooth` points is drawn faint, under its
    moving average. A panel is drawn only for what was logged.

    Compatibility: QuNet's training figure: its panels, colours, dots and titles.

    Args:
        history: The values of a run (`trainer.history`, or the `History` `fit` returns).
        score: The left panel's value; default `score_key(history)` (`score`, else the first
            metric such as `accuracy`); `""` for no score panel.
        mode: Whether a higher score is better (`"max"`), a lower one (`"min"`), or
            `"auto"`: read from the name (higher when it cannot be told).
        marks: Epochs at which to draw a vertical line.
        smooth: Smooth curves longer than this; 0 never smooths.
        last_checks: How many of the latest new-best dots to draw.
        title: The figure's title, above both panels.

    Returns:
        A `matplotlib.figure.Figure` whose `axes` are the panels (score, loss), then their
        learning-rate twins in the same order.

    Raises:
        ValueError: If the history holds neither a loss nor a score.

    Example:
        >>> from kiln import History
        >>> from kiln.tools.plotting import training_figure
        >>> history = History()
        >>> for epoch, (loss, val_loss) in enumerate([(0.9, 1.0), (0.5, 0.7), (0.3, 0.8)], 1):
        ...     history.append({"epoch": epoch, "loss": loss, "val_loss": val_loss, "lr": 0.01})
        >>> figure = training_figure(history, marks=[2])  # needs matplotlib
        >>> figure.axes[0].get_title()
        'loss (min: 0.7000 [2], val: 0.8000, train: 0.3000)'
    """
    score = score_key(history) if score is None else score
    panels = [(name, _score_mode(name, mode)) for name in (score,) if name]
    if _series(history, "loss")[0] or _series(history, "val_loss")[0]:
        panels.append(("loss", "min"))
    panels = [
        (k, m) for k, m in panels if _series(history, k)[0] or _series(history, f"val_{k}")[0]
    ]
    if not panels:
        raise ValueError(
            "training_figure: the history holds neither a loss nor a score to draw; logged: "
            f"{', '.join(history.keys()) or 'nothing'}. Train at least one epoch first."
        )
    figure = _figure_class()(figsize=(6 * len(panels), 5))
    # Fixed margins (in inches, so one panel and two look alike): see the module docstring.
    figure.subplots_adjust(
        left=0.8 / (6 * len(panels)),
        right=1 - 0.8 / (6 * len(panels)),
        bottom=0.1,
        top=0.86 if title else 0.92,
        wspace=0.3,
    )
    last = max((x for key, _ in panels for x in _series(history, key)[0]), default=1.0)
    marks = [float(mark) for mark in marks]
    drawn = [figure.add_subplot(1, len(panels), index + 1) for index in range(len(panels))]
    for axes, (key, key_mode) in zip(drawn, panels, strict=True):
        _panel(axes, history, key, key_mode, smooth, last_checks)
        for mark in marks:
            axes.axvline(mark, color="gray", linestyle=":", linewidth=1, label="_schedule end")
        axes.set_xlim(0, max([last, *marks]))
    for axes, (_, key_mode) in zip(drawn, panels, strict=True):  # twins after the panels
        twin = _learning_rate(axes, history)
        # One legend, on the twin (drawn last) so no curve hides it, in the corner the curves
        # leave empty most often: the top right for a falling curve, the bottom for a rising one.
        handles = [*axes.get_legend_handles_labels()[0]]
        handles += twin.get_legend_handles_labels()[0] if twin is not None else []
        corner: Literal["upper right", "lower right"] = (
            "upper right" if key_mode == "min" else "lower right"
        )
        (twin or axes).legend(handles=handles, loc=corner, framealpha=0.8, edgecolor="none")
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def _score_mode(name: str, mode: str) -> str:
    try:
        return resolve_mode("training_figure", name, mode)
    except ValueError:
        if mode != "auto":
            raise
        # A score whose name tells nothing is most often accuracy-like: higher is better.
        return "max"


def metric_figure(values: Sequence[float], label: str, color: str) -> Figure:
    """Draw one value per epoch against the 0-based epoch index, with a legend.

    Example:
        >>> figure = metric_figure([0.9, 0.5, 0.4], "Train Loss", "red")  # needs matplotlib
        >>> [line.get_label() for line in figure.axes[0].get_lines()]
        ['Train Loss']
    """
    figure = _figure_class()(figsize=(6.4, 4.8))
    from matplotlib.ticker import MaxNLocator

    figure.subplots_adjust(left=0.12, right=0.96, bottom=0.11, top=0.95)
    axes = figure.add_subplot()
    axes.plot(range(len(values)), values, color=color, label=label)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend()
    return figure


def logged_figure(history: History, keys: Iterable[str] | None = None, columns: int = 3) -> Figure:
    """Draw each of `keys` (default: every logged value) in its own panel, as `plot_history`.

    Example:
        >>> from kiln import History
        >>> history = History()
        >>> history.append({"epoch": 1, "loss": 0.5, "val_loss": 0.6, "lr": 0.1})
        >>> [axes.get_ylabel() for axes in logged_figure(history).axes]  # needs matplotlib
        ['loss', 'learning rate']
    """
    keys = (
        plotted_quantities(history)
        if keys is None
        else [keys]
        if isinstance(keys, str)
        else list(keys)
    )
    if not keys:
        raise ValueError(
            "History.plot: there is nothing to draw: no numeric value was logged "
            f"(logged: {', '.join(history.keys()) or 'nothing'}). Train at least one epoch first."
        )
    if whole_number(columns) is None or columns < 1:
        raise ValueError(
            f"History.plot: `columns` must be a whole number >= 1; received {columns!r}."
        )
    columns = min(int(columns), len(keys))
    rows = math.ceil(len(keys) / columns)
    figure = _figure_class()(figsize=(5.2 * columns, 3.8 * rows))
    figure.subplots_adjust(
        left=0.7 / (5.2 * columns),
        right=1 - 0.2 / (5.2 * columns),
        bottom=0.5 / (3.8 * rows),
        top=1 - 0.4 / (3.8 * rows),
        wspace=0.3,
        hspace=0.45,
    )
    for index, key in enumerate(keys):
        plot_history(history, key, axes=figure.add_subplot(rows, columns, index + 1))
    return figure


def to_png(figure: Figure, dpi: float = 100) -> bytes:
    """Render `figure` as PNG bytes (once, for both the file and the notebook)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def show_png(png: bytes, handle: Any = None) -> Any:
    """Show a PNG in the notebook, in place of the one `handle` showed; return the new handle.

    Updating a display handle replaces the previous figure without clearing the rest of the
    cell's output (the progress lines stay).
    """
    ipython_display = importlib.import_module("IPython.display")  # only in a notebook

    image = ipython_display.Image(data=png, format="png")
    if handle is None:
        return ipython_display.display(image, display_id=True)
    handle.update(image)
    return handle
