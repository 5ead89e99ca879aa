"""The experiment directory (`Trainer(dir=...)`): its layout, the callbacks that fill it, tests.

What lives here: what a directory holds and which callbacks fill it, and testing a saved
checkpoint (`trainer.test`). What does not: the full-state checkpoint and resume (`run.py`), and
the callbacks themselves (`callbacks/`).

Layout of a directory, all files written atomically:

| file                         | written                                                      |
|------------------------------|--------------------------------------------------------------|
| `last.ckpt`                  | the whole training state, after every epoch (and with        |
|                              | `StepCheckpoint`, inside epochs): what `resume=True` reads    |
| `best/epoch_{epoch}.ckpt`    | the weights, at each improvement of the monitored value      |
| `log.tsv`                    | one row per epoch, tab-separated; a resumed run continues it |
| `plots/{value}.png`          | a figure per logged value, at the end of `fit` (matplotlib)  |
| `test_log.tsv`               | the tested checkpoint's epoch row and the `test_` values     |
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.callbacks.checkpoint import Checkpoint
from kiln.callbacks.csv_logger import CSVLogger, order_columns
from kiln.callbacks.plot_logs import PlotLogs
from kiln.checkpoint.files import atomic_write
from kiln.checkpoint.run import LAST, load_model_state
from kiln.checkpoint.weights import load_weights
from kiln.distributed.context import is_main_process

if TYPE_CHECKING:
    from kiln.callbacks.base import Callback
    from kiln.history import Evaluation
    from kiln.trainer import Trainer

#: The file name of the best weights, by the monitored value.
BEST = "best/epoch_{epoch}.ckpt"
_BEST_PATTERN = re.compile(r"epoch_(\d+)\.ckpt")


class BestWeights(Checkpoint):
    """The directory's `best/epoch_{epoch}.ckpt` files, by the trainer's monitored value.

    Without validation data, a `val_` value is monitored on the training data instead, so that
    a directory always has a best checkpoint. A new run (not resumed) removes the best files of
    the run it replaces.
    """

    def __init__(self, monitor: str) -> None:
        super().__init__(BEST, monitor=monitor, save_best_only=True)
        self.preferred = monitor

    def on_fit_start(self, trainer: Trainer) -> None:
        """Choose the training counterpart of a `val_` value when `fit` has no validation."""
        validates = trainer.state.val_data is not None
        self.monitor = self.preferred if validates else self.preferred.removeprefix("val_")
        fresh = trainer.state.epoch == 0 and not trainer.state.resumed
        if fresh and trainer.dir is not None and is_main_process():
            # A new run replaces the directory's run: its best files must not pass for ours.
            for stale in (trainer.dir / "best").glob("epoch_*.ckpt"):
                stale.unlink()
        super().on_fit_start(trainer)


def directory_callbacks(monitor: str, given: list[Any]) -> list[Callback]:
    """The callbacks that fill an experiment directory: best weights, the log and the plots.

    A log or plots the user's callbacks `given` already write to the same place are left out,
    so that two callbacks never write one file.
    """
    log, plots = Path("log.tsv"), Path("plots")
    added: list[Callback] = [BestWeights(monitor)]
    if not any(isinstance(cb, CSVLogger) and cb.path in (log, log.absolute()) for cb in given):
        added.append(CSVLogger(log, separator="\t", append=True))
    if not any(isinstance(cb, PlotLogs) and cb.directory == plots for cb in given):
        added.append(PlotLogs(plots, required=False))
    return added


def _best_files(directory: Path) -> dict[int, Path]:
    found = (_BEST_PATTERN.fullmatch(path.name) for path in (directory / "best").glob("*.ckpt"))
    return {int(match.group(1)): directory / "best" / match.group(0) for match in found if match}


def find_checkpoint(
    directory: Path, checkpoint: str | int | os.PathLike[str]
) -> tuple[Path, int | None]:
    """Return the file `trainer.test` loads, and the epoch it was saved after when known.

    Raises:
        FileNotFoundError: If there is no such checkpoint, with the ones there are.
    """
    best = _best_files(directory)
    if checkpoint == "best":
        if not best:
            raise FileNotFoundError(
                f"{directory} holds no best checkpoint (best/epoch_*.ckpt): the monitored "
                "value was never logged, or nothing was trained. Test `checkpoint='last'`."
            )
        epoch = max(best)  # each improvement writes a file, so the newest is the best
        return best[epoch], epoch
    if checkpoint == "last":
        path = directory / LAST
        if not path.exists():  # a directory there is read, and refused with a clear error
            raise FileNotFoundError(f"{path} does not exist: nothing was trained in {directory}.")
        return path, None
    if isinstance(checkpoint, int) and not isinstance(checkpoint, bool):
        if checkpoint not in best:
            raise FileNotFoundError(
                f"{directory} holds no checkpoint of epoch {checkpoint}; best checkpoints were "
                f"saved after epochs {sorted(best) or 'none'}. Pass one of them, 'best' or 'last'."
            )
        return best[checkpoint], checkpoint
    if isinstance(checkpoint, (str, os.PathLike)):
        path = Path(checkpoint)
        if not path.exists():
            raise FileNotFoundError(
                f"`checkpoint` must be 'best', 'last', an epoch number or a file; {path} is none."
            )
        match = _BEST_PATTERN.fullmatch(path.name) if path.parent.name == "best" else None
        return path, int(match.group(1)) if match else None
    raise TypeError(
        "`checkpoint` must be 'best', 'last', an epoch number or a path; received "
        f"{type(checkpoint).__name__}."
    )


def test_checkpoint(
    trainer: Trainer,
    data: Any,
    checkpoint: str | int | os.PathLike[str],
    name: str,
    batch_size: int | None,
) -> Evaluation:
    """Load a checkpoint's weights into the model, evaluate `data`, write `{name}_log.tsv`."""
    directory = trainer.dir
    if directory is None:
        raise ValueError(
            "`test` evaluates a checkpoint of the experiment directory, but this trainer has "
            "none: create it with `Trainer(..., dir='runs/name')`, or use `evaluate`."
        )
    path, epoch = find_checkpoint(directory, checkpoint)
    load_model_state(trainer.model, load_weights(path), str(path))
    evaluation = trainer.evaluate(data, batch_size=batch_size)
    epochs = trainer.history.epochs
    if epoch is None and checkpoint == "last" and epochs:
        epoch = int(epochs[-1]["epoch"])
    row: dict[str, Any] = next((dict(r) for r in epochs if r.get("epoch") == epoch), {})
    row.pop("time", None)
    row.setdefault("epoch", "" if epoch is None else epoch)
    tested = {f"{name}_{key}": value for key, value in evaluation.to_dict().items()}
    row = {key: row[key] for key in order_columns(row)} | tested  # log.tsv's order, then ours
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t", lineterminator="\n")
    writer.writerows([list(row), [_cell(value) for value in row.values()]])
    encoded = text.getvalue().encode()
    if is_main_process():  # under torchrun rank 0 writes the files
        atomic_write(directory / f"{name}_log.tsv", lambda file: file.write(encoded))
    return evaluation


def _cell(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)
