"""Tests of `kiln.callbacks.CSVLogger`: rows, header, options and exact resume."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import kiln
import kiln.checkpoint.run
from kiln.callbacks import CSVLogger
from kiln.callbacks.csv_logger import order_columns
from kiln.checkpoint import safe_load
from tests.callbacks.runs import fit, make_trainer

EPOCH_COLUMNS = ["epoch", "time", "lr", "loss", "accuracy", "val_loss", "val_accuracy"]


class SimulatedKillError(Exception):
    """Stands for the process being killed."""


class KillAt(kiln.Callback):
    """Raise at the end of epoch `epoch` (after the loggers before it wrote, before the save)."""

    def __init__(self, epoch: int | None = None, batch: int | None = None) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer: kiln.Trainer) -> None:
        state = trainer.state
        if self.batch is not None and (state.epoch + 1, state.batch_idx + 1) == (
            self.epoch,
            self.batch,
        ):
            raise SimulatedKillError

    def on_epoch_end(self, trainer: kiln.Trainer) -> None:
        if self.batch is None and trainer.state.epoch == self.epoch:
            raise SimulatedKillError


def kill_instead_of_saving(trainer: kiln.Trainer, directory: Path) -> Path:
    """Stands for `save_last` when the process is killed before the checkpoint is written."""
    raise SimulatedKillError


class LogExtraFrom(kiln.Callback):
    """Log a value `extra` from epoch `epoch` on, as a callback adding a metric late would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: kiln.Trainer) -> None:
        if trainer.state.epoch >= self.epoch:
            trainer.state.logs["extra"] = trainer.state.epoch * 10.0


def read_csv(path: Path, separator: str = ",") -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as file:
        rows = list(csv.reader(file, delimiter=separator))
    assert all(len(row) == len(rows[0]) for row in rows), "every row has every column"
    return rows[0], [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def test_one_row_per_epoch_with_the_header_of_poutyne(tmp_path):
    """Columns follow F6 (epoch, time, lr, loss, metrics, val_); values are exact."""
    history = fit(make_trainer([CSVLogger("log.csv")], tmp_path))
    text = (tmp_path / "log.csv").read_bytes()
    assert b"\r" not in text
    assert text.endswith(b"\n")
    header, rows = read_csv(tmp_path / "log.csv")
    assert header == EPOCH_COLUMNS
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    for name in EPOCH_COLUMNS:  # full precision: the text reads back as the logged float
        assert [float(row[name]) for row in rows] == [float(v) for v in history[name]]


def test_separator_and_a_path_relative_to_the_current_directory(tmp_path):
    """Without a trainer directory the file goes to the working directory."""
    logger = CSVLogger(Path("logs") / "run.tsv", separator="\t")
    fit(make_trainer([logger], None), epochs=2)
    assert logger.file == tmp_path / "logs" / "run.tsv"
    header, rows = read_csv(tmp_path / "logs" / "run.tsv", separator="\t")
    assert header == EPOCH_COLUMNS
    assert len(rows) == 2
    assert "," not in logger.file.read_text()


def test_an_absolute_path_is_used_as_it_is(tmp_path):
    target = tmp_path / "elsewhere" / "log.csv"
    fit(make_trainer([CSVLogger(target)], tmp_path / "run"), epochs=1)
    assert target.is_file()
    assert not (tmp_path / "run" / "log.csv").exists()


def test_append_continues_an_existing_file_without_a_new_header(tmp_path):
    fit(make_trainer([CSVLogger("log.csv")], tmp_path), epochs=2)
    fit(make_trainer([CSVLogger("log.csv", append=True)], tmp_path / "second"), epochs=1)
    fit(make_trainer([CSVLogger(tmp_path / "log.csv", append=True)], None), epochs=2)
    header, rows = read_csv(tmp_path / "log.csv")
    assert header == EPOCH_COLUMNS
    assert [row["epoch"] for row in rows] == ["1", "2", "1", "2"]


def test_without_append_a_new_run_starts_a_new_file(tmp_path):
    fit(make_trainer([CSVLogger("log.csv")], tmp_path), epochs=3)
    fit(make_trainer([CSVLogger("log.csv")], tmp_path / "other"), epochs=1)
    fit(make_trainer([CSVLogger(tmp_path / "log.csv")], None), epochs=1)
    assert [row["epoch"] for row in read_csv(tmp_path / "log.csv")[1]] == ["1"]


def test_a_second_fit_of_the_same_trainer_continues_the_file(tmp_path):
    trainer = make_trainer([CSVLogger("log.csv")], None)
    fit(trainer, epochs=2)
    fit(trainer, epochs=1)
    header, rows = read_csv(tmp_path / "log.csv")
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]


