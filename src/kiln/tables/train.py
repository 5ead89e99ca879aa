"""Training on a table, and predicting and evaluating with the run directory it leaves.

What lives here: `TableOptions` (what `kiln fit` lets you choose), `train_table` (split, encode,
build, train with the preset, save), `load_run`, `predict_table` and `evaluate_table`. What does
not: reading tables (`read.py`), columns (`spec.py`), the network and loss (`model.py`),
metrics (`metrics.py`), the command line (`cli.py`).

A run directory holds everything needed to predict (it is also the trainer's `dir`):

| file                     | what                                                             |
|--------------------------|------------------------------------------------------------------|
| `model.kiln`             | the trained trainer (`trainer.save`; `kiln.load` rebuilds it)     |
| `table.json`             | the `TableSpec` (columns, kinds, statistics, vocabularies,       |
|                          | target labels) and the `TableOptions` of the run                 |
| `summary.json`           | final metrics per target on the training and validation rows     |
| `log.tsv`, `last.ckpt`,  | the trainer's experiment files (`kiln.checkpoint.directory`):    |
| `best/`                  | the log, the state `--resume` continues, the best weights (no    |
|                          | plots: matplotlib would cost a short run a second or more)       |
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickle
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import kiln
from kiln.callbacks import PlotLogs, ProgressBar, StopFile
from kiln.devices import resolve_device
from kiln.presets import CriterionTrainer
from kiln.tables.metrics import target_metrics
from kiln.tables.model import (
    ACTIVATIONS,
    build_loss,
    build_model,
    default_activation,
    default_bins,
)
from kiln.tables.read import Table, TableError, as_labels, is_missing
from kiln.tables.recipe import (
    SMOOTHING,
    BestEpoch,
    TableSchedule,
    calibrate,
    default_lr,
    make_optimizer,
    passes,
    rounds,
)
from kiln.tables.spec import TableSpec
from kiln.trainer import Trainer

MODEL, SPEC, SUMMARY = "model.kiln", "table.json", "summary.json"
#: The training rows (drawn at random) that set the network's initial weights.
INIT_ROWS = 1024
#: What chooses the weights kept: the validation loss without label smoothing.
MONITOR = "val_unscaled_loss"


@dataclass(frozen=True)
class TableOptions:
    """How `train_table` trains: the network, its training and the validation split.

    `None` leaves the choice to the recipe (`kiln.tables.recipe`): the passes over the
    training rows by the table's size, the learning rate by the targets' kinds. The network is
    `members` MLPs of `hidden` widths side by side, their outputs averaged
    (`kiln.tables.model.TableNet`): two of 160 units cost a step what one of 256 does, and
    on the development tables they predicted better (docs/benchmarks.md). Each numeric column
    is embedded periodically and, in `bins` bins between its training quantiles,
    piecewise-linearly (0: not; by default 16 when every target is regression, else 0,
    `kiln.tables.model.default_bins`).

    Example:
        >>> TableOptions(hidden=(32,), val=0.2).hidden
        (32,)
        >>> TableOptions(val=1.5)
        Traceback (most recent call last):
        ...
        kiln.tables.read.TableError: --val must be in (0, 1): the fraction of rows held out ...
    """

    epochs: int | None = None
    batch_size: int = 256
    lr: float | None = None
    hidden: tuple[int, ...] = (160, 160, 160)
    drop: float = 0.15
    members: int = 2
    bins: int | None = None
    val: float = 0.2
    seed: int = 0
    device: str = "auto"
    kinds: dict[str, str] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "seed", "members", "bins"):
            value = getattr(self, name)
            if name in ("epochs", "bins") and value is None:
                continue
            least = 0 if name in ("seed", "bins") else 1
            if not _whole_number(value, least):
                wanted = "a non-negative" if least == 0 else "a positive"
                raise TableError(
                    f"--{name.replace('_', '-')} must be {wanted} integer; received {value!r}."
                )
        if self.lr is not None and not self.lr > 0:
            raise TableError(f"--lr must be positive; received {self.lr!r}.")
        if not 0 < self.val < 1:
            raise TableError(
                "--val must be in (0, 1): the fraction of rows held out for validation, which "
                f"choosing the best weights needs; received {self.val!r}."
            )
        if not 0 <= self.drop < 1:
            raise TableError(f"--drop must be in [0, 1); received {self.drop!r}.")
        if any(width <= 0 for width in self.hidden):
            raise TableError(f"--hidden widths must be positive; received {list(self.hidden)}.")


def split_rows(rows: int, val: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted training and validation row indices: the same for the same arguments.

    Example:
        >>> train, val = split_rows(10, 0.2, seed=0)
        >>> len(train), len(val), sorted([*train, *val]) == list(range(10))
        (8, 2, True)
    """
    order = np.random.default_rng(seed).permutation(rows)
    held = min(rows - 1, max(1, round(val * rows))) if val > 0 else 0
    return np.sort(order[held:]), np.sort(order[:held])


