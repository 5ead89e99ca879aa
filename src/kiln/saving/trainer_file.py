"""Saving a trainer to one self-contained file, and loading a trainer back from files.

`save_trainer` writes, atomically and as tensors and plain data only: a format marker, the kiln
version and date, the model's recipe (`recipe.py`), the loss, optimizer and metrics by name
(`components.py`), the loop options (`options_record.py`) and `trainer.state_dict()`.
`read_for_load` reads such a file (or a run's `last.ckpt`, a plain `state_dict`, a
`.safetensors` export) into what `kiln.load` (in `trainer.py`) builds a trainer from, and
`restore_run` gives that trainer the saved optimizer state, counters and history.

What does not live here: reading files without running code (`checkpoint/files.py`), and
loading weights with clear errors (`checkpoint/run.py`).
"""

from __future__ import annotations

import errno
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kiln.checkpoint import run
from kiln.checkpoint.files import CheckpointError, atomic_save, safe_load
from kiln.optim.lookahead import Lookahead
from kiln.saving.components import (
    check_records,
    describe_loss,
    describe_metrics,
    describe_optimizer,
    metric_flags,
    rebuild_components,
)
from kiln.saving.export import WEIGHT_SUFFIXES, export_weights, read_safetensors
from kiln.saving.options_record import RECORDED, RECORDED_OPTIONS, options_record, recorded_options
from kiln.saving.recipe import (
    allowed_classes,
    build_to_fit,
    check_recipe,
    import_path,
    rebuild_model,
    recipe_of,
)

if TYPE_CHECKING:
    from kiln.trainer import Trainer

__all__ = [
    "SAVED_TRAINER",
    "SAVE_FORMAT",
    "WEIGHT_SUFFIXES",
    "export_weights",
    "read_for_load",
    "restore_run",
    "save_trainer",
]

#: The value of the `"kiln"` key that marks a file written by `save_trainer`.
SAVED_TRAINER = "saved trainer"
#: Bumped when the layout of a saved trainer changes incompatibly. Not for a key a reader may
#: miss: the loop options (`"step"`) came in format 1, and a file without them loads with the
#: `Trainer` defaults, as it did before.
SAVE_FORMAT = 1


def _kiln_version() -> str:
    from kiln import __version__  # here: kiln's __init__ imports this module

    return __version__


