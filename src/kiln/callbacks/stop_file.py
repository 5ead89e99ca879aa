"""`StopFile`: end a run cleanly when a file such as `stop_{name}` appears.

What lives here: which file is watched, and stopping the run after the epoch in which it
appeared. What does not: stopping on signals such as Ctrl-C (the trainer's loop) and the stop
itself (`Trainer.request_stop`, which ends the loop once the epoch is logged and saved).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.callbacks.base import Callback

if TYPE_CHECKING:
    from kiln.trainer import Trainer


class StopFile(Callback):
    """Stop training after the current epoch when a stop file exists; then delete the file.

    Create the file (`touch stop_digits`) to end a run on demand without killing it: the epoch
    under way finishes, is validated, logged and saved, and `fit` returns normally, so that
    every end-of-run callback (restoring or averaging the best weights, the final report)
    runs. The file is looked for once per epoch, never per batch, so it costs nothing. The stop
    is recorded in `trainer.state.stop_reason` ("on demand ..."), which the progress bar and
    the logs print; a later `fit(..., resume=True)` of the run finds it ended, as after early
    stopping.

    The file is deleted when `fit` ends, after the checkpoint that records the stop is written,
    so that the stop survives a kill in between: a run killed before that checkpoint finds the
    file again when resumed and stops after the same epoch, and a run killed after it is ended,
    and its resume deletes the file. A file that cannot be deleted draws a warning (the next
    run watching it would stop after its first epoch).

    The file watched is, in this order: `path` when given; else `stop_{name}` in the working
    directory; else `stop_{dir name}` in the working directory for a trainer with an experiment
    directory; else `stop`. A relative path is read from the working directory at the start of
    `fit`; `file` holds the full path then.

    Args:
        name: The run's name, giving the file `stop_{name}`.
        path: The file's whole path instead.

    Raises:
        TypeError: If `name` or `path` has the wrong type.
        ValueError: If both are given, or `name` is empty or holds a path separator.

    Example:
        >>> import os, tempfile, torch, kiln
        >>> stop = os.path.join(tempfile.mkdtemp(), "stop_demo")
        >>> open(stop, "w").close()  # as `touch stop_demo` in a shell, mid-run
        >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu",
        ...                        callbacks=[StopFile(path=stop)], progress=False)
        >>> history = trainer.fit((torch.randn(8, 2), torch.randn(8, 1)), epochs=5)
        >>> len(history), os.path.exists(stop)
        (1, False)
        >>> trainer.state.stop_reason == f"on demand (found the stop file {stop})"
        True
    """

    #: Under torchrun, runs on rank 0 only (it reads and deletes a file); the stop it asks for
    #: reaches every rank at the end of the epoch.
    main_process_only = True

    def __init__(self, name: str | None = None, path: str | os.PathLike[str] | None = None) -> None:
        if name is not None and path is not None:
            raise ValueError(
                f"StopFile takes `name` or `path`, not both; received name={name!r} and "
                f"path={os.fspath(path)!r}. Pass name='run' for ./stop_run, or the whole path."
            )
        if name is not None:
            if not isinstance(name, str):
                raise TypeError(f"StopFile: `name` must be a str; received {type(name).__name__}.")
            if not name or "/" in name or "\\" in name:
                raise ValueError(
                    "StopFile: `name` must be a non-empty name without '/' or '\\' (the file "
                    f"is ./stop_{{name}}); received {name!r}. For a file elsewhere pass `path=`."
                )
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(
                f"StopFile: `path` must be a str or a path; received {type(path).__name__}."
            )
        self.name = name
        self.path = None if path is None else Path(path)
        self.file: Path | None = None
        #: Whether this callback stopped the run (saved with it): the file then goes at the end.
        self.stopped = False

    def on_fit_start(self, trainer: Trainer) -> None:
        """Settle which file to watch, relative to the working directory of now."""
        if self.path is not None:
            file = self.path
        elif self.name is not None:
            file = Path(f"stop_{self.name}")
        elif trainer.dir is not None:
            file = Path(f"stop_{trainer.dir.name}")
        else:
            file = Path("stop")
        self.file = file.absolute()
        if not trainer.state.resumed:
            self.stopped = False

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Stop when the file exists; it is deleted when `fit` ends, once the stop is saved."""
        file = self.file
        if file is None or not file.exists():
            return
        reason = f"on demand (found the stop file {file})"
        trainer.request_stop(reason)
        # Another stop of the same step may have come first (a spent `max_steps`, which a
        # resume continues): the file then stays, to stop the resumed run.
        self.stopped = self.stopped or trainer.state.stop_reason == reason

    def on_fit_end(self, trainer: Trainer) -> None:
        """Delete the file once the run's stop is saved, so that the next run is not stopped.

        After an error or a signal the epoch's checkpoint was not written: the file stays, and
        stops the resumed run again.
        """
        file, state = self.file, trainer.state
        if not self.stopped or file is None or state.error is not None or state.interrupt:
            return
        try:
            file.unlink(missing_ok=True)
        except OSError as error:
            warnings.warn(
                f"StopFile: the run stopped on demand, but the stop file {file} could not be "
                f"deleted ({error.strerror or error}). Delete it, or the next run watching it "
                "stops after its first epoch.",
                RuntimeWarning,
                stacklevel=2,
            )

    def state_dict(self) -> dict[str, Any]:
        """Return whether this callback stopped the run (its file is deleted at the end)."""
        return {"stopped": self.stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (nothing, from a checkpoint of an older kiln)."""
        self.stopped = bool(state.get("stopped", False))