def test_batch_granularity_writes_a_row_per_batch_and_per_epoch(tmp_path):
    """36 samples in batches of 8: five batch rows (the last of 4 samples), then the epoch's."""
    history = fit(make_trainer([CSVLogger("log.csv", batch_granularity=True)], None))
    header, rows = read_csv(tmp_path / "log.csv")
    assert header == ["epoch", "batch", "size", *EPOCH_COLUMNS[1:]]
    assert len(rows) == 3 * (5 + 1)
    batch_rows = [row for row in rows if row["batch"]]
    epoch_rows = [row for row in rows if not row["batch"]]
    assert [row["batch"] for row in batch_rows[:5]] == ["1", "2", "3", "4", "5"]
    assert [row["size"] for row in batch_rows[:5]] == ["8", "8", "8", "8", "4"]
    assert [row["epoch"] for row in batch_rows] == [str(e) for e in (1, 2, 3) for _ in range(5)]
    assert all(row["val_loss"] == "" and float(row["time"]) >= 0 for row in batch_rows)
    assert [float(row["loss"]) for row in batch_rows] == pytest.approx(history.batch_losses)
    assert [row["epoch"] for row in epoch_rows] == ["1", "2", "3"]
    assert all(row["size"] == "" and row["val_loss"] for row in epoch_rows)
    assert rows[5] is epoch_rows[0]  # each epoch's row follows its batches


def test_a_column_that_appears_later_is_added_without_breaking_the_table(tmp_path):
    """The file is rewritten once with the new column; earlier rows are empty there."""
    fit(make_trainer([LogExtraFrom(2), CSVLogger("log.csv")], None))
    header, rows = read_csv(tmp_path / "log.csv")
    assert header == [
        "epoch",
        "time",
        "lr",
        "loss",
        "accuracy",
        "extra",
        "val_loss",
        "val_accuracy",
    ]
    assert [row["extra"] for row in rows] == ["", "20.0", "30.0"]
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]


def saved_state(directory: Path, trainer: kiln.Trainer, callback: kiln.Callback) -> dict:
    """The state `callback` saved in the run's checkpoint."""
    index = list(trainer.callbacks).index(callback)
    return safe_load(directory / "last.ckpt")["callbacks"][index]["state"]


def test_state_dict_holds_the_size_after_the_last_row(tmp_path):
    logger = CSVLogger("log.csv")
    trainer = make_trainer([logger], tmp_path)
    fit(trainer, epochs=2)
    state = logger.state_dict()
    assert state == {
        "size": (tmp_path / "log.csv").stat().st_size,
        "rows": 2,
        "columns": EPOCH_COLUMNS,
    }
    assert saved_state(tmp_path, trainer, logger) == state


def test_resume_cuts_the_row_written_after_the_checkpoint(tmp_path):
    """Killed after epoch 3's row was written but before its checkpoint: no duplicate row."""
    logger = CSVLogger("log.csv")
    trainer = make_trainer([logger, KillAt(epoch=3)], tmp_path)
    with pytest.raises(SimulatedKillError):
        fit(trainer, epochs=4)
    first_two = saved_state(tmp_path, trainer, logger)["size"]
    before = (tmp_path / "log.csv").read_bytes()
    assert [row["epoch"] for row in read_csv(tmp_path / "log.csv")[1]] == ["1", "2", "3"]

    history = fit(make_trainer([CSVLogger("log.csv"), KillAt()], tmp_path), epochs=4, resume=True)
    after = (tmp_path / "log.csv").read_bytes()
    assert after[:first_two] == before[:first_two]  # rows of saved epochs untouched
    header, rows = read_csv(tmp_path / "log.csv")
    assert header == EPOCH_COLUMNS
    assert [row["epoch"] for row in rows] == ["1", "2", "3", "4"]
    assert [float(row["loss"]) for row in rows] == history.loss


def test_resume_after_the_header_was_rewritten_past_the_checkpoint(tmp_path):
    """A column that first appeared in the lost epoch is taken out again, then re-added."""
    callbacks = [LogExtraFrom(3), CSVLogger("log.csv"), KillAt(epoch=3)]
    with pytest.raises(SimulatedKillError):
        fit(make_trainer(callbacks, tmp_path), epochs=4)
    assert "extra" in read_csv(tmp_path / "log.csv")[0]
    callbacks = [LogExtraFrom(3), CSVLogger("log.csv"), KillAt()]
    fit(make_trainer(callbacks, tmp_path), epochs=4, resume=True)
    header, rows = read_csv(tmp_path / "log.csv")
    assert header.count("extra") == 1
    assert [(row["epoch"], row["extra"]) for row in rows] == [
        ("1", ""),
        ("2", ""),
        ("3", "30.0"),
        ("4", "40.0"),
    ]


