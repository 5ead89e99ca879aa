"""Sharded run checkpoints: every rank writes its own slice, through `torch.distributed.checkpoint`.

A model sharded with FSDP2 never exists whole on one rank, so its checkpoint is not one file.
`save_sharded` writes a directory, `dir/last.dcp/`: torch's distributed checkpoint (DCP) of the
model and optimizer (a `.metadata` file and one `.distcp` file per rank), and `trainer.pt`, the
rest of kiln's trainer state (counters, history, random generators, callback states, plain data
from rank 0). `load_sharded` reads it back into a model sharded over any number of ranks, one
included: DCP reshards on load.

The write is atomic in the same sense as `kiln.checkpoint.files`: the ranks write to
`dir/.last.dcp.tmp/`; once all have finished, rank 0 adds `trainer.pt`, flushes, and swaps the
directories by renaming (the previous checkpoint is moved to `.last.dcp.old` first and removed
only once the new one is in place, and loading falls back to it). A crash at any moment leaves a
complete checkpoint. All ranks must see the same directory (one machine, or a shared disk).

Loading runs no code from the files: DCP's own reader unpickles `.metadata` and non-tensor
values with Python's unrestricted `pickle`, so kiln reads them instead with an unpickler that
builds only DCP's metadata records (`SafeReader`) and with `torch.load(weights_only=True)`
(`SafePlanner`); `trainer.pt` is read with `safe_load`.

What lives here: the directory format and its atomic swap. What does not: when to save (the
trainer's loop), and gathering the whole model for `trainer.save` (`fsdp.full_state`).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import pathlib
import pickle
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader, _StorageInfo
from torch.distributed.checkpoint.planner import ReadItem
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save
from torch.optim import Optimizer

from kiln.checkpoint.files import CheckpointError, atomic_save, safe_load
from kiln.checkpoint.reading import check_contents
from kiln.checkpoint.run import check_format, rank_part
from kiln.distributed.collectives import gather_objects
from kiln.distributed.context import world_size

if TYPE_CHECKING:
    from kiln.trainer import Trainer

#: The sharded counterpart of `last.ckpt` in an experiment directory.
LAST_DCP = "last.dcp"
#: The plain-data part of a sharded checkpoint, inside its directory.
TRAINER_FILE = "trainer.pt"
#: Bumped when the layout of a sharded checkpoint changes incompatibly.
FORMAT = 1

#: What a DCP `.metadata` file may be built from: records of names, shapes and offsets.
_METADATA_CLASSES = {
    ("torch.distributed.checkpoint.metadata", name): getattr(dcp_metadata, name)
    for name in (
        *("Metadata", "StorageMeta", "TensorStorageMetadata", "TensorProperties"),
        *("BytesStorageMetadata", "ChunkStorageMetadata", "MetadataIndex", "_MEM_FORMAT_ENCODING"),
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"): _StorageInfo,
    ("torch", "Size"): torch.Size,
    ("torch.serialization", "_get_layout"): torch.serialization._get_layout,
    ("pathlib", "PosixPath"): pathlib.PurePosixPath,
    ("pathlib", "WindowsPath"): pathlib.PureWindowsPath,
}


class _MetadataUnpickler(pickle.Unpickler):
    """An unpickler that builds DCP metadata records and torch dtypes, and refuses anything else."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _METADATA_CLASSES.get((module, name))
        if allowed is not None:
            return allowed
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(
            f"The checkpoint's metadata asks for {module}.{name}, which is not part of a "
            "torch.distributed.checkpoint metadata file; refused, since building it could run "
            "code from the file."
        )


class SafeReader(FileSystemReader):
    """DCP's file reader, with the metadata read by an unpickler that runs no code.

    Example:
        >>> import tempfile, torch
        >>> path = save_sharded(tempfile.mkdtemp(), torch.nn.Linear(2, 1))
        >>> metadata = SafeReader(path).read_metadata()
        >>> sorted(metadata.state_dict_metadata)
        ['model.bias', 'model.weight']
    """

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_metadata.Metadata:
        """Read `.metadata` (or a rank's own metadata file) with the restricted unpickler."""
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as file:
            metadata = _MetadataUnpickler(file).load()
        if not isinstance(metadata, dcp_metadata.Metadata):
            raise pickle.UnpicklingError(
                f"{path} holds {type(metadata).__name__}, not DCP metadata."
            )
        storage_meta = getattr(metadata, "storage_meta", None) or dcp_metadata.StorageMeta()
        storage_meta.load_id = self.load_id
        metadata.storage_meta = storage_meta
        return metadata


