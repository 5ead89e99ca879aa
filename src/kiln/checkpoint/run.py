"""The checkpoint of a run: the trainer's whole state, saved after each epoch and resumed.

What lives here: what a trainer's state is made of (model, optimizer, counters, history, callback
states, every random generator), where it is kept in an experiment directory, and loading it
back with clear errors. What does not: file safety (`files.py`), or the decision of when to save,
which the trainer's loop makes.

Under `torchrun`, `save_last` is called by every rank at the same point: each rank's random
generators (and, inside an epoch, its position and sums) are gathered to rank 0, which alone
writes the file; then every rank waits for the write to end, so none reads it half-written. On
resume every rank reads the same file and takes back its own generators.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from kiln.checkpoint.files import CheckpointError, atomic_save, safe_load
from kiln.checkpoint.rng import get_rng_state, set_rng_state
from kiln.distributed.collectives import gather_objects
from kiln.distributed.context import barrier, is_main_process

if TYPE_CHECKING:
    from kiln.trainer import Trainer

#: The file in the experiment directory that always holds the latest complete state.
LAST = "last.ckpt"
#: Bumped when the layout of a checkpoint changes incompatibly.
FORMAT = 1


def prepare_directory(directory: Path) -> None:
    """Create the experiment directory and prove it writable, before any training happens.

    Temporary files left by a run killed while writing are removed.

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
    for stale in directory.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def trainer_state(trainer: Trainer) -> dict[str, Any]:
    """Return everything needed to continue `trainer`'s run exactly: tensors and plain data."""
    optimizer = trainer.optimizer
    return {
        "format": FORMAT,
        "model": trainer.model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "state": trainer.state.state_dict(),  # with the stop reason of a run that ended
        "history": trainer.history.state_dict(),
        "callbacks": [
            {"name": type(callback).__name__, "state": _callback_state(callback)}
            for callback in trainer.callbacks
        ],
        # Every generator, and inside an epoch how far its training pass got.
        **_rank_state(trainer),
        "data_seed": trainer._position.data_seed,
        "loader_seed": trainer._replicas.loader_seed,  # several processes: their loaders' order
        # The fp16 gradient scaler, and the gradients of an unfinished accumulation group.
        "optimizer_step": trainer._steps.state_dict(optimizer),
    }


def _rank_state(trainer: Trainer) -> dict[str, Any]:
    """What differs between ranks: the generators and, inside an epoch, the pass's position."""
    in_training_pass = trainer.state.stage == "train"
    tracker = trainer._trackers["train"]
    position = trainer._position.state_dict(tracker) if in_training_pass else None
    return {"rng": get_rng_state(), "position": position}


def _callback_state(callback: Any) -> dict[str, Any]:
    state_dict = getattr(callback, "state_dict", None)
    return state_dict() if callable(state_dict) else {}


def load_model_state(model: nn.Module, weights: dict[str, Any], source: str) -> None:
    """Load `weights` into `model`, naming the mismatched keys and shapes when they differ.

    Raises:
        ValueError: If the weights come from another architecture.
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
    model.load_state_dict(weights)


def restore_trainer(trainer: Trainer, checkpoint: dict[str, Any], source: str) -> None:
    """Put `trainer` back in the state `trainer_state` captured.

    Raises:
        ValueError: If the checkpoint does not match the trainer's model or callbacks.
    """
    if checkpoint.get("format") != FORMAT:
        raise ValueError(
            f"{source} is a checkpoint of format {checkpoint.get('format')!r}; this kiln reads "
            f"format {FORMAT}."
        )
    load_model_state(trainer.model, checkpoint["model"], source)
    if trainer.optimizer is not None and checkpoint["optimizer"] is not None:
        trainer.optimizer.load_state_dict(checkpoint["optimizer"])
    trainer._steps.load_state_dict(checkpoint.get("optimizer_step"), trainer.optimizer)
    saved = checkpoint["callbacks"]
    names = [type(callback).__name__ for callback in trainer.callbacks]
    if [entry["name"] for entry in saved] != names:
        raise ValueError(
            f"{source} was saved by a trainer with the callbacks "
            f"{[entry['name'] for entry in saved]}, but this trainer has {names}. Resume with "
            "the same callbacks, in the same order, to continue the same run."
        )
    for callback, entry in zip(trainer.callbacks, saved, strict=True):
        load_state_dict = getattr(callback, "load_state_dict", None)
        if callable(load_state_dict):
            load_state_dict(entry["state"])
    trainer.state.load_state_dict(checkpoint["state"])
    trainer.state.stop_reason = checkpoint["state"].get("stop_reason")
    trainer.history.load_state_dict(checkpoint["history"])
    rng, position = _own_part(trainer, checkpoint, source)
    set_rng_state(rng)
    trainer._position.restored_data_seed = checkpoint.get("data_seed")
    trainer._replicas.loader_seed = checkpoint.get("loader_seed")
    trainer._position.pending = None if position is None else {**position, "rng": rng}


def _own_part(
    trainer: Trainer, checkpoint: dict[str, Any], source: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """This rank's generators and pass position: its own when saved by as many ranks.

    Raises:
        ValueError: If a checkpoint from inside an epoch was saved by another number of ranks.
    """
    ranks = checkpoint.get("ranks")
    saved, world = (1 if ranks is None else len(ranks)), trainer.distributed.world_size
    if saved != world and checkpoint.get("position") is not None:
        raise ValueError(
            f"{source} was saved inside an epoch by {saved} process(es), and this run has "
            f"{world}: the position in the data cannot carry over. Resume with {saved} "
            "process(es), or from a checkpoint saved at the end of an epoch."
        )
    if ranks is None or saved != world:
        return checkpoint["rng"], checkpoint.get("position")
    own = ranks[trainer.distributed.rank]
    return own["rng"], own["position"]


def save_last(trainer: Trainer, directory: Path) -> Path:
    """Write the trainer's state to `directory/last.ckpt`, atomically.

    Under `torchrun` every rank calls it at the same point; rank 0 writes the states of all.
    """
    path = directory / LAST
    if trainer._replicas.sharded:  # each rank writes its shard (DCP)
        from kiln.distributed.dcp import save_trainer_sharded  # noqa: PLC0415  # slow import

        return save_trainer_sharded(trainer, directory)
    if not trainer.distributed.enabled:
        return atomic_save(trainer_state(trainer), path)
    ranks = gather_objects(_rank_state(trainer))
    if is_main_process():
        atomic_save({**trainer_state(trainer), "ranks": ranks}, path)
    barrier()  # no rank goes on (and may read the file) before it is complete
    return path


def load_last(trainer: Trainer, directory: Path) -> bool:
    """Restore the trainer from `directory/last.ckpt`; return whether there was one."""
    if trainer._replicas.sharded:
        from kiln.distributed.dcp import load_trainer_sharded  # noqa: PLC0415  # slow import

        return load_trainer_sharded(trainer, directory)
    path = directory / LAST
    if not path.is_file():
        return False
    restore_trainer(trainer, safe_load(path), str(path))
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
