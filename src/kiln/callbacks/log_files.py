"""Files that logging callbacks write: append-only logs that resume exactly, atomic replacement.

A log (CSV rows, text lines) grows by appending. The trainer saves its checkpoint after the
`epoch_end` callbacks ran, so a run killed between the two has written rows the checkpoint does
not know about; the resumed run redoes that epoch and would write them again. `AppendOnlyLog`
therefore remembers the file's size in bytes after its last write, which goes into the
checkpoint with the callback's state; a resumed run cuts the file back to that size first.
A run killed before its first checkpoint has nothing to resume: it starts again from scratch,
so a log inside the trainer's `dir` starts again too (`starts_anew`); a log elsewhere is the
user's file, which keeps what it holds.

What lives here: `AppendOnlyLog` and `resolve_log_path`. What does not: what
the rows say (`csv_logger.py`, `text_log.py`) or when the checkpoint is written (`trainer.py`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import IO, TYPE_CHECKING

from kiln.checkpoint.files import atomic_write, remove_leftover_temporaries

if TYPE_CHECKING:
    from kiln.trainer import Trainer


def check_path_argument(owner: str, path: object) -> Path:
    """Return `path` as a `Path`, or raise a clear error naming `owner` (a callback class).

    Raises:
        TypeError: If `path` is not a string or a path.
        ValueError: If `path` is empty.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"{owner}: `path` must be a file name or path, such as 'log.csv'; received "
            f"{type(path).__name__}."
        )
    if not os.fspath(path):
        raise ValueError(f"{owner}: `path` is empty; give a file name such as 'log.csv'.")
    return Path(path).expanduser()


def resolve_log_path(path: Path, trainer: Trainer) -> Path:
    """Place a relative `path` in the trainer's experiment directory, else the current one.

    The result is absolute, so a later change of working directory does not move the file.
    """
    if path.is_absolute():
        return path
    base = trainer.dir if trainer.dir is not None else Path.cwd()
    return (base / path).absolute()


class AppendOnlyLog:
    r"""An append-only text file (UTF-8) whose end is saved with the run.

    `size` is the file's length in bytes after the last complete write: a callback returns it
    from `state_dict`, and on resuming passes it to `open(end=...)` to drop what was written
    after the checkpoint. Every write is flushed, so a crash loses nothing already written;
    `sync=True` also forces it to the disk, so that a row is never lost while the checkpoint
    written after it survives a power cut.

    Args:
        owner: The name of the callback using the file, for messages.
        path: Where the file goes, as the user gave it (see `resolve_log_path`).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> folder = tempfile.TemporaryDirectory()
        >>> log = AppendOnlyLog("Demo", Path(folder.name) / "log.txt")
        >>> log.open(keep=False)
        >>> log.write("first\n", sync=False); log.write("second\n", sync=True)
        >>> log.size
        13
        >>> log.close(); log.open(end=6); log.write("again\n", sync=False); log.close()
        >>> log.path.read_text()
        'first\nagain\n'
        >>> folder.cleanup()
    """

    def __init__(self, owner: str, path: Path) -> None:
        self.owner = owner
        self.requested = path
        self.path: Path = path
        self.size: int | None = None
        self._file: IO[bytes] | None = None

    def locate(self, trainer: Trainer) -> Path:
        """Resolve the file's place for this run (see `resolve_log_path`) and return it.

        The temporary files that a rewrite (`replace`) killed halfway left beside it go.

        Raises:
            ValueError: If the path names a directory.
        """
        self.path = resolve_log_path(self.requested, trainer)
        if self.path.is_dir():
            raise ValueError(
                f"{self.owner}: {self.path} is a directory, but the log is a file. Pass the "
                f"path of a file, such as {str(self.path / self.requested.name)!r}."
            )
        remove_leftover_temporaries(self.path.parent)
        return self.path

    def continues_run(self, trainer: Trainer) -> bool:
        """Tell whether this `fit` continues the run this file already logs.

        That is a resumed run (`size` then comes from the checkpoint) or a later `fit` call of a
        trainer this log already wrote for; the epoch numbers go on, so the file does too.
        """
        return self.size is not None and (trainer.state.resumed or trainer.state.epoch > 0)

    def starts_anew(self, trainer: Trainer) -> bool:
        """Tell whether this `fit` starts the run of the trainer's `dir` from scratch, in it.

        That is a first epoch, not resumed, of a trainer with a `dir` that holds this file:
        what the file holds was written by an attempt that saved no checkpoint (a run killed
        in its first epoch, then resumed or started again) or by the run this one replaces, so
        the log starts empty rather than repeat epochs. A log outside the directory is the
        user's, shared between runs: it is never emptied here.
        """
        state, directory = trainer.state, trainer.dir
        if directory is None or state.epoch > 0 or state.resumed:
            return False
        return self.path.resolve().is_relative_to(directory.resolve())

    def has_content(self) -> bool:
        """Tell whether the file exists and is not empty."""
        return self.path.is_file() and self.path.stat().st_size > 0

    def open(self, *, keep: bool = True, end: int | None = None) -> None:
        """Open the file for appending, creating it and its directory when missing.

        Args:
            keep: Keep what the file holds; `False` empties it.
            end: Cut the file to this many bytes first: the `size` saved with the run.
        """
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if end is not None:
            self._cut_to(end)
        # Kept open across events (a row per epoch or batch); `close` closes it.
        self._file = open(self.path, "ab" if keep or end is not None else "wb")  # noqa: SIM115
        self.size = self._file.tell()

    def _cut_to(self, end: int) -> None:
        actual = self.path.stat().st_size if self.path.is_file() else None
        if actual is not None and actual >= end:
            os.truncate(self.path, end)
            return
        # Never extend the file: that would fill it with zero bytes.
        found = "is missing" if actual is None else f"has {actual} bytes"
        warnings.warn(
            f"{self.owner}: the run being resumed had written {end} bytes to {self.path}, but "
            f"the file {found} now: something outside kiln removed lines. The new lines are "
            "appended to what is there; restore the file from a backup to have them all.",
            RuntimeWarning,
            stacklevel=2,
        )

    def write(self, text: str, *, sync: bool) -> None:
        """Append `text` and flush it; with `sync`, also force it to the disk."""
        if self._file is None:
            raise RuntimeError(
                f"{self.owner} wrote to {self.path} before opening it; this is a bug in kiln."
            )
        self._file.write(text.encode("utf-8"))
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())
        self.size = self._file.tell()

    def replace(self, text: str) -> None:
        """Replace the whole content by `text` atomically, and go on appending after it."""
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda file: file.write(text.encode("utf-8")))
        self.open(keep=True)

    def close(self) -> None:
        """Close the file (it stays as written); `open` continues it."""
        if self._file is not None:
            self._file.close()
            self._file = None