def make_trainer(
    model: torch.nn.Module,
    spec: TableSpec,
    options: TableOptions,
    out: Path,
    progress: bool,
    steps: int,
    steps_per_epoch: int,
    val: tuple[torch.Tensor, torch.Tensor],
) -> Trainer:
    """Return the trainer `kiln fit` uses for `steps` optimizer steps (`kiln.tables.recipe`).

    The criterion of the targets with smoothed labels, the recipe's optimizer and schedules,
    and the best weights of each learning-rate cycle by the unsmoothed loss on `val` kept in
    memory (`kiln.tables.recipe.BestEpoch`); `train_table` mixes them back at the end. The
    progress bar is always there (silenced by `progress=False`), so that a run resumes with the
    same callbacks either way.
    """
    criterion = build_loss(spec, SMOOTHING)
    lr = options.lr if options.lr is not None else default_lr(spec)
    bar = ProgressBar() if progress else ProgressBar(bar=False, file=_Discard())  # type: ignore[arg-type]
    best = BestEpoch(val[0], val[1], criterion, steps_per_epoch, steps)
    callbacks = [
        bar,
        TableSchedule(lr, options.drop, steps),
        best,
        StopFile(name=out.name),
        PlotLogs(formats=()),  # no figures: matplotlib would cost a short run a second or two
    ]
    return CriterionTrainer(
        model, loss=criterion, optimizer=make_optimizer(model, lr), callbacks=callbacks,
        device=options.device, dir=out, monitor=MONITOR,
    )  # fmt: skip


class _Discard(io.TextIOBase):
    """A text file that forgets what is written to it: the quiet progress bar's output."""

    def write(self, text: str) -> int:
        return len(text)


