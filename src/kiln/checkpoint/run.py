"""The checkpoint of a run: `trainer.state_dict()` written after each epoch, and read back.

What lives here: where the state is kept in an experiment directory, writing and reading it,
gathering each rank's part, and the checks of a checkpoint's format, weights and callbacks, with
clear errors. What does not: what the state is made of (`Trainer.state_dict`), file safety
(`files.py`), or the decision of when to save, which the trainer's loop makes.

Under `torchrun`, `save_last` is called by every rank at the same point: each rank's random
generators (and, inside an epoch, its position and sums) are gathered to rank 0, which alone
writes the file; then every rank waits for the write to end, so none reads it half-written. On
resume every rank reads the same file and takes back its own generators.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kiln.checkpoint.files import (
    CheckpointError,
    atomic_save,
    remove_leftover_temporaries,
    safe_load,
)
from kiln.distributed.collectives import gather_objects
from kiln.distributed.context import barrier, is_main_process
from kiln.seed import rng_state_problem

if TYPE_CHECKING:
    from collections.abc import Iterable

    from kiln.distributed.context import DistributedContext
    from kiln.trainer import Trainer

#: The file in the experiment directory that always holds the latest complete state.
LAST = "last.ckpt"
#: The folder of a sharded model's checkpoint (`kiln.distributed.dcp` writes it).
LAST_SHARDED = "last.dcp"
#: Bumped when the layout of a checkpoint changes incompatibly.
FORMAT = 1


def prepare_directory(directory: Path) -> None:
    """Create the experiment directory and prove it writable, before any training happens.

    Temporary files that a run killed while writing left in it are removed (see
    `remove_leftover_temporaries`); a user's files are left alone.

    Raises:
        CheckpointError: If the directory cannot be created or written.
    """
    if not is_main_process():
        return  # rank 0 writes the files
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_bytes(b"kiln")
        probe.unlink()
    except OSError as error:
        raise CheckpointError(
            error.errno,
            f"The experiment directory {directory} is not writable ({error.strerror or error}). "
            "Choose another `dir=`, or fix its permissions, before training.",
        ) from error
    remove_leftover_temporaries(directory)  # the callbacks clean the folders they write to


def check_new_run(directory: Path, overwrite: bool) -> None:
    """Refuse to start a new run where a run is saved; with `overwrite`, remove its files.

    The files of a run are `last.ckpt` (or `last.dcp/`), `best/epoch_*.ckpt`, `log.tsv` and
    `test_log.tsv`; nothing else in the directory is touched.

    Raises:
        FileExistsError: If `directory` holds a run and `overwrite` is false, naming its epoch
            and the two ways on.
    """
    saved = next(
        (directory / name for name in (LAST, LAST_SHARDED) if (directory / name).exists()), None
    )
    if saved is None:
        return
    if not overwrite:
        raise FileExistsError(
            f"{directory} holds a run ({saved.name}, {_saved_epoch(saved)}). Continue it with "
            "`fit(..., resume=True)`; or start a new run in a new directory, or with "
            "`Trainer(..., overwrite=True)`, which replaces that run's files."
        )
    if not is_main_process():
        return  # rank 0 writes, and removes, the files
    if saved.is_dir():
        shutil.rmtree(saved)
    else:
        saved.unlink()
    for path in [*(directory / "best").glob("epoch_*.ckpt"), directory / "log.tsv"]:
        path.unlink(missing_ok=True)
    (directory / "test_log.tsv").unlink(missing_ok=True)


def _saved_epoch(saved: Path) -> str:
    """How far the run saved at `saved` got, for a message ("saved after epoch 3")."""
    if saved.is_dir():
        return "sharded"
    try:
        state = safe_load(saved).get("state", {})
        return f"saved after epoch {int(state['epoch'])}"
    except Exception:  # a damaged file: the message still names it
        return "unreadable"


def callback_state(callback: Any) -> dict[str, Any]:
    """Return a callback's resumable state: its `state_dict()`, or `{}` when it keeps none."""
    state_dict = getattr(callback, "state_dict", None)
    return state_dict() if callable(state_dict) else {}


