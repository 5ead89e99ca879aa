"""Drawing a planned learning-rate curve, with a mark where each schedule ends.

matplotlib is imported here only when something is drawn, and only through its object API
(`matplotlib.figure.Figure`): no pyplot, no global state, so it works on a server. Show the
figure in a notebook by leaving it as a cell's value, or write it with `figure.savefig(path)`.

What lives here: `plot_plan`. What does not: computing the plan (`ScheduleChain.plan`,
`LRScheduler.plan`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from kiln.optim.schedule_chain import Plan


def _figure_class() -> type[Figure]:
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            f"Plotting a learning-rate schedule needs matplotlib, which could not be imported "
            f"({error}). Install it with `pip install matplotlib` (or `pip install kiln[plots]`)."
        ) from error
    return Figure


def plot_plan(
    plan: Plan,
    steps_per_epoch: int = 1,
    log: bool = True,
    title: str = "",
    size: tuple[float, float] = (8.0, 4.0),
) -> Figure:
    """Draw `plan`'s learning rate against the epoch, with a dotted line where a curve ends.

    Args:
        plan: The planned rates (from `ScheduleChain.plan` or `LRScheduler.plan`).
        steps_per_epoch: How many of the plan's steps make an epoch (1 for an epoch plan).
        log: Draw the learning rate on a log scale.
        title: The figure's title.
        size: Width and height in inches.

    Returns:
        A matplotlib `Figure` with one axes.

    Example:
        >>> from kiln.optim import ConstantSchedule, ScheduleChain, plot_plan
        >>> chain = ScheduleChain([ConstantSchedule(1e-3, epochs=2)])
        >>> figure = plot_plan(chain.plan(4), title="constant")
        >>> figure.axes[0].get_title()
        'constant'
    """
    figure = _figure_class()(figsize=size)
    axes = figure.add_subplot()
    x = [(index + 1) / steps_per_epoch for index in range(len(plan.lrs))]
    # A step plan draws a line; an epoch plan has few points, each worth a marker.
    marker = "o" if steps_per_epoch == 1 and len(x) <= 200 else ""
    axes.plot(x, plan.lrs, marker=marker, markersize=3, color="darkred", label="lr")
    for number, end in enumerate(plan.ends):
        axes.axvline(
            end / steps_per_epoch,
            color="gray",
            linestyle=":",
            label="a schedule ends" if number == 0 else None,
        )
    if log and all(lr > 0 for lr in plan.lrs):
        axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("learning rate")
    axes.grid(linestyle=":", alpha=0.6)
    axes.legend(loc="best")
    axes.set_title(title)
    figure.tight_layout()
    return figure