def train_table(
    table: Table,
    targets: list[str],
    out: str | os.PathLike[str],
    options: TableOptions,
    *,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a network on `table` to predict `targets`, and leave a run directory at `out`.

    Rows whose targets are all missing are left out. The validation rows are a fixed
    fraction (`options.val`) drawn with `options.seed`; the columns' statistics come from the
    training rows only.

    Args:
        table: The data.
        targets: The columns to predict.
        out: The run directory.
        options: The network and training options. With `resume`, those saved in `out` are
            used instead, except `epochs` (the total to reach) and `device`.
        resume: Continue the run saved in `out` (`fit(resume=True)`), or start it if none is.
        progress: Show a progress bar.

    Returns:
        The summary written to `summary.json`: metrics per target on the training and
        validation rows, epochs, why training stopped, and the files.

    Raises:
        TableError: For bad tables or options (the message says what to change), or when
            `out` holds a run and `resume` is not set.
    """
    with single_thread():
        return _train_table(table, targets, out, options, resume, progress)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch's CPU operations on one thread inside the block; restore the count after.

    The recipe's operations are small (batches of 256 rows through layers of 160 units): split
    over threads, they spend more time waiting for each other than computing, and on a busy
    machine far more (measured on 2 cores: a step took 10 ms on one thread and 74 ms on two
    while another process was running; quiet, one thread was as fast).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train_table(
    table: Table,
    targets: list[str],
    out: str | os.PathLike[str],
    options: TableOptions,
    resume: bool,
    progress: bool,
) -> dict[str, Any]:
    out = Path(out)
    saved = out / SPEC
    table.require(list(targets), "Target")
    activation = None  # a new run: the default for its targets
    if resume and saved.exists():
        spec, options, activation = _saved_run(saved, targets, options)
    elif (out / "last.ckpt").exists() or saved.exists():
        raise TableError(
            f"{out} already holds a run. Continue it with --resume, or choose another --out "
            "(or delete the directory)."
        )
    kept_rows = np.flatnonzero(~np.all(np.isnan(_target_presence(table, targets)), axis=1))
    train_rows, val_rows = split_rows(len(kept_rows), options.val, options.seed)
    if not (resume and saved.exists()):  # kinds from all rows, statistics from training rows
        spec = TableSpec.infer(
            table,
            targets,
            kinds=options.kinds,
            ignore=options.ignore,
            train_rows=kept_rows[train_rows],
        )
    kept = table.rows(kept_rows)
    if spec.dense_width == 0 and not spec.embeddings:
        raise TableError(f"{table.source} has no feature columns besides the targets.")
    inputs = torch.from_numpy(spec.encode_features(kept))
    encoded = spec.encode_targets(kept)
    labels = torch.from_numpy(encoded)
    kiln.seed_everything(options.seed)
    activation = activation or default_activation(spec)
    bins = default_bins(spec) if options.bins is None else options.bins
    options = replace(options, bins=bins)  # saved: a resumed run builds the same network
    model = build_model(
        spec,
        options.hidden,
        options.drop,
        activation=activation,
        members=options.members,
        bins=bins,
    )
    model.initialize(inputs[train_rows[torch.randperm(len(train_rows))[:INIT_ROWS].numpy()]])
    count, per_round = rounds(options.epochs or passes(len(train_rows), options.batch_size))
    epochs = count * per_round
    options = replace(options, epochs=epochs)  # saved: a resumed run keeps it
    per_epoch = math.ceil(len(train_rows) / options.batch_size)
    held_out = inputs[val_rows], labels[val_rows]
    trainer = make_trainer(
        model, spec, options, out, progress, epochs * per_epoch, per_epoch, held_out
    )
    out.mkdir(parents=True, exist_ok=True)
    spec_data = {
        **spec.to_dict(),
        "options": asdict(options),
        "network": {"activation": activation},
        "rows": len(kept),
    }
    (out / SPEC).write_text(json.dumps(spec_data, indent=1) + "\n", encoding="utf-8")
    train = kiln.repeat((inputs[train_rows], labels[train_rows]), per_round)
    trainer.fit(train, held_out, epochs=count, resume=resume, batch_size=options.batch_size)
    best = next(cb for cb in trainer.callbacks if isinstance(cb, BestEpoch))
    best.restore(trainer.model)
    # after the restore: the best weights, calibrated once
    calibrate(trainer.model, spec.output_layout, best.inputs, best.targets)
    trainer.save(out / MODEL)
    outputs = _outputs(trainer, spec, inputs, options.batch_size)
    metrics = {"train": target_metrics(spec, encoded[train_rows], outputs[train_rows])}
    if len(val_rows):
        metrics["val"] = target_metrics(spec, encoded[val_rows], outputs[val_rows])
    summary = {
        "metrics": metrics,
        "epochs": trainer.state.epoch * per_round,
        "best_epoch": best.epoch,
        "averaged_cycles": best.mixed,
        "rounds": {"done": trainer.state.epoch, "epochs": per_round},
        "stopped": trainer.state.stop_reason,
        "rows": {"train": len(train_rows), "val": len(val_rows), "dropped": len(table) - len(kept)},
        "files": {"model": str(out / MODEL), "spec": str(out / SPEC), "log": str(out / "log.tsv")},
    }
    (out / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def _target_presence(table: Table, targets: list[str]) -> np.ndarray:
    """NaN where a target is missing, 0 where present, `(rows, targets)`."""
    present = [~is_missing(as_labels(table, name)) for name in targets]
    return np.where(np.stack(present, axis=1), 0.0, np.nan)


def _saved_run(
    path: Path, targets: list[str], options: TableOptions
) -> tuple[TableSpec, TableOptions, str]:
    """The spec, the options and the hidden units of the run saved at `path`, to resume it."""
    spec, data = _read_spec(path)
    saved_targets = [c["name"] for c in spec.targets]
    if saved_targets != list(targets):
        raise TableError(
            f"{path.parent} was trained for the target(s) {', '.join(saved_targets)}; "
            f"received {', '.join(targets)}. Resume with the same --target, or choose another "
            "--out."
        )
    try:
        saved = dict(data["options"], hidden=tuple(data["options"]["hidden"]))
        saved.setdefault("members", 1)  # saved before ensembles: one network
        saved.setdefault("bins", 0)  # saved before piecewise-linear embeddings: none
        epochs = options.epochs or saved["epochs"]  # the run's own length, unless given
        saved.update(ignore=tuple(saved["ignore"]), epochs=epochs, device=options.device)
        resumed = TableOptions(**saved)
    except (KeyError, TypeError, ValueError) as error:
        raise TableError(
            f"{path} is damaged: its 'options' cannot be read ({type(error).__name__}: "
            f"{error}). Train again into another --out, or delete {path.parent}."
        ) from None
    return spec, resumed, _saved_activation(path, data, spec)


def _saved_activation(path: Path, data: dict[str, Any], spec: TableSpec) -> str:
    """The hidden units a saved run was built with.

    A run saved before `table.json` recorded them used Mish for regression (SELU otherwise):
    resuming it builds the network it was training.
    """
    network = data.get("network")
    if network is None:
        return "mish" if default_activation(spec) == "silu" else "selu"
    activation = network.get("activation") if isinstance(network, dict) else None
    if activation not in ACTIVATIONS:
        raise TableError(
            f"{path} is damaged: its 'network' names no known activation (found "
            f"{str(network)[:80]!r}; expected one of {', '.join(ACTIVATIONS)}). Train again "
            f"into another --out, or delete {path.parent}."
        )
    return str(activation)


def _read_spec(path: Path) -> tuple[TableSpec, dict[str, Any]]:
    """Read a run's `table.json`: its spec, and the whole record.

    Raises:
        TableError: If the file is not UTF-8 JSON, or not a spec that `kiln fit` writes.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TableError(
            f"{path} is not valid JSON ({error}): the run's table spec is damaged. Train the "
            "model again."
        ) from None
    return TableSpec.from_dict(data, str(path)), data


def load_run(
    run: str | os.PathLike[str], device: str = "auto"
) -> tuple[Any, TableSpec, dict[str, Any]]:
    """Return the trainer, the spec and the saved options of the run directory `run`.

    Raises:
        TableError: If `run` is not a directory that `kiln fit` finished, or one of its files
            is damaged (the message names it).
    """
    run = Path(run)
    if not (run / SPEC).exists() or not (run / MODEL).exists():
        raise TableError(
            f"{run} is not a finished `kiln fit` run: expected {run / SPEC} and {run / MODEL}. "
            "Train one with `kiln fit DATA --target COLUMN --out RUN`."
        )
    spec, data = _read_spec(run / SPEC)
    options = data.get("options", {})
    if not isinstance(options, dict) or not _positive_int(options.get("batch_size", 1)):
        raise TableError(
            f"{run / SPEC} is damaged: its 'options' are not those `kiln fit` writes (found "
            f"{str(options)[:80]!r}). Train the model again."
        )
    loss = build_loss(spec)
    resolve_device(device)  # a device error is not a damaged file
    try:
        trainer = kiln.load(run / MODEL, loss=loss, device=device, progress=False)
    except _UNREADABLE as error:  # (a NameError or ImportError is kiln's bug: shown as such)
        message = " ".join(str(error).split())
        if str(run / MODEL) not in message:
            message = (
                f"{run / MODEL} cannot be loaded ({type(error).__name__}: {message}). It is "
                "damaged (empty or cut short?) or was not written by this run's `kiln fit`."
            )
        raise TableError(f"{message} Or train the model again with `kiln fit`.") from error
    _check_model_fits(trainer.model, spec, options, run)
    return trainer, spec, options


#: What reading a damaged or foreign `model.kiln` raises (torch's and zipfile's errors too).
_UNREADABLE = (
    ValueError,
    OSError,
    EOFError,
    RuntimeError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)


def _check_model_fits(
    model: torch.nn.Module, spec: TableSpec, options: dict[str, Any], run: Path
) -> None:
    """Raise a `TableError` if `model` is not the network `spec` and `options` describe."""
    hidden, drop = options.get("hidden"), options.get("drop", 0.0)
    members, bins = options.get("members", 1), options.get("bins", 0)
    if not (isinstance(hidden, list) and all(map(_positive_int, hidden))):
        return  # nothing to compare with
    if not (isinstance(drop, (int, float)) and 0 <= drop < 1):
        return
    if not (_positive_int(members) and _whole_number(bins, 0)):
        return
    with torch.device("meta"):  # shapes only: no memory, no random numbers
        expected = build_model(spec, hidden, drop, members=members, bins=bins).state_dict()
    shapes = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    wanted = {name: tuple(value.shape) for name, value in expected.items()}
    if shapes != wanted:
        differ = sorted(k for k in shapes.keys() | wanted.keys() if shapes.get(k) != wanted.get(k))
        first = differ[0]
        if first not in wanted:
            detail = f"{first} (shape {shapes[first]}) is not a weight of the spec's network"
        elif first not in shapes:
            detail = f"it lacks {first}, a weight of the spec's network"
        else:
            detail = (
                f"{first} has the shape {shapes[first]} where the spec's columns need "
                f"{wanted[first]}"
            )
        raise TableError(
            f"{run / MODEL} does not fit {run / SPEC}: {detail} ({len(differ)} such "
            f"weight{'s' if len(differ) > 1 else ''}). The two files come from different runs; "
            "copy both from one run, or train the model again."
        )


def _whole_number(value: Any, least: int) -> bool:
    """Whether `value` is an integer (not a bool) of at least `least`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _positive_int(value: Any) -> bool:
    return _whole_number(value, 1)


def _outputs(trainer: Any, spec: TableSpec, inputs: torch.Tensor, batch_size: int) -> np.ndarray:
    """Post-processed outputs: probabilities for classes, standardised regression values."""
    outputs = trainer.predict(inputs, batch_size=max(batch_size, 256))  # the loss's postproc
    return np.asarray(outputs.float().numpy())


def predict_table(
    run: str | os.PathLike[str], table: Table, device: str = "auto"
) -> dict[str, Any]:
    """Return prediction columns for `table` from the run `run`, in the original label space.

    Raises:
        TableError: If the columns of `table` do not match the training columns (the message
            names the missing and the extra ones).
    """
    trainer, spec, options = load_run(run, device)
    inputs = torch.from_numpy(spec.encode_features(table))
    return spec.decode(_outputs(trainer, spec, inputs, int(options.get("batch_size", 256))))


def evaluate_table(
    run: str | os.PathLike[str], table: Table, device: str = "auto"
) -> dict[str, dict[str, float]]:
    """Return metrics per target of the run `run` on `table`, which must hold the targets."""
    trainer, spec, options = load_run(run, device)
    spec.check_columns(table, with_targets=True)
    inputs = torch.from_numpy(spec.encode_features(table))
    outputs = _outputs(trainer, spec, inputs, int(options.get("batch_size", 256)))
    return target_metrics(spec, spec.encode_targets(table), outputs)


__all__ = [
    "TableOptions",
    "evaluate_table",
    "load_run",
    "make_trainer",
    "predict_table",
    "split_rows",
    "train_table",
]
