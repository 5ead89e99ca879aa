"""Saving a trainer to one self-contained file, and loading a trainer back from files.

`save_trainer` writes, atomically and as tensors and plain data only: a format marker, the kiln
version and date, the model's recipe (`rebuild.py`), the loss, optimizer and metrics by name
(`components.py`), the step options (`saving_steps.py`) and the trainer's whole state (model,
optimizer state, counters, history). `load` rebuilds a `Trainer` from such a file, ready to
`predict`, `evaluate` or `fit` further (the epoch count, the optimizer's state and how each
step is made carry on); it also reads a run's `last.ckpt`, a plain `state_dict` and a
`.safetensors` export (`export.py` writes those; `export_weights` is re-exported here).

What does not live here: reading files without running code (`checkpoint/files.py`), a
trainer's state and loading weights with clear errors (`checkpoint/run.py`). Callback states
and random generators are not restored by `load`: it continues training, not the same run
(`fit(resume=True)` does that).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kiln.checkpoint import run
from kiln.checkpoint.files import atomic_save, safe_load
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
from kiln.saving.options_record import RECORDED, Recorded, step_arguments, step_record
from kiln.saving.recipe import check_recipe, import_path, rebuild_model, recipe_of

if TYPE_CHECKING:
    from kiln.trainer import Trainer

__all__ = [
    "SAVED_TRAINER",
    "SAVE_FORMAT",
    "WEIGHT_SUFFIXES",
    "export_weights",
    "load",
    "save_trainer",
]

#: The value of the `"kiln"` key that marks a file written by `save_trainer`.
SAVED_TRAINER = "saved trainer"
#: Bumped when the layout of a saved trainer changes incompatibly. Not for a key a reader may
#: miss: the step options (`"step"`) came in format 1, and a file without them loads with the
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
    step options (`precision`, `accumulate`, `clip_norm`, `clip_value`, `nonfinite`; not
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
        "step": step_record(trainer._steps.options),
        "trainer": run.trainer_state(trainer),
    }
    if full_state is not None:
        contents["trainer"].update(model=full_state[0], optimizer=full_state[1])
    return atomic_save(contents, path)


def load(
    path: str | os.PathLike[str],
    *,
    model: nn.Module | None = None,
    builder: Callable[..., nn.Module] | None = None,
    loss: Any = None,
    optimizer: Any = None,
    metrics: Any = None,
    callbacks: Iterable[Any] | None = None,
    device: str | int | bool | torch.device | None = "auto",
    dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    precision: str | Recorded = RECORDED,
    accumulate: int | Recorded = RECORDED,
    clip_norm: float | None | Recorded = RECORDED,
    clip_value: float | None | Recorded = RECORDED,
    nonfinite: str | Recorded = RECORDED,
) -> Trainer:
    """Return a `Trainer` rebuilt from a file, ready to `predict`, `evaluate` or `fit` further.

    The model comes from `model=` when given, else from `builder=` called with the recorded
    arguments, else from the recorded class (which must be a `torch.nn.Module` subclass; a
    builder function is never called from a name in the file). A file from `trainer.save`
    also brings back the loss, optimizer and metrics recorded by name (each given argument
    wins), the optimizer's state, the counters and the history, so `fit` continues the epoch
    count, and the step options, so each step is made as before. Other files give weights
    only: a run's `last.ckpt` (with its optimizer state, counters and history), a plain
    `state_dict` (`.pt`) or a `.safetensors` export; the trainer then has exactly the loss,
    optimizer, metrics and step options passed here (`Trainer`'s defaults for the others).

    The step options (`precision`, `accumulate`, `clip_norm`, `clip_value`, `nonfinite`) left
    at `RECORDED` keep the file's values; any value passed wins, `None` included:
    `clip_norm=None` turns recorded clipping off. Clipping is one choice: passing `clip_norm`
    or `clip_value` replaces both recorded values.

    Args:
        path: The file.
        model: A model to load the weights into, built as the saved one was.
        builder: The function that built the model, called with the recorded arguments.
        loss: The loss, when it was not recorded by name (or to replace it).
        optimizer: The optimizer. Its saved state is restored when it is of the saved class
            over parameter groups of the same sizes; otherwise it starts fresh.
        metrics: The metrics, when they were not recorded by name (or to replace them).
        callbacks: The callbacks of the new trainer (their saved states are not restored).
        device: Where to put the model, as for `Trainer`.
        dir: The new trainer's experiment directory, as for `Trainer`.
        progress: Add a progress bar, as for `Trainer`.
        precision: As for `Trainer`; default: as recorded (a recorded `"fp16"` loaded off
            CUDA, where it cannot run, becomes `"32"` with a warning).
        accumulate: As for `Trainer`; default: as recorded.
        clip_norm: As for `Trainer` (`None`: no clipping by norm); default: as recorded.
        clip_value: As for `Trainer` (`None`: no clipping by value); default: as recorded.
        nonfinite: As for `Trainer`; default: as recorded.

    Raises:
        ValueError: If the model cannot be rebuilt, its weights come from another architecture
            (the message names the keys and shapes), something not recorded by name is not
            given, a recorded step option is damaged or unknown (and not passed), or the file
            is not one kiln reads; each message names the file and says what to pass.
        CheckpointError: If the file is missing or holds anything but tensors and plain data.

    Example:
        >>> import tempfile, torch, kiln
        >>> X, Y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> trainer = kiln.Trainer(kiln.MLP(4, [8], 3), loss="cross_entropy", device="cpu",
        ...                        progress=False, accumulate=2, clip_norm=1.0)
        >>> _ = trainer.fit((X, Y), epochs=2)
        >>> path = save_trainer(trainer, tempfile.mkdtemp() + "/run.kiln")
        >>> loaded = kiln.load(path, device="cpu", progress=False)
        >>> torch.equal(loaded.predict(X), trainer.predict(X))
        True
        >>> len(loaded.fit((X, Y), epochs=1))
        3
        >>> # accumulate=2 as recorded, and no clipping from here on:
        >>> unclipped = kiln.load(path, device="cpu", progress=False, clip_norm=None)
    """
    path = Path(path)
    source = str(path)
    given = {"loss": loss, "optimizer": optimizer, "metrics": metrics}
    if path.suffix.lower() == ".safetensors":
        weights, recipe = read_safetensors(path)
        contents: dict[str, Any] = {"recipe": recipe}
    else:
        contents = _read_kiln_file(path)
        weights = contents["trainer"]["model"] if "trainer" in contents else contents["weights"]
    given_steps = {
        "precision": precision,
        "accumulate": accumulate,
        "clip_norm": clip_norm,
        "clip_value": clip_value,
        "nonfinite": nonfinite,
    }
    steps = step_arguments(contents.get("step"), given_steps, source)  # checked before building
    net = model if model is not None else _rebuild(contents.get("recipe"), builder, source)
    if not isinstance(net, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module; received {type(net).__name__}.")
    run.load_model_state(net, weights, source)
    records = contents.get("records")
    arguments = given if records is None else rebuild_components(records, net, given, source)
    from kiln.trainer import Trainer  # here: trainer.py imports this module for Trainer.save

    if precision is RECORDED and steps.get("precision") == "fp16":
        steps["precision"] = _recorded_fp16(device, source)
    trainer = Trainer(
        net, callbacks=callbacks, device=device, dir=dir, progress=progress, **arguments, **steps
    )
    if "trainer" in contents:
        saved_class = None if records is None else records["optimizer"].get("target")
        _restore_run(trainer, contents["trainer"], saved_class, source)
    return trainer


def _recorded_fp16(device: str | int | bool | torch.device | None, source: str) -> str:
    """The precision for a recorded `"fp16"`: itself on CUDA, else `"32"` with a warning.

    A run trained in fp16 on a GPU is often loaded on a laptop to predict; refusing the file
    there would help no one, and float16 autocast does not run off CUDA.
    """
    from kiln.devices import resolve_device  # noqa: PLC0415  (light, but only needed here)

    placed = resolve_device(device)
    if placed.type == "cuda":
        return "fp16"
    warnings.warn(
        f"{source} recorded precision='fp16', which runs on CUDA only; the trainer loaded on "
        f"{placed} computes in full precision ('32'). Pass precision= to kiln.load to choose.",
        stacklevel=3,
    )
    return "32"


def _rebuild(recipe: Any, builder: Callable[..., nn.Module] | None, source: str) -> nn.Module:
    if recipe is None:
        if builder is not None:
            return builder()
        raise ValueError(
            f"{source} holds weights but no record of how the model was built. Pass the model: "
            "kiln.load(path, model=...), built as the saved one was."
        )
    return rebuild_model(check_recipe(recipe, source), builder, source)


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
        recipe, step = contents.get("recipe"), contents.get("step")  # no step: an older save
        return {"recipe": recipe, "records": records, "step": step, "trainer": state}
    if isinstance(contents, dict) and {"format", "model", "optimizer", "state"} <= set(contents):
        return {"trainer": _check_trainer_state(contents, path)}  # a run's last.ckpt
    if isinstance(contents, dict) and isinstance(contents.get("model"), dict):
        return {"weights": contents["model"]}  # a weights record, as Checkpoint writes
    if isinstance(contents, dict) and all(isinstance(v, torch.Tensor) for v in contents.values()):
        return {"weights": contents}
    raise ValueError(
        f"{path} holds a {type(contents).__name__} that kiln does not recognise. Expected a "
        "file from trainer.save, a run checkpoint (last.ckpt), or a state_dict (a dict of "
        "tensors, as torch.save(model.state_dict(), path) writes)."
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
    parts = {"model": dict, "state": dict, "history": dict}
    if not (
        isinstance(state, dict)
        and all(isinstance(state.get(key), kind) for key, kind in parts.items())
    ):
        received = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"The trainer state in {path} is damaged or was not written by kiln: expected a "
            f"dict with the dicts 'model', 'state' and 'history'; received {received}. Write "
            "it again with trainer.save(path)."
        )
    return state


def _restore_run(
    trainer: Trainer, state: dict[str, Any], saved_optimizer: str | None, source: str
) -> None:
    """Restore the optimizer's state, the counters and the history, so `fit` continues."""
    if state.get("format") != run.FORMAT:
        raise ValueError(
            f"{source} holds a trainer state of format {state.get('format')!r}; this kiln "
            f"reads format {run.FORMAT}. Load it with the kiln version that wrote it."
        )
    optimizer, optimizer_state = trainer.optimizer, state.get("optimizer")
    fits = optimizer is not None and _state_fits(optimizer, optimizer_state, saved_optimizer)
    if optimizer is not None and isinstance(optimizer_state, dict) and fits:
        optimizer.load_state_dict(optimizer_state)
        # The fp16 gradient scaler and a gradient group's sums, when the trainer has them.
        trainer._steps.load_state_dict(state.get("optimizer_step"), optimizer)
    trainer.state.load_state_dict(state["state"])
    trainer.state.stop_reason = state["state"].get("stop_reason")
    trainer.history.load_state_dict(state["history"])