def check_format(checkpoint: Any, source: str, *, complete: bool = False) -> None:
    """Check that `checkpoint` is a trainer state of the format this kiln reads, and whole.

    Every part it holds must be of the kind `Trainer.state_dict` writes (`state_problem`), so
    that a damaged checkpoint is refused before anything is restored from it.

    Args:
        checkpoint: What was read.
        source: Where it was read from, for messages.
        complete: Also require every part an exact resume restores (the model, the optimizer,
            the callbacks' states, the generators), as `fit(resume=True)` does.

    Raises:
        ValueError: If it is of another format, naming `source` and the format found.
        CheckpointError: If it is not a trainer state, or a part is missing or damaged (a
            `ValueError` too), naming `source` and the part.
    """
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            errno.EINVAL,
            f"{source} is damaged or is not a checkpoint: it holds a "
            f"{type(checkpoint).__name__}, where a trainer's state is a dict (what "
            "trainer.state_dict() returns). Resume from an intact checkpoint.",
        )
    found = checkpoint.get("format")
    if found != FORMAT:
        raise ValueError(
            f"{source} is a checkpoint of format {found!r}; this kiln reads format {FORMAT}. "
            "Load it with the kiln version that wrote it."
        )
    problem = state_problem(checkpoint, complete)
    if problem is not None:
        raise CheckpointError(
            errno.EINVAL,
            f"{source} is damaged or was not written by kiln: {problem}. Resume from an intact "
            "checkpoint (or start the run again in a new directory).",
        )


def _is_int(value: Any) -> bool:
    return type(value) is int


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _weights(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(key, str) and (isinstance(item, torch.Tensor) or key.endswith("_extra_state"))
        for key, item in value.items()
    )


def _optimizer(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    groups = value.get("param_groups")
    return (
        isinstance(value.get("state"), dict)
        and isinstance(groups, list)
        and all(
            isinstance(group, dict) and isinstance(group.get("params"), list) for group in groups
        )
    )


def _counters(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and all(_is_int(value.get(key)) for key in ("epoch", "step", "samples"))
        and _optional(_is_int)(value.get("skipped_batches"))
        and isinstance(value.get("logs"), dict)
        and _optional(lambda reason: isinstance(reason, str))(value.get("stop_reason"))
    )


def _history(value: Any) -> bool:
    epochs = value.get("epochs") if isinstance(value, dict) else None
    return (
        isinstance(epochs, list)
        and all(isinstance(row, dict) for row in epochs)
        and isinstance(value.get("batch_losses"), list)
    )


def _callbacks(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(entry, dict)
        and isinstance(entry.get("name"), str)
        and isinstance(entry.get("state"), dict)
        for entry in value
    )


def _position(value: Any) -> bool:
    """A position inside an epoch; its generators and sums are required by `complete` only."""
    return (
        isinstance(value, dict)
        and _is_int(value.get("batches"))
        and ("epoch_rng" not in value or rng_state_problem(value["epoch_rng"]) is None)
        and ("tracker" not in value or isinstance(value["tracker"], dict))
    )


def _whole_positions(state: dict[str, Any]) -> bool:
    ranks = state.get("ranks") or []
    positions = [state.get("position"), *(part.get("position") for part in ranks)]
    return all(p is None or {"epoch_rng", "tracker"} <= set(p) for p in positions)


def _ranks(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(part, dict)
        and rng_state_problem(part.get("rng")) is None
        and _optional(_position)(part.get("position"))
        for part in value
    )


#: The parts of a trainer's state: what each must be, and how to tell.
_PARTS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "model": ("a dict of tensors (the model's state_dict)", _weights),
    "optimizer": ("None or an optimizer's state_dict", _optional(_optimizer)),
    "state": ("the counters (epoch, step, samples, logs)", _counters),
    "history": ("the history (epochs, batch_losses)", _history),
    "callbacks": ("a list of the callbacks' {'name', 'state'}", _callbacks),
    "rng": ("the generators' states", lambda value: rng_state_problem(value) is None),
    "position": ("None or the position inside an epoch", _optional(_position)),
    "ranks": ("None or each rank's generators and position", _optional(_ranks)),
    "data_seed": ("None or an integer", _optional(_is_int)),
    "loader_seed": ("None or an integer", _optional(_is_int)),
    "optimizer_step": ("None or a dict", _optional(lambda value: isinstance(value, dict))),
}
#: The parts every state holds, and those an exact resume needs besides.
_ALWAYS, _COMPLETE = ("state", "history"), ("model", "optimizer", "callbacks", "rng")


