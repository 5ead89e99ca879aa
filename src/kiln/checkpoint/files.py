"""Atomic writes and safe reads of checkpoint files.

A file is written to a temporary name in the same directory, flushed to the disk (`fsync`),
renamed over the target (atomic on POSIX and Windows), and the directory is flushed so the new
name survives a power cut. Until the rename, the previous file stays whole; if anything fails,
the temporary file is removed and the previous file is untouched. A process killed while
writing cannot remove it: the writers clean their folders with `remove_leftover_temporaries`
when `fit` starts.

Reading uses `torch.load(weights_only=True)`: tensors and plain data (dicts, lists, numbers,
strings) only. A file that holds anything else, such as a pickled object whose loading would run
code, is refused before anything runs; one that is damaged, or declares more memory than it
holds, is refused with a `CheckpointError` naming it (the checks are in `reading.py`).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch


class CheckpointError(OSError, ValueError):
    """A checkpoint could not be written or read, or is damaged; the message says what and why.

    An `OSError`, as it has always been (its `errno` says what failed), and a `ValueError`: a
    file that is damaged or holds the wrong things is a bad value, and code that caught the
    `ValueError` kiln raised for such files before still catches it.
    """


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open directories; its rename is durable enough
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


#: The names of `atomic_write`'s temporary files: `.{name}.kiln-{process id}.tmp`.
_TEMPORARY = re.compile(r"\..+\.kiln-(\d+)\.tmp")


def temporary_path(path: Path) -> Path:
    """Return the temporary file that `atomic_write` fills for `path`: beside it, hidden.

    The name, `.{name}.kiln-{process id}.tmp`, is kiln's own, so that
    `remove_leftover_temporaries` can tell these files from a user's.

    Example:
        >>> temporary_path(Path("runs/a/last.ckpt")).name.startswith(".last.ckpt.kiln-")
        True
    """
    return path.with_name(f".{path.name}.kiln-{os.getpid()}.tmp")


def _still_writing(process: int) -> bool:
    """Whether the process `process` may still be writing its temporary file."""
    if process == os.getpid() or os.name != "posix":
        # This process cleans before it writes; a file with its number is an older one's (the
        # number reused, as in a restarted container). Elsewhere a file open for writing
        # cannot be removed, which `remove_leftover_temporaries` then leaves alone.
        return False
    try:
        os.kill(process, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # it exists, under another user
        return True
    return True


def remove_leftover_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files that writes killed halfway left in `folder`; return them.

    Only files named as `atomic_write` names them, by processes that no longer run, are
    removed: a user's files, folders, and the file another running process is writing stay.
    Nothing happens when `folder` does not exist.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / ".best.ckpt.kiln-999999999.tmp").write_bytes(b"half")
        >>> _ = (folder / ".notes.tmp").write_bytes(b"a user's")
        >>> [path.name for path in remove_leftover_temporaries(folder)]
        ['.best.ckpt.kiln-999999999.tmp']
        >>> sorted(path.name for path in folder.iterdir())
        ['.notes.tmp']
        >>> import shutil; shutil.rmtree(folder)
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # missing, or not a folder
        return removed
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        if _still_writing(int(match.group(1))):
            continue
        try:
            os.unlink(entry.path)
        except OSError:  # gone already, or open elsewhere (Windows)
            continue
        removed.append(Path(entry.path))
    return removed


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
    temporary = temporary_path(path)
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _fsync_directory(path.parent)
    except (OSError, RuntimeError) as raised:
        temporary.unlink(missing_ok=True)
        error = _write_failure(raised)
        if error is None or isinstance(raised, CheckpointError):
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


def _write_failure(raised: BaseException) -> OSError | None:
    """The `OSError` behind a failed write: `raised` itself, or what torch's writer met.

    `torch.save` reports a write that failed inside its zip writer (a full disk) as a
    `RuntimeError` ("unexpected pos"), with the `OSError` of the file as its context.
    """
    seen: set[int] = set()
    error: BaseException | None = raised
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    if isinstance(raised, RuntimeError) and "inline_container" in str(raised):
        return OSError(errno.EIO, "torch could not write the whole file (is the disk full?)")
    return None


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

    Before torch reads anything, the file is checked to be torch's zip archive that declares no
    more data than it holds (`kiln.checkpoint.reading`); after, every tensor is checked to hold
    the values it counts. A file that asks for more memory than its size is refused before any
    of it is allocated.

    Raises:
        CheckpointError: If the file is missing, a directory, empty, damaged (truncated, bit
            flips, text) or not a checkpoint, or holds anything but tensors and plain data, or
            tensors that declare more values than the file holds; the message names the file.
    """
    from kiln.checkpoint import reading  # it imports this module

    path = Path(path)
    size = reading.check_archive(path)
    try:
        contents = torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except Exception as error:  # whatever torch meets first in a damaged file
        raise reading.read_error(path, error) from error
    reading.check_contents(contents, path, size)
    return contents
