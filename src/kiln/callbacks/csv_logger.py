"""`CSVLogger`: one row per epoch (and, if asked, per batch) in a CSV file that resumes exactly.

What lives here: the logger, the order of its columns and the handling of columns that appear
late. What does not: the append-only file and its cut back on resume (`log_files.py`), and the
values themselves, which the trainer puts in `trainer.state.logs`.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from kiln.callbacks.base import Callback
from kiln.callbacks.log_files import AppendOnlyLog, check_path_argument
from kiln.options import check_flags

if TYPE_CHECKING:
    from pathlib import Path

    from kiln.trainer import Trainer

#: Columns that come first, in this order, whenever they are logged.
#: Compatibility: Poutyne's column order.
LEADING_COLUMNS = ("epoch", "batch", "size", "time", "lr")


def order_columns(names: Iterable[str]) -> list[str]:
    """Order column names: `epoch, batch, size, time, lr`, then training values, then `val_` ones.

    Training and validation values keep the order in which they were first logged.

    Example:
        >>> order_columns(["epoch", "loss", "accuracy", "lr", "val_loss", "val_accuracy", "time"])
        ['epoch', 'time', 'lr', 'loss', 'accuracy', 'val_loss', 'val_accuracy']
    """
    unique = list(dict.fromkeys(names))
    leading = [name for name in LEADING_COLUMNS if name in unique]
    rest = [name for name in unique if name not in LEADING_COLUMNS]
    validation = [name for name in rest if name.startswith("val_")]
    return leading + [name for name in rest if name not in validation] + validation


class CSVLogger(Callback):
    r"""Write every epoch's logged values as one row of a CSV file.

    The header comes from the first row: `epoch, time, lr, loss`, the metrics, then the `val_`
    values. A row that lacks a column leaves it empty. When a row brings a column the header
    does not have yet (a value logged from some epoch on), the file is rewritten once, atomically,
    with the new column in its place and earlier rows empty there: the file always parses as one
    table, and no value is dropped.

    Each row is flushed when written, so a crash loses nothing already logged. Lines end with
    `\n` (readers of CSV, pandas and spreadsheets included, accept it, and it keeps byte counts
    the same on every system) rather than the `\r\n` of Python's CSV default.

    With `trainer.dir` set, the logger resumes exactly with the run: its state in the checkpoint
    holds the file's size after the last row it wrote, and `fit(..., resume=True)` first cuts
    off the rows of an epoch that ran after that checkpoint, so no epoch appears twice. A run
    killed before its first checkpoint starts again from scratch, and so does a file inside
    `trainer.dir`, even with `append`. A later `fit` call of the same trainer continues the file
    as the epoch numbers continue.

    Args:
        path: The file; a relative path is relative to `trainer.dir` when the trainer has one,
            else to the current directory.
        separator: The one character between values, such as `","` or `"\t"`.
        append: Keep the rows an existing file holds and add after them, without a new header
            (its header is read and extended if needed); `False` starts a new file. A file
            inside `trainer.dir` belongs to the run there: a run that starts from scratch
            starts it anew (see `kiln.callbacks.log_files.AppendOnlyLog.starts_anew`).
        batch_granularity: Also write one row per training batch, with the columns `epoch,
            batch, size, time, lr, loss` (`batch` counts from 1 within the epoch, `time` is the
            batch's seconds, data loading included). Epoch rows leave `batch` and `size` empty.

    Example:
        >>> import tempfile, torch, kiln
        >>> folder = tempfile.TemporaryDirectory()
        >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu",
        ...                        callbacks=[kiln.callbacks.CSVLogger("epochs.csv")],
        ...                        progress=False, dir=folder.name)
        >>> _ = trainer.fit((torch.randn(8, 2), torch.randn(8, 1)), val=0.25, epochs=2)
        >>> lines = (trainer.dir / "epochs.csv").read_text().splitlines()
        >>> lines[0].split(","), len(lines)
        (['epoch', 'time', 'lr', 'loss', 'val_loss'], 3)
        >>> folder.cleanup()
    """

    #: Under torchrun, runs on rank 0 only: it only writes a file.
    main_process_only = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        separator: str = ",",
        append: bool = False,
        batch_granularity: bool = False,
    ) -> None:
        self.path = check_path_argument("CSVLogger", path)
        if not isinstance(separator, str) or len(separator) != 1 or separator in '"\r\n':
            raise ValueError(
                "CSVLogger: `separator` must be one character other than a quote or a line "
                f'break, such as "," or "\\t"; received {separator!r}.'
            )
        check_flags("CSVLogger", append=append, batch_granularity=batch_granularity)
        self.separator = separator
        self.append = append
        self.batch_granularity = batch_granularity
        #: The header of the file, and how many rows follow it (saved with the run).
        self.columns: list[str] = []
        self.rows = 0
        self._log = AppendOnlyLog("CSVLogger", self.path)
        self._batch_clock = 0.0

    @property
    def file(self) -> Path:
        """The file written, once `fit` has placed it (see `path`)."""
        return self._log.path

    def on_fit_start(self, trainer: Trainer) -> None:
        """Open the file: continue the run's rows, append to it, or start it afresh."""
        log = self._log
        log.locate(trainer)
        if log.continues_run(trainer):
            if self.columns and log.has_content() and self._read_header() != self.columns:
                # A column appeared after the checkpoint and the file was rewritten with it.
                self._rewrite(self.columns, self._read_records()[: self.rows])
            else:
                log.open(end=log.size)
            if log.size == 0:  # the file was lost (a warning said so): start with a header
                self.columns, self.rows = [], 0
        elif self.append and log.has_content() and not log.starts_anew(trainer):
            self.columns = self._read_header()
            self.rows = len(self._read_records())
            log.open(keep=True)
        else:  # a new file, or the run of the trainer's `dir` starting from scratch
            self.columns, self.rows = [], 0
            log.open(keep=self.append and not log.starts_anew(trainer))

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        """Start the clock of the epoch's first batch."""
        self._batch_clock = time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer) -> None:
        """With `batch_granularity`, write the batch's row."""
        if not self.batch_granularity:
            return
        state, optimizer = trainer.state, trainer.optimizer
        output = state.output
        now = time.perf_counter()
        seconds, self._batch_clock = now - self._batch_clock, now
        # Reading the loss from the device waits for the batch's computation to finish: a cost
        # per batch that is acceptable only because the user asked for one row per batch.
        loss = None if output is None or output.loss is None else float(output.loss.detach())
        row = {
            "epoch": state.epoch + 1,  # the epoch in progress, numbered as it will be logged
            "batch": state.batch_idx + 1,
            "size": None if output is None else output.size,
            "time": seconds,
            "lr": None if optimizer is None else float(optimizer.param_groups[0]["lr"]),
            "loss": loss,
        }
        self._write_row(row, sync=False)

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Write the epoch's row; with a checkpoint to follow, force it to the disk first."""
        self._write_row(trainer.state.logs, sync=trainer.dir is not None)

    def on_fit_end(self, trainer: Trainer) -> None:
        """Close the file."""
        self._log.close()

    def state_dict(self) -> dict[str, Any]:
        """Return the file's size in bytes after the last row, the row count and the header."""
        return {"size": self._log.size, "rows": self.rows, "columns": list(self.columns)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; the next resumed `fit` cuts the file there."""
        size = state.get("size")
        self._log.size = None if size is None else int(size)
        self.rows = int(state.get("rows", 0))
        self.columns = [str(name) for name in state.get("columns", [])]

    def _write_row(self, values: Mapping[str, Any], sync: bool) -> None:
        new = [name for name in values if name not in self.columns]
        if new:
            columns = order_columns([*self.columns, *new])
            if self._log.size:
                self._rewrite(columns, self._read_records())
            else:
                self._log.write(self._format([columns]), sync=False)
                self.columns = columns
        self._log.write(self._format([[values.get(name) for name in self.columns]]), sync=sync)
        self.rows += 1

    def _rewrite(self, columns: list[str], records: list[dict[str, str]]) -> None:
        """Replace the file by `records` under the header `columns`, atomically."""
        table: list[list[Any]] = [
            columns,
            *([record.get(n) for n in columns] for record in records),
        ]
        self._log.replace(self._format(table))
        self.columns, self.rows = columns, len(records)

    def _format(self, rows: Iterable[Iterable[Any]]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=self.separator, lineterminator="\n").writerows(rows)
        return buffer.getvalue()

    def _read_header(self) -> list[str]:
        with open(self._log.path, newline="", encoding="utf-8") as file:
            return next(csv.reader(file, delimiter=self.separator), [])

    def _read_records(self) -> list[dict[str, str]]:
        """Return the file's rows as `{column: text}` (the text of each value, unchanged)."""
        with open(self._log.path, newline="", encoding="utf-8") as file:
            rows = list(csv.reader(file, delimiter=self.separator))
        header = rows[0] if rows else []
        return [dict(zip(header, row, strict=False)) for row in rows[1:]]  # short rows: empty