def state_problem(state: dict[str, Any], complete: bool = False) -> str | None:
    """Say which part of a trainer's state is missing or not what it must be, else `None`.

    Example:
        >>> state_problem({"format": 1, "state": [], "history": {}})
        "'state' is a list, where the counters (epoch, step, samples, logs) belong"
    """
    required = (*_ALWAYS, *_COMPLETE) if complete else _ALWAYS
    missing = [key for key in required if key not in state]
    if missing:
        return f"it has no {', '.join(repr(key) for key in missing)}"
    for key, (what, fits) in _PARTS.items():
        if key in state and not fits(state[key]):
            detail = rng_state_problem(state[key]) if key == "rng" else None
            kind = type(state[key]).__name__
            return detail or f"{key!r} is a {kind}, where {what} belong"
    if complete and not _whole_positions(state):
        return "its position inside an epoch has no 'epoch_rng' or 'tracker'"
    return None


def load_model_state(model: nn.Module, weights: dict[str, Any], source: str) -> None:
    """Load `weights` into `model`, naming the mismatched keys and shapes when they differ.

    Raises:
        ValueError: If the weights come from another architecture.
    """
    check_model_state(model, weights, source)
    model.load_state_dict(weights)


def check_model_state(model: nn.Module, weights: dict[str, Any], source: str) -> None:
    """Check that `weights` fit `model`: the same keys, of the same shapes.

    Raises:
        ValueError: If the weights come from another architecture, naming the keys and shapes.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    reshaped = [
        f"{key}: {tuple(weights[key].shape)} in the file, {tuple(own[key].shape)} in the model"
        for key in sorted(set(own) & set(weights))
        if hasattr(weights[key], "shape") and weights[key].shape != own[key].shape
    ]
    if missing or unexpected or reshaped:
        details = [
            *(["missing from the file: " + ", ".join(missing[:10])] if missing else []),
            *(["not in the model: " + ", ".join(unexpected[:10])] if unexpected else []),
            *(["different shapes: " + "; ".join(reshaped[:10])] if reshaped else []),
        ]
        raise ValueError(
            f"The weights in {source} do not fit {type(model).__name__}: it was saved from "
            f"another architecture ({' | '.join(details)}). Build the model as it was when saved."
        )


def optimizer_class(optimizer: Any) -> str:
    """The import path of an optimizer's class, as a checkpoint records it."""
    kind = type(optimizer)
    return f"{kind.__module__}.{kind.__qualname__}"


def check_optimizer_state(optimizer: Any, saved: Any, saved_class: Any, source: str) -> None:
    """Check that a saved optimizer state belongs to an optimizer like `optimizer`.

    The class (when the checkpoint records it) and the parameter groups' sizes must be the
    same: loading another optimizer's state would fail later, at a step (SGD looking for its
    `momentum` in an Adam's groups), or train on from the wrong state.

    Raises:
        ValueError: If the saved state is of another class of optimizer or other groups.
    """
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not isinstance(groups, list) or not all(isinstance(group, dict) for group in groups):
        raise ValueError(
            f"The optimizer state in {source} is damaged: expected a dict with a list of "
            "'param_groups'. Resume from an intact checkpoint."
        )
    own_sizes = [len(group["params"]) for group in optimizer.param_groups]
    saved_sizes = [len(group.get("params", ())) for group in groups]
    own_class = optimizer_class(optimizer)
    if (saved_class is not None and saved_class != own_class) or own_sizes != saved_sizes:
        raise ValueError(
            f"{source} was saved with another optimizer: {saved_class or 'an optimizer'} over "
            f"parameter groups of {saved_sizes} parameters; this trainer has {own_class} over "
            f"{own_sizes}. Resume with the optimizer the run was saved with."
        )


