"""`TensorBoard`: the epoch values, batch losses and hyperparameters of a run, for TensorBoard.

The layout is the one TensorBoard users know: two runs, `train` and `validation`, with the same
tags, so each chart overlays both curves. Under `log_dir`:

- `train/`: `epoch_loss`, `epoch_accuracy`, ..., `epoch_lr`, `epoch_time`: every value the
  epoch logged (without `val_` prefix), at step = the epoch number (1, 2, ...);
- `validation/`: the `val_` values under the same tags (`val_loss` is `epoch_loss`);
- `batch/` (with `batch_interval`): `batch_loss` at step = the optimizer step count, and the
  per-step values other callbacks put in the logs during the pass (`batch_lr` from
  `LRMonitor(interval="step")`);
- `hparams/`: the hyperparameters with the final values, for TensorBoard's HPARAMS tab.

Resuming drops what the run wrote after its checkpoint through TensorBoard's own mechanism,
`purge_step`: events at or after it, in files written earlier, are ignored when read.

What lives here: the callback and `run_hparams`, the hyperparameters kiln knows of a run (the
MLflow logger uses them too). What does not: the values, which the trainer puts in
`trainer.state.logs`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from kiln.callbacks.base import Callback
from kiln.callbacks.log_files import resolve_log_path

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from kiln.trainer import Trainer

#: The run directories under `log_dir`.
TRAIN, VALIDATION, BATCH, HPARAMS = "train", "validation", "batch", "hparams"
#: The types a hyperparameter value may have (TensorBoard's and MLflow's common ground).
HPARAM_TYPES = (bool, int, float, str)


def run_hparams(trainer: Trainer) -> dict[str, Any]:
    """Return the hyperparameters kiln knows of `trainer`'s run, for the loggers.

    The model's class and parameter count, the loss, the optimizer's class and first learning
    rate, the batch size of the training data (once a pass has started) and the epoch count.

    Example:
        >>> import torch, kiln
        >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", lr=0.01, device="cpu")
        >>> run_hparams(trainer)
        {'model': 'Linear', 'parameters': 3, 'loss': 'mse', 'optimizer': 'Adam', 'lr': 0.01}
    """
    optimizer, state = trainer.optimizer, trainer.state
    values: dict[str, Any] = {
        "model": type(trainer.model).__name__,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "loss": None if trainer.loss is None else trainer.loss.name,
        "optimizer": None if optimizer is None else type(optimizer).__name__,
        "lr": None if optimizer is None else float(optimizer.param_groups[0]["lr"]),
        "batch_size": getattr(state.data, "batch_size", None),
        "epochs": state.max_epochs or None,
    }
    return {name: value for name, value in values.items() if isinstance(value, HPARAM_TYPES)}


def check_hparams(owner: str, hparams: Any) -> dict[str, Any]:
    """Return `hparams` as a dict, or raise naming `owner` if it cannot be logged.

    Raises:
        TypeError: If it is not a mapping of strings to bool, int, float or str.
    """
    if hparams is None:
        return {}
    if not isinstance(hparams, Mapping):
        raise TypeError(
            f"{owner}: `hparams` must be a dict of names to values, such as {{'dropout': 0.1}}; "
            f"received {type(hparams).__name__}."
        )
    for name, value in hparams.items():
        if not isinstance(name, str) or not isinstance(value, HPARAM_TYPES):
            raise TypeError(
                f"{owner}: hyperparameters must map strings to bool, int, float or str; "
                f"received {name!r}: {value!r} ({type(value).__name__}). Convert the value, "
                "e.g. with str()."
            )
    return dict(hparams)


def _import_writer() -> type[SummaryWriter]:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:  # torch raises this when the tensorboard package is missing
        raise ImportError(
            f"The TensorBoard callback needs the tensorboard package ({error}). Install it "
            "with `pip install 'kiln[tensorboard]'` (or `pip install tensorboard`)."
        ) from error
    return SummaryWriter


class TensorBoard(Callback):
    """Write the run's values as TensorBoard event files, a run each for training and validation.

    See the module docstring for the layout. Values are written when the epoch's logs are
    complete and flushed then, before the trainer saves its checkpoint; TensorBoard sees each
    epoch as it ends. Epoch values are numbers already (the trainer read them from the device
    once per epoch); the batches' losses are gathered on the device and read once every
    `batch_interval` optimizer steps, so the logger adds no more than one synchronisation per
    interval.

    A run that continues (`fit(..., resume=True)`, or a later `fit` of the same trainer) opens
    new event files with `purge_step` set to its first epoch and step: what the interrupted run
    wrote after its checkpoint is dropped, and no epoch appears twice. A new run in a
    directory that holds an earlier run's events hides those the same way (as `CSVLogger`
    starts its file anew). TensorBoard reads event files in the order of their names, which
    start with the second they were created in.

    Args:
        log_dir: The directory; a relative path is relative to `trainer.dir` when the trainer
            has one, else to the current directory.
        batch_interval: Also write `batch_loss` every this many optimizer steps: the
            sample-weighted mean of the training losses of the batches since the last point
            (gradient accumulation included). `None`: epochs only.
        hparams: Hyperparameters to record (names to bool, int, float or str), added to those
            kiln knows (`run_hparams`: model, optimizer, lr, batch size, ...). They are written
            when `fit` ends, with the last epoch's values as the metrics.

    Example:
        >>> import tempfile, torch, kiln
        >>> from kiln.callbacks.tensorboard import TensorBoard
        >>> folder = tempfile.TemporaryDirectory()
        >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu",
        ...                        callbacks=[TensorBoard(hparams={"note": "demo"})],
        ...                        progress=False, dir=folder.name)
        >>> _ = trainer.fit((torch.randn(8, 2), torch.randn(8, 1)), val=0.25, epochs=2)
        >>> sorted(path.name for path in (trainer.dir / "tensorboard").iterdir())
        ['hparams', 'train', 'validation']
        >>> folder.cleanup()
    """

    #: Under torchrun, runs on rank 0 only: it only writes files.
    main_process_only = True

    def __init__(
        self,
        log_dir: str | os.PathLike[str] = "tensorboard",
        batch_interval: int | None = None,
        hparams: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(log_dir, (str, os.PathLike)) or not os.fspath(log_dir):
            raise TypeError(
                "TensorBoard: `log_dir` must be a directory name or path, such as 'tensorboard';"
                f" received {log_dir!r}."
            )
        if batch_interval is not None:
            if isinstance(batch_interval, bool) or not isinstance(batch_interval, int):
                raise TypeError(
                    "TensorBoard: `batch_interval` must be an int or None; received "
                    f"{batch_interval!r} ({type(batch_interval).__name__})."
                )
            if batch_interval <= 0:
                raise ValueError(
                    "TensorBoard: `batch_interval` must be a positive number of steps, or None "
                    f"for epoch values only; received {batch_interval}."
                )
        self.log_dir = Path(log_dir).expanduser()
        self.batch_interval = batch_interval
        self.hparams = check_hparams("TensorBoard", hparams)
        #: Where the event files go, once `fit` has placed `log_dir`.
        self.directory: Path | None = None
        self._writers: dict[str, SummaryWriter] = {}
        self._run_hparams: dict[str, Any] = {}  # captured at the first training pass
        self._losses: list[torch.Tensor] = []  # per-batch losses since the last batch point
        self._sizes: list[int] = []
        self._written_step = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        """Open the writers, dropping events after the point this run continues from."""
        writer_class = _import_writer()
        self.directory = resolve_log_path(self.log_dir, trainer)
        state = trainer.state
        continues = state.resumed or state.epoch > 0
        if not continues:
            self._losses, self._sizes, self._run_hparams = [], [], {}
        self._losses = [loss.to(trainer.device) for loss in self._losses]
        self._written_step = state.step  # a point at this step was written before it was saved
        first_epoch = state.epoch + 1 if continues else 0
        runs = {TRAIN: first_epoch, VALIDATION: first_epoch}
        if self.batch_interval is not None:
            runs[BATCH] = state.step + 1 if continues else 0
        self.close()
        self._writers = {
            run: writer_class(str(self.directory / run), purge_step=purge)
            for run, purge in runs.items()
        }

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        """Note the run's hyperparameters, once the training data is known."""
        if not self._run_hparams:
            self._run_hparams = run_hparams(trainer)

    def on_train_batch_end(self, trainer: Trainer) -> None:
        """With `batch_interval`: keep the batch's loss; every interval, write the mean."""
        state = trainer.state
        output = state.output
        if self.batch_interval is None or output is None or output.loss is None:
            return
        self._losses.append(output.loss.detach())
        self._sizes.append(output.size)
        # With gradient accumulation several batches end at the same step: write after the
        # batch that completed it.
        if state.step % self.batch_interval or state.step <= self._written_step:
            return
        self._written_step = state.step
        losses = torch.stack(self._losses).cpu().double()  # the one read of the interval
        sizes = torch.tensor(self._sizes, dtype=torch.float64)
        self._losses, self._sizes = [], []
        if not sizes.sum():  # every batch skipped for a non-finite loss: nothing to show
            return
        writer = self._writers[BATCH]
        writer.add_scalar("batch_loss", float((losses * sizes).sum() / sizes.sum()), state.step)
        for name, value in state.logs.items():  # values other callbacks log per step
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(f"batch_{name}", value, state.step)

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Write the epoch's values to `train` and `validation`, and flush them."""
        logs = trainer.state.logs
        epoch = int(logs.get("epoch", trainer.state.epoch))
        for name, value in logs.items():
            if name == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            run, tag = (VALIDATION, name[4:]) if name.startswith("val_") else (TRAIN, name)
            self._writers[run].add_scalar(f"epoch_{tag}", value, epoch)
        self.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        """Write the hyperparameters with the last epoch's values, and close the files."""
        if self.directory is not None and trainer.history.epochs:
            final = {
                name: float(value)
                for name, value in trainer.history.epochs[-1].items()
                if name != "epoch" and isinstance(value, (int, float))
            }
            self._write_hparams(
                self.directory / HPARAMS, {**self._run_hparams, **self.hparams}, final
            )
        self.close()

    def _write_hparams(
        self, directory: Path, hparams: dict[str, Any], final: dict[str, float]
    ) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        # Step 0 and a purge from step 0: the latest `fit` replaces what an earlier one wrote.
        writer = _import_writer()(str(directory), purge_step=0)
        try:
            file_writer: Any = writer.file_writer  # untyped in torch
            for summary in hparams_summaries(hparams, final):  # type: ignore[no-untyped-call]
                file_writer.add_summary(summary)
            for name, value in final.items():
                writer.add_scalar(name, value, 0)
        finally:
            writer.close()

    def flush(self) -> None:
        """Write what the writers hold to the disk."""
        for writer in self._writers.values():
            writer.flush()

    def close(self) -> None:
        """Close the event files (the next `fit` opens new ones)."""
        for writer in self._writers.values():
            writer.close()
        self._writers = {}

    def state_dict(self) -> dict[str, Any]:
        """Flush the files, and return the hyperparameters and the losses of an open interval.

        Called when the trainer saves a checkpoint: flushing then puts every event of the
        saved steps on the disk before the checkpoint that vouches for them.
        """
        self.flush()
        losses = torch.stack(self._losses).cpu() if self._losses else torch.zeros(0)
        return {"hparams": dict(self._run_hparams), "losses": losses, "sizes": list(self._sizes)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self._run_hparams = dict(state.get("hparams", {}))
        self._losses = list(state.get("losses", torch.zeros(0)).unbind())
        self._sizes = [int(size) for size in state.get("sizes", [])]
