"""Atomic writes and safe reads of checkpoint files.

A file is written to a temporary name in the same directory, flushed to the disk (`fsync`),
renamed over the target (atomic on POSIX and Windows), and the directory is flushed so the new
name survives a power cut. Until the rename, the previous file stays whole; if anything fails,
the temporary file is removed and the previous file is untouched.

Reading uses `torch.load(weights_only=True)`: tensors and plain data (dicts, lists, numbers,
strings) only. A file that holds anything else, such as a pickled object whose loading would run
code, is refused before anything runs.
"""

from __future__ import annotations

import errno
import os
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch


class CheckpointError(OSError):
    """A checkpoint could not be written or read; the message says why and what to do."""


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open directories; its rename is durable enough
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], object]) -> Path:
    """Create or replace the file `path` whole, and return the path.

    `write` fills a temporary file beside `path`, which is flushed to the disk and renamed over
    `path`. Every file kiln writes whole (checkpoints, exported weights, plots, rewritten logs)
    goes through here.

    Args:
        path: The file to write; its directory must exist.
        write: Called once with the temporary file, opened for writing bytes.

    Raises:
        CheckpointError: If the file cannot be written (a full disk, no permission); the
            previous file at `path`, if any, is left as it was.

    Example:
        >>> import tempfile
        >>> path = atomic_write(tempfile.mkdtemp() + "/notes.txt", lambda file: file.write(b"hi"))
        >>> path.read_text()
        'hi'
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, CheckpointError):
            raise
        full = error.errno == errno.ENOSPC
        reason = "the disk is full" if full else (error.strerror or str(error))
        raise CheckpointError(
            error.errno,
            f"Could not write {path}: {reason}. The previous file there, if any, is intact. "
            "Free some space or choose another directory.",
        ) from error
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def atomic_save(obj: Any, path: str | Path) -> Path:
    """Write `obj` with `torch.save` to `path` atomically (see `atomic_write`), return the path.

    Args:
        obj: Tensors and plain data (what `safe_load` accepts back).
        path: The file to write; its directory must exist.

    Raises:
        CheckpointError: If the file cannot be written (a full disk, no permission); the
            previous file at `path`, if any, is left as it was.

    Example:
        >>> import tempfile, torch
        >>> from kiln.checkpoint import atomic_save, safe_load
        >>> path = atomic_save({"w": torch.ones(2)}, tempfile.mkdtemp() + "/state.pt")
        >>> safe_load(path)["w"]
        tensor([1., 1.])
    """
    return atomic_write(path, lambda file: torch.save(obj, file))


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint written by `atomic_save`, running no code from the file.

    Args:
        path: The file.
        map_location: Where tensors are placed (the CPU by default).

    Raises:
        CheckpointError: If the file is missing, or holds anything but tensors and plain data.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(errno.ENOENT, f"No checkpoint at {path}.")
    try:
        with warnings.catch_warnings():
            # A plain pickle (not torch's zip format) draws a protocol warning; it is refused below.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            errno.EINVAL,
            f"Refused to load {path}: it holds objects other than tensors and plain data, and "
            "loading them could run code from the file. kiln writes only tensors and plain data; "
            "if you trust the file and it comes from elsewhere, load it yourself with "
            "`torch.load(path, weights_only=False)`.",
        ) from error
