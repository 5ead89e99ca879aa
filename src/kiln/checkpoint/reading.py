"""Reading a checkpoint file that may be damaged or hostile: checks before and after torch reads it.

`torch.load(weights_only=True)` runs no code from a file, but it trusts what the file declares:
a storage's size, a tensor's shape and strides. A small file can thus ask for gigabytes (a tensor
of 2**31 elements over one value, with stride 0, which the first copy turns into real memory),
and a damaged file fails with whatever error torch meets first (`EOFError`, `KeyError: 101`).
`files.safe_load` calls the checks here, so that every such file gives one `CheckpointError`
that names it and says what is wrong, before anything is allocated or restored:

- `check_archive`, before torch reads anything: the path is a file, not empty, in the zip
  format `torch.save` writes; its records declare no more data than the file holds; its pickle
  calls none of the constructors that allocate memory from sizes in the file (`bytearray`,
  quantized and device tensors).
- `read_error`, for an error torch raised while reading: refused content, or damage.
- `check_contents`, after: every tensor's values are backed by its storage (no stride-0 or
  overlapping view counts more elements than it holds), and no storage is bigger than the file.

What does not live here: writing files, and `CheckpointError` itself (`files.py`).
"""

from __future__ import annotations

import _compat_pickle
import errno
import pickle
import stat
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from kiln.checkpoint.files import CheckpointError

#: Constructors that torch's weights-only reader allows and that allocate memory from sizes
#: the file declares, before anything could compare them with the file. kiln never writes them.
_ALLOCATING = (
    "builtins.bytearray",
    "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor",
    "torch._utils._rebuild_device_tensor_from_numpy",
    "torch._utils._rebuild_wrapper_subclass",
    "torch._utils._rebuild_nested_tensor",
)
#: What torch's weights-only reader refuses as code, by the words of its messages.
_REFUSALS = (
    "GLOBAL ",
    "is blocked",
    "unrecognized function",
    "Can only create new object",
    "must be imported",
)
_ZIP = b"PK\x03\x04"
_PICKLE = b"\x80"  # a pickle's PROTO opcode: torch's legacy format, or pickle.dump
_LOCAL_HEADER = 30  # the fixed part of a zip member's local header


def _spellings(dotted: str) -> list[bytes]:
    r"""Every way a pickle's GLOBAL opcode can name `dotted` to torch's reader.

    The reader joins module and name with a dot, so the split may be at any dot, and maps
    Python 2 names (`__builtin__`) to Python 3 ones.

    Example:
        >>> sorted(_spellings("builtins.bytearray"))
        [b'__builtin__\nbytearray\n', b'builtins\nbytearray\n']
    """
    parts = dotted.split(".")
    spellings = []
    for cut in range(1, len(parts)):
        module, name = ".".join(parts[:cut]), ".".join(parts[cut:])
        aliases = [old for old, new in _compat_pickle.IMPORT_MAPPING.items() if new == module]
        spellings += [f"{alias}\n{name}\n".encode() for alias in (module, *aliases)]
        renamed = [old for old, new in _compat_pickle.NAME_MAPPING.items() if new == (module, name)]
        spellings += [f"{old[0]}\n{old[1]}\n".encode() for old in renamed]
    return spellings


_ALLOCATING_SPELLINGS = {dotted: _spellings(dotted) for dotted in _ALLOCATING}


def damaged(path: Path, problem: str) -> CheckpointError:
    """The error for a file that is damaged or is not a checkpoint: names it, says what is wrong."""
    return CheckpointError(
        errno.EINVAL,
        f"{path} is damaged or is not a checkpoint: {problem}. A crash or a full disk while it "
        "was copied, or another program writing it, leaves files like this (kiln's own writes "
        "are atomic). Load an intact copy (an earlier checkpoint, a best/ file), or write it "
        "again.",
    )


def refused(path: Path, problem: str) -> CheckpointError:
    """The error for a file whose contents kiln will not read: names it, says why."""
    return CheckpointError(errno.EINVAL, f"Refused to load {path}: {problem}.")