def check_callbacks(callbacks: Iterable[Any], saved: Any, source: str) -> None:
    """Check that `callbacks` are those that saved the states `saved`, in the same order.

    Raises:
        ValueError: If the callbacks differ from those of the saving trainer, or their order.
    """
    callbacks = list(callbacks)
    names = [type(callback).__name__ for callback in callbacks]
    if [entry["name"] for entry in saved] != names:
        raise ValueError(
            f"{source} was saved by a trainer with the callbacks "
            f"{[entry['name'] for entry in saved]}, but this trainer has {names}. Resume with "
            "the same callbacks, in the same order, to continue the same run."
        )


def load_callback_states(callbacks: Iterable[Any], saved: list[dict[str, Any]]) -> None:
    """Give each callback its saved state (checked by `check_callbacks` first)."""
    for callback, entry in zip(callbacks, saved, strict=True):
        load_state_dict = getattr(callback, "load_state_dict", None)
        if callable(load_state_dict):
            load_state_dict(entry["state"])


def own_rank_part(
    checkpoint: dict[str, Any], context: DistributedContext, source: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """This rank's generators and pass position: its own when saved by as many ranks.

    Raises:
        ValueError: If a checkpoint from inside an epoch was saved by another number of ranks.
    """
    ranks = checkpoint.get("ranks")
    saved, world = (1 if ranks is None else len(ranks)), context.world_size
    if saved != world and checkpoint.get("position") is not None:
        raise ValueError(
            f"{source} was saved inside an epoch by {saved} process(es), and this run has "
            f"{world}: the position in the data cannot carry over. Resume with {saved} "
            "process(es), or from a checkpoint saved at the end of an epoch."
        )
    if ranks is None or saved != world:
        return checkpoint["rng"], checkpoint.get("position")
    own = ranks[context.rank]
    return own["rng"], own["position"]


def rank_part(state: dict[str, Any]) -> dict[str, Any]:
    """What differs between the ranks in a trainer's state: the generators and the position."""
    return {"rng": state["rng"], "position": state["position"]}


def save_last(trainer: Trainer, directory: Path) -> Path:
    """Write the trainer's state to `directory/last.ckpt`, atomically.

    Under `torchrun` every rank calls it at the same point; rank 0 writes the states of all.
    """
    path = directory / LAST
    if trainer.replicas.sharded:  # each rank writes its shard (DCP)
        from kiln.distributed.dcp import save_trainer_sharded  # slow import

        return save_trainer_sharded(trainer, directory)
    state = trainer.state_dict()
    if not trainer.distributed.enabled:
        return atomic_save(state, path)
    ranks = gather_objects(rank_part(state))
    if is_main_process():
        atomic_save({**state, "ranks": ranks}, path)
    barrier()  # no rank goes on (and may read the file) before it is complete
    return path


def load_last(trainer: Trainer, directory: Path) -> bool:
    """Restore the trainer from `directory/last.ckpt`; return whether there was one.

    Raises:
        CheckpointError: If `last.ckpt` is damaged (empty, truncated, a directory, a part
            missing or of the wrong kind): nothing is restored then.
        ValueError: If it does not fit the trainer (see `Trainer.load_state_dict`).
    """
    if trainer.replicas.sharded:
        from kiln.distributed.dcp import load_trainer_sharded  # slow import

        return load_trainer_sharded(trainer, directory)
    path = directory / LAST
    if not path.exists():
        return False
    state = safe_load(path)  # a directory, an empty or a damaged file: a CheckpointError
    check_format(state, str(path), complete=True)  # every part, before anything is restored
    trainer.load_state_dict(state, source=str(path))
    return True


def resume_run(trainer: Trainer, directory: Path | None) -> bool:
    """Restore the run saved in `directory`; return whether there was one to resume.

    A run that had ended (by early stopping, say) is restored as ended, so running the same
    script again does not train it further.

    Raises:
        ValueError: If the trainer has no experiment directory.
    """
    if directory is None:
        raise ValueError(
            "`resume=True` continues the run saved in the experiment directory, but this "
            "trainer has none: create it with `Trainer(..., dir='runs/name')`."
        )
    if not load_last(trainer, directory):
        return False
    trainer.state.should_stop = trainer.state.stop_reason is not None
    return True
