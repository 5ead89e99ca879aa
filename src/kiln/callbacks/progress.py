"""`ProgressBar`: a live bar during each epoch and a summary line after it.

tqdm is imported only when a bar is shown. The bar refreshes at a bounded rate (it reads the loss
from the device only then), so it adds no host sync per batch.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from kiln.callbacks.base import Callback

if TYPE_CHECKING:
    from kiln.state import TrainState
    from kiln.trainer import Trainer

#: Values shown elsewhere on the summary line, or not at all.
_NOT_LISTED = ("epoch", "time")


def in_notebook() -> bool:
    """Tell whether the code runs in a Jupyter kernel (JupyterLab, VS Code, Colab).

    IPython is not imported for this: a notebook has imported it already. Colab's shell is a
    subclass of the Jupyter kernel's, so the class hierarchy is checked, not the class name.

    Example:
        >>> in_notebook()  # a script or a test run
        False
    """
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    kinds = {cls.__name__ for cls in type(shell).__mro__} if shell is not None else set()
    return "ZMQInteractiveShell" in kinds


def _bar_class() -> Any:
    """Tqdm's notebook widget in a notebook that can draw it, else the text bar.

    The widget needs ipywidgets; without it tqdm would print an error in place of a bar, so a
    notebook without ipywidgets gets the text bar, which notebooks render as well.
    """
    if in_notebook():
        try:
            import ipywidgets  # noqa: F401  # only to know the widget can be drawn
            from tqdm.notebook import tqdm as notebook_tqdm
        except ImportError:
            pass
        else:
            return notebook_tqdm
    from tqdm import tqdm

    return tqdm


def format_value(key: str, value: Any) -> str:
    """Format one logged value for a console line."""
    if not isinstance(value, float) or not math.isfinite(value):
        return f"{key}: {value}"
    if key == "lr" or key.endswith("_lr") or (value != 0 and abs(value) < 1e-3):
        return f"{key}: {value:.3g}"
    return f"{key}: {value:.4f}"


def summary_line(epoch: int, epochs: int, steps: int, seconds: float, logs: dict[str, Any]) -> str:
    """Return the line printed after an epoch, which took `steps` optimizer steps.

    Such as `Epoch 2/10  38 steps  0.99s  loss: 0.2294  accuracy: 0.9312  val_loss: 0.2799`.
    """
    values = "  ".join(format_value(k, v) for k, v in logs.items() if k not in _NOT_LISTED)
    return f"Epoch {epoch}/{epochs}  {steps} steps  {seconds:.2f}s  {values}"


def epoch_summary(state: TrainState, steps: int) -> str:
    """Return the line shown after the epoch `state` just finished, in `steps` optimizer steps.

    The seconds are the epoch's logged `time`, so the console, a `TextLog` and a `CSVLogger`
    agree.

    Example:
        >>> from kiln import TrainState
        >>> state = TrainState(epoch=2, max_epochs=5, logs={"epoch": 2, "loss": 0.25, "time": 1.5})
        >>> epoch_summary(state, steps=10)
        'Epoch 2/5  10 steps  1.50s  loss: 0.2500'
    """
    seconds = float(state.logs.get("time", 0.0))
    return summary_line(state.epoch, state.max_epochs, steps, seconds, state.logs)


def stop_line(state: TrainState) -> str | None:
    """Return the line that says why the run stopped early, or `None` if it did not.

    Example:
        >>> from kiln import TrainState
        >>> stop_line(TrainState(epoch=4, stop_reason="a stop file appeared"))
        'Stopped after epoch 4: a stop file appeared'
    """
    if not state.stop_reason:
        return None
    return f"Stopped after epoch {state.epoch}: {state.stop_reason}"


class ProgressBar(Callback):
    """Show a progress bar while an epoch trains, then one summary line per epoch.

    In a terminal or a notebook the bar is live (tqdm, the notebook widget in Jupyter); when
    output goes to a file or a CI log only the summary lines are printed, so logs stay readable.
    The trainer adds one by default; pass `progress=False` to the trainer to have none.

    Args:
        bar: Show the live bar: `True`, `False`, or `None` to decide from where output goes.
        refresh_seconds: The least time between two refreshes of the bar.
        file: Where summary lines go (standard output by default); the bar uses standard error.

    Example:
        >>> import kiln
        >>> progress = kiln.callbacks.ProgressBar(bar=False)  # summary lines only
    """

    #: Under torchrun, runs on rank 0 only: it only prints.
    main_process_only = True

    def __init__(
        self, bar: bool | None = None, refresh_seconds: float = 0.25, file: TextIO | None = None
    ) -> None:
        self.bar = bar
        self.refresh_seconds = refresh_seconds
        self.file = file
        self._bar: Any = None
        self._pending = 0  # batches done but not yet drawn on the bar
        # The optimizer steps before the epoch: the summary line counts the epoch's own, as
        # `TextLog` does (with gradient accumulation, fewer than its batches).
        self._steps_before_epoch = 0
        self._next_refresh = 0.0

    def _show_bar(self) -> bool:
        if self.bar is not None:
            return self.bar
        return in_notebook() or sys.stderr.isatty()

    def _print(self, line: str) -> None:
        print(line, file=self.file or sys.stdout, flush=True)

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        """Open the epoch's bar."""
        self._pending = 0
        self._steps_before_epoch = trainer.state.step
        self._next_refresh = time.monotonic() + self.refresh_seconds
        if self._show_bar():
            state = trainer.state
            self._bar = _bar_class()(
                total=state.num_batches,
                desc=f"Epoch {state.epoch + 1}/{state.max_epochs}",
                leave=False,
                unit="batch",
                dynamic_ncols=True,
                file=sys.stderr,
                mininterval=0,  # we already refresh at most every `refresh_seconds`
            )

    def on_train_batch_end(self, trainer: Trainer) -> None:
        """Count the batch; refresh the bar when `refresh_seconds` have passed."""
        self._pending += 1
        if self._bar is not None and time.monotonic() >= self._next_refresh:
            self._refresh(trainer)

    def _refresh(self, trainer: Trainer) -> None:
        output = trainer.state.output
        if output is not None and output.loss is not None:
            # The only read from the device, at most once per refresh.
            self._bar.set_postfix_str(f"loss: {float(output.loss.detach()):.4f}", refresh=False)
        self._bar.update(self._pending)  # draws the bar with its new postfix
        self._pending = 0
        self._next_refresh = time.monotonic() + self.refresh_seconds

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Close the bar and print the epoch's summary line."""
        self._close()
        state = trainer.state
        self._print(epoch_summary(state, state.step - self._steps_before_epoch))

    def on_fit_end(self, trainer: Trainer) -> None:
        """Close a bar left open by an exception, and say why the run stopped early."""
        self._close()
        line = stop_line(trainer.state)
        if line is not None:
            self._print(line)