def check_archive(path: Path) -> int:
    """Check `path` before torch reads it, and return its size in bytes.

    Raises:
        CheckpointError: If it is missing, a directory, empty, not in `torch.save`'s zip
            format, a zip archive that is truncated or declares more data than the file holds,
            or a pickle that asks for a constructor that allocates from declared sizes.

    Example:
        >>> import tempfile, torch
        >>> path = Path(tempfile.mkdtemp()) / "state.pt"
        >>> torch.save({"w": torch.ones(3)}, path)
        >>> check_archive(path) == path.stat().st_size
        True
        >>> _ = path.write_text("epoch 3")
        >>> check_archive(path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        kiln.checkpoint.files.CheckpointError: [Errno 22] ... is damaged or is not a checkpoint: ...
    """
    try:
        status = path.stat()
    except FileNotFoundError:
        raise CheckpointError(errno.ENOENT, f"No checkpoint at {path}.") from None
    except OSError as error:
        raise CheckpointError(
            error.errno, f"Could not read {path}: {error.strerror or error}."
        ) from error
    if stat.S_ISDIR(status.st_mode):
        raise CheckpointError(
            errno.EISDIR,
            f"{path} is a directory, where a checkpoint file was expected. Pass the file "
            "(such as last.ckpt, or a file in best/), or move the directory out of the way.",
        )
    if not stat.S_ISREG(status.st_mode):
        raise damaged(path, "it is not a regular file (a pipe, a device or a socket)")
    size = status.st_size
    if size == 0:
        raise damaged(path, "it is empty (0 bytes), where torch.save writes a zip archive")
    with open(path, "rb") as file:
        head = file.read(16)
    if head.startswith(_PICKLE):
        raise refused(
            path,
            "it is a bare pickle (the format of torch.save before PyTorch 1.6, or of "
            "pickle.dump), not the zip archive torch.save writes now; kiln reads only the "
            "archive, whose sizes it checks before anything is allocated and which holds no "
            "code. If you trust the file, convert it once: torch.save(torch.load(path, "
            "weights_only=True), path)",
        )
    if not head.startswith(_ZIP):
        text = head.isascii() and all(c.isprintable() or c.isspace() for c in head.decode())
        kind = "text" if text else "bytes"
        raise damaged(
            path,
            f"it starts with the {kind} {head!r}, where torch.save writes a zip archive "
            "(starting with b'PK')",
        )
    _check_members(path, size)
    return size


def _check_members(path: Path, size: int) -> None:
    """Check the zip archive's records against the file, and its pickles' constructors."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            declared = sum(member.file_size for member in members)
            if declared > size:
                raise damaged(
                    path,
                    f"its records declare {declared} bytes of data, more than the {size} "
                    "bytes the file holds",
                )
            pickles = [member for member in members if member.filename.endswith(".pkl")]
            if not pickles:
                raise damaged(path, "it is a zip archive without the data.pkl of torch.save")
            for member in pickles:
                _check_pickle(path, _member_bytes(archive, member, path))
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, struct.error, ValueError, OSError) as error:
        # A damaged directory of records: bad names (UnicodeDecodeError), offsets outside the
        # file (OSError: Invalid argument), a bad CRC.
        raise damaged(path, f"its zip archive is truncated or corrupt ({error})") from error


def _member_bytes(archive: zipfile.ZipFile, member: zipfile.ZipInfo, path: Path) -> bytes:
    """A member's bytes; the CRC is checked unless torch wrote none (`set_crc32_options`)."""
    if member.CRC or member.compress_type != zipfile.ZIP_STORED:
        return archive.read(member)  # a flipped bit in the pickle shows here, as a bad CRC
    with open(path, "rb") as file:
        file.seek(member.header_offset)
        header = file.read(_LOCAL_HEADER)
        if len(header) < _LOCAL_HEADER or not header.startswith(_ZIP):
            raise zipfile.BadZipFile(f"no local header for {member.filename}")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        file.seek(member.header_offset + _LOCAL_HEADER + name_length + extra_length)
        data = file.read(member.file_size)
    if len(data) < member.file_size:
        raise zipfile.BadZipFile(f"{member.filename} is cut short")
    return data