def test_resume_with_batch_rows_cuts_the_unfinished_epoch(tmp_path):
    """SimulatedKillError in the middle of epoch 3: its batch rows are cut, then written once."""
    callbacks = [CSVLogger("log.csv", batch_granularity=True), KillAt(epoch=3, batch=2)]
    with pytest.raises(SimulatedKillError):
        fit(make_trainer(callbacks, tmp_path), epochs=3)
    assert len(read_csv(tmp_path / "log.csv")[1]) == 2 * 6 + 2
    callbacks = [CSVLogger("log.csv", batch_granularity=True), KillAt()]
    fit(make_trainer(callbacks, tmp_path), epochs=3, resume=True)
    rows = read_csv(tmp_path / "log.csv")[1]
    assert len(rows) == 3 * 6
    keys = [(row["epoch"], row["batch"]) for row in rows]
    assert len(set(keys)) == len(keys)


def test_resume_when_the_file_was_deleted_warns_and_starts_a_new_table(tmp_path):
    fit(make_trainer([CSVLogger("log.csv")], tmp_path), epochs=2)
    (tmp_path / "log.csv").unlink()
    with pytest.warns(RuntimeWarning, match=r"written \d+ bytes to .*log.csv, but the file is"):
        fit(make_trainer([CSVLogger("log.csv")], tmp_path), epochs=3, resume=True)
    header, rows = read_csv(tmp_path / "log.csv")
    assert header == EPOCH_COLUMNS
    assert [row["epoch"] for row in rows] == ["3"]


@pytest.mark.parametrize("append", [False, True])
def test_a_kill_before_the_first_checkpoint_leaves_each_epoch_once(tmp_path, monkeypatch, append):
    """Killed after epoch 1's rows, before the first last.ckpt: the resumed run starts from
    scratch, and so do the logs in its directory (the user's and the directory's log.tsv)."""
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(kiln.checkpoint.run, "save_last", kill_instead_of_saving)
        with pytest.raises(SimulatedKillError):
            fit(make_trainer([CSVLogger("log.csv", append=append)], run), epochs=3)
    assert not (run / "last.ckpt").exists()
    assert [row["epoch"] for row in read_csv(run / "log.csv")[1]] == ["1"]
    assert [row["epoch"] for row in read_csv(run / "log.tsv", "\t")[1]] == ["1"]

    history = fit(make_trainer([CSVLogger("log.csv", append=append)], run), epochs=3, resume=True)
    for name, separator in (("log.csv", ","), ("log.tsv", "\t")):
        header, rows = read_csv(run / name, separator)
        assert header == EPOCH_COLUMNS, name
        assert [row["epoch"] for row in rows] == ["1", "2", "3"], name
        assert [float(row["loss"]) for row in rows] == history.loss, name


def test_a_log_outside_the_run_directory_keeps_what_it_holds(tmp_path):
    """append=True on a file of the user's, outside `dir`: a new run adds after its rows."""
    shared = tmp_path / "all_runs.csv"
    fit(make_trainer([CSVLogger(shared, append=True)], tmp_path / "a"), epochs=2)
    fit(make_trainer([CSVLogger(shared, append=True)], tmp_path / "b"), epochs=1)
    assert [row["epoch"] for row in read_csv(shared)[1]] == ["1", "2", "1"]


def test_order_columns_puts_known_columns_first_and_validation_last():
    names = ["loss", "val_loss", "score", "lr", "batch", "epoch", "val_score", "size", "time"]
    assert order_columns(names) == [
        *("epoch", "batch", "size", "time", "lr"),
        *("loss", "score", "val_loss", "val_score"),
    ]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"path": 3}, TypeError, "`path` must be a file name or path.*received int"),
        ({"path": ""}, ValueError, "`path` is empty"),
        ({"path": "a.csv", "separator": ";;"}, ValueError, "one character.*received ';;'"),
        ({"path": "a.csv", "separator": '"'}, ValueError, "other than a quote"),
        ({"path": "a.csv", "append": "yes"}, TypeError, "`append` must be True or False"),
        ({"path": "a.csv", "batch_granularity": 1}, TypeError, "`batch_granularity` must be"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(kwargs, error, message):
    with pytest.raises(error, match=message):
        CSVLogger(**kwargs)


def test_a_path_that_is_a_directory_is_refused_before_training(tmp_path):
    (tmp_path / "log.csv").mkdir()
    trainer = make_trainer([CSVLogger("log.csv")], None)
    with pytest.raises(
        ValueError, match="is a directory, but the log is a file. Pass the path of a file"
    ):
        fit(trainer, epochs=1)
    assert trainer.state.step == 0
