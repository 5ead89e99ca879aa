"""The auto preset's console report: one line per epoch, and how the run ended.

Such as::

    MESSAGE: name: digits / train score: 0.2026 / validation score: 0.2002 / at epoch: 1 / cpu / elapsed time 3s / lr: 0.001 / Got improvement
    MESSAGE: name: digits / train score: 0.1890 / validation score: 0.2010 / at epoch: 2 / cpu / elapsed time 5s / lr: 0.001 / 1 epochs till early stop

What lives here: `Report`, a callback that reads the epoch's logs and the early-stopping
countdown. What does not: deciding anything (`EarlyStopping`, `RestartOnPlateau` print their own
restarts), kiln's generic progress bar (`kiln.callbacks.ProgressBar`).

Compatibility: PytorchTrainer's report lines, word for word.
"""  # noqa: E501

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from kiln.callbacks.base import Callback
from kiln.callbacks.early_stopping import EarlyStopping

if TYPE_CHECKING:
    from kiln.trainer import Trainer


def report_line(name: str, device: Any, seconds: float, logs: dict[str, Any], note: str) -> str:
    """Return the line printed after an epoch.

    Example:
        >>> logs = {"epoch": 1, "score": 0.5, "val_score": 0.25, "lr": 0.001}
        >>> report_line("demo", "cpu", 3.2, logs, "Got improvement")
        'MESSAGE: name: demo / train score: 0.5000 / validation score: 0.2500 / at epoch: 1 / cpu / elapsed time 3s / lr: 0.001 / Got improvement'
    """  # noqa: E501
    parts = [f"MESSAGE: name: {name}"]
    for key, label in (("score", "train score"), ("val_score", "validation score")):
        if key in logs:
            parts.append(f"{label}: {logs[key]:.4f}")
    parts += [f"at epoch: {int(logs['epoch'])}", str(device), f"elapsed time {seconds:.0f}s"]
    if "lr" in logs:
        parts.append(f"lr: {logs['lr']:.3g}")
    if note:
        parts.append(note)
    return " / ".join(parts)


class Report(Callback):
    """Print a report line after each epoch, and why the run ended.

    The note at the end of a line is "Got improvement" when the `EarlyStopping` among the
    trainer's callbacks saw one, else its countdown ("N epochs till early stop"). Put it after
    the `EarlyStopping` in the callback list.

    Args:
        name: The run's name.
        file: Where lines go (standard output by default).

    Example:
        >>> import io, torch, kiln
        >>> out = io.StringIO()
        >>> trainer = kiln.Trainer(kiln.MLP(2, [], 1), loss="mse", device="cpu", progress=False,
        ...                        callbacks=[Report("demo", file=out)])
        >>> _ = trainer.fit((torch.randn(8, 2), torch.randn(8, 1)), epochs=1)
        >>> out.getvalue().startswith("MESSAGE: name: demo / at epoch: 1 / cpu / elapsed time")
        True
    """

    def __init__(self, name: str, file: TextIO | None = None) -> None:
        self.name, self.file = name, file
        self._started = time.monotonic()

    def _print(self, line: str) -> None:
        print(line, file=self.file or sys.stdout, flush=True)

    def on_fit_start(self, trainer: Trainer) -> None:
        """Start the clock."""
        self._started = time.monotonic()

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Print the epoch's line."""
        stopper = next((cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping)), None)
        note = ""
        if stopper is not None and stopper.monitor in trainer.state.logs:
            if stopper.best_epoch == trainer.state.epoch:
                note = "Got improvement"
            elif stopper.remaining is not None:
                note = f"{stopper.remaining} epochs till early stop"
        seconds = time.monotonic() - self._started
        self._print(report_line(self.name, trainer.device, seconds, trainer.state.logs, note))

    def on_fit_end(self, trainer: Trainer) -> None:
        """Say why the run ended before its last epoch, if it did."""
        reason = trainer.state.stop_reason
        if reason and trainer.state.error is None:
            epoch = trainer.state.epoch
            self._print(f"MESSAGE: name: {self.name} / stopped at epoch {epoch}: {reason}")
