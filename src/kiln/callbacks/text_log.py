"""`TextLog`: the console's epoch summaries, appended to a text file that resumes exactly.

What lives here: the callback. What does not: the lines themselves, built by the same functions
the `ProgressBar` prints with (`progress.py`), and the append-only file (`log_files.py`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from kiln.callbacks.base import Callback
from kiln.callbacks.log_files import AppendOnlyLog, check_path_argument
from kiln.callbacks.progress import epoch_summary, stop_line

if TYPE_CHECKING:
    from pathlib import Path

    from kiln.trainer import Trainer


class TextLog(Callback):
    """Append the line the console shows after each epoch to a text file.

    The file gets, as the console does, `Epoch 2/10  38 steps  0.99s  loss: 0.2294  ...` after
    every epoch and `Stopped after epoch N: reason` when the run stops early, so a run that
    printed nowhere (a job on a cluster, a notebook since closed) can be read afterwards. Lines
    are added after what the file holds already: every run of a script adds its lines. Each line
    is flushed when written, so a crash loses none.

    With `trainer.dir` set, the log resumes exactly with the run: `fit(..., resume=True)` first
    removes the lines of an epoch that ran after the last checkpoint, so none appears twice. A
    file inside `trainer.dir` belongs to the run there: a run that starts from scratch (one
    killed before its first checkpoint, resumed) starts it anew.

    Args:
        path: The file; a relative path is relative to `trainer.dir` when the trainer has one,
            else to the current directory.

    Example:
        >>> import tempfile, torch, kiln
        >>> folder = tempfile.TemporaryDirectory()
        >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu",
        ...                        callbacks=[kiln.callbacks.TextLog("log.txt")],
        ...                        progress=False, dir=folder.name)
        >>> _ = trainer.fit((torch.randn(8, 2), torch.randn(8, 1)), epochs=2, batch_size=4)
        >>> [line[:18] for line in (trainer.dir / "log.txt").read_text().splitlines()]
        ['Epoch 1/2  2 steps', 'Epoch 2/2  2 steps']
        >>> folder.cleanup()
    """

    #: Under torchrun, runs on rank 0 only: it only writes a file.
    main_process_only = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = check_path_argument("TextLog", path)
        self._log = AppendOnlyLog("TextLog", self.path)
        # Optimizer steps completed before the current epoch (saved, so that an epoch resumed
        # from a checkpoint taken in its middle still counts all its steps).
        self._steps_before_epoch = 0

    @property
    def file(self) -> Path:
        """The file written, once `fit` has placed it (see `path`)."""
        return self._log.path

    def on_fit_start(self, trainer: Trainer) -> None:
        """Open the file, cutting off what a resumed run wrote after its checkpoint."""
        log = self._log
        log.locate(trainer)
        if log.continues_run(trainer):
            log.open(end=log.size)
        else:  # inside `trainer.dir`, a run starting from scratch starts its log anew
            log.open(keep=not log.starts_anew(trainer))
        if not trainer.state.resumed:
            self._steps_before_epoch = trainer.state.step

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Append the epoch's summary line."""
        state = trainer.state
        line = epoch_summary(state, state.step - self._steps_before_epoch)
        self._steps_before_epoch = state.step
        self._log.write(line + "\n", sync=trainer.dir is not None)  # before the checkpoint

    def on_fit_end(self, trainer: Trainer) -> None:
        """Say why the run stopped early, if it did, and close the file."""
        line = stop_line(trainer.state)
        if line is not None:
            self._log.write(line + "\n", sync=False)
        self._log.close()

    def state_dict(self) -> dict[str, Any]:
        """Return the file's size in bytes after the last line, and the step count so far."""
        return {"size": self._log.size, "steps_before_epoch": self._steps_before_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; the next resumed `fit` cuts the file there."""
        size = state.get("size")
        self._log.size = None if size is None else int(size)
        self._steps_before_epoch = int(state.get("steps_before_epoch", 0))