def _check_pickle(path: Path, data: bytes) -> None:
    for dotted, spellings in _ALLOCATING_SPELLINGS.items():
        if any(spelling in data for spelling in spellings):
            raise refused(
                path,
                f"it calls {dotted}, which allocates memory from sizes written in the file "
                "before anything can check them against it (kiln writes tensors and plain "
                "data only). If you trust the file, load it with torch.load",
            )


def read_error(path: Path, error: Exception) -> CheckpointError:
    """The `CheckpointError` for an error that torch raised while reading `path`.

    Example:
        >>> print(read_error(Path("last.ckpt"), EOFError()))  # doctest: +ELLIPSIS
        [Errno 22] last.ckpt is damaged or is not a checkpoint: reading it failed (EOFError: ...
    """
    detail = str(error)
    if isinstance(error, pickle.UnpicklingError) and any(word in detail for word in _REFUSALS):
        return refused(
            path,
            "it holds objects other than tensors and plain data, and loading them could run "
            "code from the file. kiln writes only tensors and plain data; if you trust the file "
            "and it comes from elsewhere, load it yourself with "
            "`torch.load(path, weights_only=False)`",
        )
    # torch's weights-only messages end with the reader's own words, after advice that does
    # not apply to a damaged file.
    detail = detail.rsplit("WeightsUnpickler error:", 1)[-1].split("\n\nCheck the docum")[0]
    shown = " ".join(detail.split())[:200] or "no message"
    return damaged(path, f"reading it failed ({type(error).__name__}: {shown})")


def check_contents(contents: Any, path: Path, size: int) -> None:
    """Check every tensor in what torch read from `path` (of `size` bytes) against the file.

    A tensor must hold the values it counts: its elements times their size fit in its storage
    (a stride-0 or overlapping view of 2**31 elements over a few bytes does not), and no
    storage is bigger than the file. Containers shared several times are visited once.

    Raises:
        CheckpointError: Naming the file and the tensor's shape, strides and sizes.

    Example:
        >>> check_contents({"w": torch.zeros(4)}, Path("a.pt"), 100)
        >>> check_contents([torch.zeros(1).expand(10**6)], Path("a.pt"), 100)
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        kiln.checkpoint.files.CheckpointError: [Errno 22] Refused to load a.pt: it holds ...
    """
    pending, seen = [contents], set()
    while pending:
        item = pending.pop()
        if isinstance(item, torch.Tensor):
            pending += _tensor_parts(item, path, size)
        elif isinstance(item, (dict, list, tuple, set, frozenset)) and id(item) not in seen:
            seen.add(id(item))
            pending += [*item.keys(), *item.values()] if isinstance(item, dict) else list(item)


def _tensor_parts(tensor: torch.Tensor, path: Path, size: int) -> list[torch.Tensor]:
    """Check a strided tensor; return the parts of a sparse one, to be checked in turn."""
    if tensor.layout == torch.sparse_coo:
        return [tensor._indices(), tensor._values()]
    shown = f"a tensor of shape {tuple(tensor.shape)}"
    if tensor.layout != torch.strided or tensor.is_nested or tensor.is_meta:
        what = "on the meta device, without values" if tensor.is_meta else str(tensor.layout)
        raise refused(path, f"it holds {shown} {what}; kiln reads dense and sparse tensors")
    held = tensor.untyped_storage().nbytes()
    counted = tensor.numel() * tensor.element_size()
    if held > size:
        raise refused(
            path,
            f"it holds {shown} whose storage declares {held} bytes, more than the {size} "
            "bytes of the whole file",
        )
    if counted > held:
        raise refused(
            path,
            f"it holds {shown} and strides {tensor.stride()}: {tensor.numel()} elements "
            f"({counted} bytes) over only {held} bytes of values, an expanded or overlapping "
            "view that the first copy would turn into real memory. A file holds each value it "
            "counts: save tensor.contiguous() (or .clone()) instead of a view",
        )
    return []