class SafePlanner(DefaultLoadPlanner):
    """DCP's load planner, reading non-tensor values with `torch.load(weights_only=True)`.

    Example:
        >>> SafePlanner().flatten_state_dict
        True
    """

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        """Read one non-tensor value (a learning rate, the betas) as plain data only.

        A tensor in it must hold the values it counts (`kiln.checkpoint.reading`).
        """
        loaded = torch.load(value, weights_only=True)
        check_contents(loaded, Path(read_item.dest_index.fqn), value.getbuffer().nbytes)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def _single_process_quietly() -> Iterator[None]:
    """Silence DCP's warning that it runs in one process: here that is meant."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _rank() -> int:
    return dist.get_rank() if _distributed() else 0


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _parts(model: nn.Module, optimizer: Optimizer | None) -> dict[str, Any]:
    """The model's and optimizer's state as this rank holds it: its slices, keyed by name."""
    if optimizer is None:
        return {"model": get_model_state_dict(model)}
    weights, moments = get_state_dict(model, optimizer)
    return {"model": weights, "optimizer": moments}


def save_sharded(
    directory: str | Path,
    model: nn.Module,
    optimizer: Optimizer | None = None,
    extra: dict[str, Any] | None = None,
    *,
    name: str = LAST_DCP,
) -> Path:
    """Write `model`, `optimizer` and `extra` to `directory/name/`, atomically; every rank calls it.

    Args:
        directory: The experiment directory; it must exist, and be the same for all ranks.
        model: The network, sharded by `shard_model` or not.
        optimizer: Its optimizer, or `None`.
        extra: Plain data and tensors to keep beside them (from rank 0; other ranks' is ignored).
        name: The checkpoint's directory name.

    Returns:
        The checkpoint's directory.

    Example:
        >>> import tempfile, torch
        >>> net = torch.nn.Linear(2, 1)
        >>> path = save_sharded(tempfile.mkdtemp(), net, extra={"epoch": 3})
        >>> sorted(item.name for item in path.iterdir())
        ['.metadata', '__0_0.distcp', 'trainer.pt']
    """
    directory = Path(directory)
    final, temporary, previous = (
        directory / name,
        directory / f".{name}.tmp",
        directory / f".{name}.old",
    )
    if _rank() == 0:
        shutil.rmtree(temporary, ignore_errors=True)  # what a run killed while writing left
    _barrier()
    # Returns once every rank's file and the metadata are written (it ends with a collective).
    with _single_process_quietly():
        dcp_save(_parts(model, optimizer), checkpoint_id=temporary, no_dist=not _distributed())
    if _rank() == 0:
        atomic_save({"format": FORMAT, "extra": extra or {}}, temporary / TRAINER_FILE)
        _fsync(temporary)
        shutil.rmtree(previous, ignore_errors=True)
        if final.exists():
            os.replace(final, previous)
        os.replace(temporary, final)
        _fsync(directory)
        shutil.rmtree(previous, ignore_errors=True)
    _barrier()
    return final


def find_sharded(directory: str | Path, name: str = LAST_DCP) -> Path | None:
    """Return the complete sharded checkpoint in `directory`, or `None` if there is none.

    That is `directory/name/`, or the previous one when a crash came between the two renames
    of `save_sharded`.

    Example:
        >>> import tempfile
        >>> find_sharded(tempfile.mkdtemp()) is None
        True
    """
    for candidate in (Path(directory) / name, Path(directory) / f".{name}.old"):
        if (candidate / TRAINER_FILE).is_file():
            return candidate
    return None


def _check_architecture(
    metadata: dcp_metadata.Metadata, weights: dict[str, Any], model: nn.Module, path: Path
) -> None:
    """Name the weights that differ between the checkpoint and the model, before loading any."""
    saved = {
        key.removeprefix("model."): entry.size
        for key, entry in metadata.state_dict_metadata.items()
        if key.startswith("model.") and isinstance(entry, dcp_metadata.TensorStorageMetadata)
    }
    own = {
        key: tuple(value.shape) for key, value in weights.items() if isinstance(value, torch.Tensor)
    }
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    reshaped = [
        f"{key}: {tuple(saved[key])} in the file, {own[key]} in the model"
        for key in sorted(set(own) & set(saved))
        if tuple(saved[key]) != own[key]
    ]
    if missing or unexpected or reshaped:
        details = [
            *(["missing from the file: " + ", ".join(missing[:10])] if missing else []),
            *(["not in the model: " + ", ".join(unexpected[:10])] if unexpected else []),
            *(["different shapes: " + "; ".join(reshaped[:10])] if reshaped else []),
        ]
        raise ValueError(
            f"The weights in {path} do not fit {type(model).__name__}: it was saved from another "
            f"architecture ({' | '.join(details)}). Build the model as it was when saved."
        )


def load_sharded(
    directory: str | Path,
    model: nn.Module,
    optimizer: Optimizer | None = None,
    *,
    name: str = LAST_DCP,
    check_extra: Callable[[dict[str, Any], str], None] | None = None,
) -> dict[str, Any] | None:
    """Load `directory/name/` into `model` and `optimizer`, on any number of ranks.

    Every rank calls it. The model may be sharded over another number of ranks than when it was
    saved, or not sharded at all (one process, with or without a process group).

    Args:
        directory: The experiment directory.
        model: The network, built as when saved (sharded or not).
        optimizer: Its optimizer, or `None` to load the weights only.
        name: The checkpoint's directory name.
        check_extra: Called with the saved `extra` and the checkpoint's path before anything
            is loaded; it raises to refuse the checkpoint.

    Returns:
        The `extra` saved with it, or `None` when there is no checkpoint.

    Raises:
        ValueError: If the checkpoint's layout is not one this kiln reads, or its weights'
            names or shapes differ from the model's.
        CheckpointError: If a file in it holds anything but tensors, plain data and DCP's
            metadata records (refused before anything in it runs), or cannot be read.

    Example:
        >>> import tempfile, torch
        >>> directory, net = tempfile.mkdtemp(), torch.nn.Linear(2, 1)
        >>> _ = save_sharded(directory, net, extra={"epoch": 3})
        >>> other = torch.nn.Linear(2, 1)
        >>> load_sharded(directory, other), torch.equal(other.weight, net.weight)
        ({'epoch': 3}, True)
    """
    path = find_sharded(directory, name)
    if path is None:
        return None
    saved = safe_load(path / TRAINER_FILE)
    if not (isinstance(saved, dict) and isinstance(saved.get("extra"), dict)):
        raise CheckpointError(
            errno.EINVAL,
            f"{path / TRAINER_FILE} is damaged or was not written by kiln: it holds a "
            f"{type(saved).__name__} without the dict 'extra'. Resume from an intact checkpoint.",
        )
    if saved.get("format") != FORMAT:
        raise ValueError(
            f"{path} is a sharded checkpoint of format {saved.get('format')!r}; this kiln reads "
            f"format {FORMAT}."
        )
    if check_extra is not None:
        check_extra(saved["extra"], str(path))
    parts = _parts(model, optimizer)
    reader = SafeReader(path)
    try:
        metadata = reader.read_metadata()
    except pickle.UnpicklingError as error:
        raise CheckpointError(errno.EINVAL, f"Refused to load {path}: {error}") from error
    _check_architecture(metadata, parts["model"], model, path)
    try:
        with _single_process_quietly():
            dcp_load(
                parts, storage_reader=reader, planner=SafePlanner(), no_dist=not _distributed()
            )
    except CheckpointException as error:  # DCP gathers every rank's error into one
        failure = next(iter(error.failures.values()))[0]
        refused = isinstance(failure, pickle.UnpicklingError)
        raise CheckpointError(
            errno.EINVAL,
            f"{'Refused to load' if refused else 'Could not load'} {path}: {failure}",
        ) from failure
    if optimizer is None:
        set_model_state_dict(model, parts["model"])
    else:
        set_state_dict(
            model, optimizer, model_state_dict=parts["model"], optim_state_dict=parts["optimizer"]
        )
    return dict(saved["extra"])


def save_trainer_sharded(trainer: Trainer, directory: str | Path) -> Path:
    """Write the whole run of `trainer` (sharded model) to `directory/last.dcp/`.

    Every rank calls it. The model and optimizer go through DCP; the rest of
    `Trainer.state_dict` (counters, history, random generators, callback states)
    is rank 0's.

    Example:
        >>> import tempfile, torch, kiln
        >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu", progress=False)
        >>> save_trainer_sharded(trainer, tempfile.mkdtemp()).name
        'last.dcp'
    """
    rest = trainer.state_dict()
    for key in ("model", "optimizer"):
        rest.pop(key)
    if world_size() > 1:  # each rank's generators, as `save_last` keeps them: rank 0 writes all
        rest["ranks"] = gather_objects(rank_part(rest))
    return save_sharded(directory, trainer.model, trainer.optimizer, rest)


def load_trainer_sharded(trainer: Trainer, directory: str | Path) -> bool:
    """Restore `trainer` from `directory/last.dcp/`; return whether there was one.

    Every rank calls it.

    Example:
        >>> import tempfile, torch, kiln
        >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu", progress=False)
        >>> load_trainer_sharded(trainer, tempfile.mkdtemp())
        False
    """

    def check(extra: dict[str, Any], source: str) -> None:  # every part, before any is loaded
        check_format({**extra, "model": {}, "optimizer": None}, source, complete=True)

    rest = load_sharded(directory, trainer.model, trainer.optimizer, check_extra=check)
    if rest is None:
        return False
    # The model and optimizer are loaded already: `load_state_dict` gets the model's own state
    # (a no-op copy) and no optimizer state, and restores everything else.
    state = {**rest, "model": trainer.model.state_dict(), "optimizer": None}
    trainer.load_state_dict(state, source=str(Path(directory) / LAST_DCP))
    return True