def save_trainer(
    trainer: Trainer,
    path: str | os.PathLike[str],
    full_state: tuple[dict[str, Any], dict[str, Any] | None] | None = None,
) -> Path:
    """Write `trainer` to one self-contained file, atomically; `kiln.load` reads it back.

    The file holds the model's recipe and weights, the loss, optimizer and metrics by name, the
    loop options (`precision`, `accumulate`, `clip_norm`, `clip_value`, `nonfinite`; not
    `compile`), the optimizer's state, the counters and the history: tensors and plain data.

    Args:
        trainer: The trainer to save.
        path: The file to write (missing directories are created).
        full_state: The model's and optimizer's whole states, when the model is sharded over
            several processes (gathered by `kiln.distributed.fsdp.full_state`).

    Returns:
        The path written.

    Raises:
        CheckpointError: If the file cannot be written; a previous file there stays intact.

    Example:
        >>> import tempfile, torch, kiln
        >>> trainer = kiln.Trainer(kiln.MLP(4, [8], 3), loss="cross_entropy", device="cpu",
        ...                        progress=False)
        >>> path = save_trainer(trainer, tempfile.mkdtemp() + "/run.kiln")
        >>> type(kiln.load(path, device="cpu").model).__name__
        'MLP'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    loss = trainer.loss
    flags = metric_flags(loss)
    contents: dict[str, Any] = {
        "kiln": SAVED_TRAINER,
        "format": SAVE_FORMAT,
        "kiln_version": _kiln_version(),
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "recipe": recipe_of(trainer.model),
        "loss": describe_loss(loss),
        "optimizer": describe_optimizer(trainer.optimizer, trainer.model),
        "metrics": describe_metrics(trainer.metrics, **flags),
        "step": options_record(trainer.options),
        "trainer": trainer.state_dict(),
    }
    if full_state is not None:
        contents["trainer"].update(model=full_state[0], optimizer=full_state[1])
    return atomic_save(contents, path)


@dataclass(frozen=True)
class LoadPlan:
    """What `kiln.load` builds a trainer from: read, checked, and not yet a trainer."""

    model: nn.Module
    arguments: dict[str, Any]
    state: dict[str, Any] | None
    saved_optimizer: str | None
    source: str


def read_for_load(
    path: str | os.PathLike[str],
    model: nn.Module | None,
    builder: Callable[..., nn.Module] | None,
    overrides: dict[str, Any],
    classes: Any = (),
) -> LoadPlan:
    """Read a file for `kiln.load`: the model with its weights, and the trainer's arguments.

    `overrides` are the `Trainer` keywords passed to `kiln.load`; those not passed come from
    the file's records. `classes` are the classes the file may name besides those imported
    already (nothing is imported because a file names it). See `kiln.load` for the whole
    behaviour.
    """
    allowed = allowed_classes(classes)
    path = Path(path)
    source = str(path)
    overrides = dict(overrides)
    given = {name: overrides.pop(name, None) for name in ("loss", "optimizer", "metrics")}
    given_options = {name: overrides.pop(name, RECORDED) for name in RECORDED_OPTIONS}
    if path.suffix.lower() == ".safetensors":
        weights, recipe = read_safetensors(path)
        contents: dict[str, Any] = {"recipe": recipe}
    else:
        contents = _read_kiln_file(path)
        weights = contents["trainer"]["model"] if "trainer" in contents else contents["weights"]
    # Checked before anything is built.
    options = recorded_options(contents.get("step"), given_options, source)
    if overrides.get("options") is not None:
        options = {}  # a whole `LoopOptions` passed wins over every record
    if model is None:  # first on the meta device: the recipe's shapes against the weights'
        net = _rebuild(contents.get("recipe"), builder, source, allowed, weights)
    else:  # what the caller passes is never second-guessed by a record
        net = model
    if not isinstance(net, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module; received {type(net).__name__}.")
    run.load_model_state(net, weights, source)
    records = contents.get("records")
    arguments = (
        given if records is None else rebuild_components(records, net, given, source, allowed)
    )
    if given_options["precision"] is RECORDED and options.get("precision") == "fp16":
        options["precision"] = _recorded_fp16(overrides.get("device", "auto"), source)
    saved_class = None if records is None else records["optimizer"].get("target")
    state = contents.get("trainer")
    return LoadPlan(net, {**overrides, **arguments, **options}, state, saved_class, source)


def _recorded_fp16(device: str | int | bool | torch.device | None, source: str) -> str:
    """The precision for a recorded `"fp16"`: itself on CUDA, else `"32"` with a warning.

    A run trained in fp16 on a GPU is often loaded on a laptop to predict; refusing the file
    there would help no one, and float16 autocast does not run off CUDA.
    """
    from kiln.devices import resolve_device

    placed = resolve_device(device)
    if placed.type == "cuda":
        return "fp16"
    warnings.warn(
        f"{source} recorded precision='fp16', which runs on CUDA only; the trainer loaded on "
        f"{placed} computes in full precision ('32'). Pass precision= to kiln.load to choose.",
        stacklevel=3,
    )
    return "32"


def _rebuild(
    recipe: Any,
    builder: Callable[..., nn.Module] | None,
    source: str,
    classes: tuple[type, ...],
    weights: dict[str, Any],
) -> nn.Module:
    if recipe is None:
        if builder is not None:
            return build_to_fit(builder, weights, source)
        raise ValueError(
            f"{source} holds weights but no record of how the model was built. Pass the model: "
            "kiln.load(path, model=...), built as the saved one was."
        )
    checked = check_recipe(recipe, source)
    return rebuild_model(checked, builder, source, classes=classes, weights=weights)


def _read_kiln_file(path: Path) -> dict[str, Any]:
    """Read a saved trainer, a run checkpoint or a plain `state_dict`, in one shape."""
    contents = safe_load(path)
    if isinstance(contents, dict) and contents.get("kiln") == SAVED_TRAINER:
        if contents.get("format") != SAVE_FORMAT:
            raise ValueError(
                f"{path} is a saved trainer of format {contents.get('format')!r}; this kiln "
                f"({_kiln_version()}) reads format {SAVE_FORMAT}. Load it with the kiln version "
                f"that wrote it ({contents.get('kiln_version')})."
            )
        records = check_records(contents, str(path))
        state = _check_trainer_state(contents.get("trainer"), path)
        # The loop options are kept under "step"; a save from before them has none.
        recipe, options = contents.get("recipe"), contents.get("step")
        return {"recipe": recipe, "records": records, "step": options, "trainer": state}
    if isinstance(contents, dict) and {"format", "model", "optimizer", "state"} <= set(contents):
        return {"trainer": _check_trainer_state(contents, path)}  # a run's last.ckpt
    if isinstance(contents, dict) and isinstance(contents.get("model"), dict):
        weights = contents["model"]  # a weights record, as Checkpoint writes
    else:
        weights = contents
    if isinstance(weights, dict) and all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in weights.items()
    ):
        return {"weights": weights}
    if isinstance(contents, dict):
        kinds = sorted({type(value).__name__ for value in weights.values()})
        received = f"a dict of {', '.join(kinds)} (keys {', '.join(map(repr, list(weights)[:5]))})"
    else:
        received = f"a {type(contents).__name__}"
    raise CheckpointError(
        errno.EINVAL,
        f"{path} holds {received}, which kiln does not recognise. Expected a file from "
        "trainer.save, a run checkpoint (last.ckpt), or a state_dict (a dict of tensors by "
        "name, as torch.save(model.state_dict(), path) writes).",
    )


def _state_fits(optimizer: torch.optim.Optimizer, state: Any, saved_class: str | None) -> bool:
    """Whether a saved optimizer state belongs to `optimizer`: its class and group sizes."""
    # Another class, or other parameter groups, start fresh: the saved state would not fit.
    inner = optimizer.optimizer if isinstance(optimizer, Lookahead) else optimizer
    if saved_class is not None and import_path(type(inner)) != saved_class:
        return False
    saved_groups = state.get("param_groups") if isinstance(state, dict) else None
    if not isinstance(saved_groups, list):
        return False
    sizes = [len(group["params"]) for group in optimizer.param_groups]
    return [len(group.get("params", ())) for group in saved_groups] == sizes


def _check_trainer_state(state: Any, path: Path) -> dict[str, Any]:
    """Check every part of a trainer's state (`run.check_format`), before anything is built."""
    run.check_format(state, str(path))
    if "model" not in state:
        raise CheckpointError(
            errno.EINVAL,
            f"The trainer state in {path} is damaged or was not written by kiln: it has no "
            "'model' (the weights). Write it again with trainer.save(path).",
        )
    return dict(state)


def restore_run(
    trainer: Trainer, state: dict[str, Any], saved_optimizer: str | None, source: str
) -> None:
    """Restore the optimizer's state (when it fits), the counters and the history."""
    optimizer = trainer.optimizer
    fits = optimizer is not None and _state_fits(optimizer, state.get("optimizer"), saved_optimizer)
    # The weights are in the model already.
    rest = {key: value for key, value in state.items() if key != "model"}
    if not fits or not isinstance(state.get("optimizer"), dict):
        rest["optimizer"] = None
    trainer.load_state_dict(rest, exact=False, source=source)
