"""Tests of `kiln.callbacks.TextLog`: the console's lines in a file, resumed exactly."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

import kiln
import kiln.checkpoint.run
from kiln.callbacks import ProgressBar, TextLog
from tests.callbacks.runs import fit, make_trainer


class SimulatedKillError(Exception):
    """Stands for the process being killed."""


class KillAt(kiln.Callback):
    """Raise at the end of epoch `epoch`: after the log's line, before the checkpoint."""

    def __init__(self, epoch: int | None = None) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer: kiln.Trainer) -> None:
        if trainer.state.epoch == self.epoch:
            raise SimulatedKillError


class StopAt(kiln.Callback):
    """Stop the run after epoch `epoch`, as early stopping would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer: kiln.Trainer) -> None:
        if trainer.state.epoch == self.epoch:
            trainer.request_stop("the test had seen enough")


def test_the_file_says_what_the_console_said(tmp_path):
    """Summary lines and the stop line are the very lines the ProgressBar prints."""
    console = io.StringIO()
    callbacks = [ProgressBar(bar=False, file=console), TextLog("log.txt"), StopAt(2)]
    fit(make_trainer(callbacks, None), epochs=3)
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert lines == console.getvalue().splitlines()
    assert [line[:19] for line in lines[:2]] == ["Epoch 1/3  5 steps ", "Epoch 2/3  5 steps "]
    assert "val_accuracy: " in lines[0]
    assert lines[2] == "Stopped after epoch 2: the test had seen enough"


def test_seconds_on_the_line_are_the_logged_epoch_time(tmp_path):
    history = fit(make_trainer([TextLog("log.txt")], None), epochs=2)
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert [line.split("  ")[2] for line in lines] == [f"{t:.2f}s" for t in history.time]


def test_every_run_adds_its_lines_after_the_existing_ones(tmp_path):
    """Without a trainer directory the path is relative to the working directory."""
    (tmp_path / "log.txt").write_text("an older line\n")
    fit(make_trainer([TextLog("log.txt")], None), epochs=1)
    fit(make_trainer([TextLog(tmp_path / "log.txt")], None), epochs=2)
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert lines[0] == "an older line"
    assert [line[:9] for line in lines[1:]] == ["Epoch 1/1", "Epoch 1/2", "Epoch 2/2"]


def test_a_second_fit_counts_its_own_steps(tmp_path):
    log = TextLog("log.txt")
    trainer = make_trainer([log], None)
    fit(trainer, epochs=1)
    fit(trainer, epochs=1)
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert [line[:18] for line in lines] == ["Epoch 1/1  5 steps", "Epoch 2/2  5 steps"]
    assert log.file == tmp_path / "log.txt"


def test_resume_cuts_the_line_written_after_the_checkpoint(tmp_path):
    """Killed after epoch 3's line but before its checkpoint: each epoch appears once."""
    with pytest.raises(SimulatedKillError):
        fit(make_trainer([TextLog("log.txt"), KillAt(3)], tmp_path), epochs=4)
    before = (tmp_path / "log.txt").read_text().splitlines()
    assert len(before) == 3

    fit(make_trainer([TextLog("log.txt"), KillAt()], tmp_path), epochs=4, resume=True)
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert [line[:9] for line in lines] == [f"Epoch {e}/4" for e in (1, 2, 3, 4)]
    assert lines[:2] == before[:2]
    assert all(" 5 steps " in line for line in lines)  # the resumed epoch counts all its steps


def test_a_kill_before_the_first_checkpoint_leaves_each_epoch_once(tmp_path, monkeypatch):
    """Killed after epoch 1's line, before the first last.ckpt: the resumed run starts from
    scratch, and so does its log in the run directory."""

    def kill_instead_of_saving(trainer: kiln.Trainer, directory: Path) -> Path:
        raise SimulatedKillError

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(kiln.checkpoint.run, "save_last", kill_instead_of_saving)
        with pytest.raises(SimulatedKillError):
            fit(make_trainer([TextLog("log.txt")], run), epochs=3)
    assert not (run / "last.ckpt").exists()
    assert len((run / "log.txt").read_text().splitlines()) == 1

    fit(make_trainer([TextLog("log.txt")], run), epochs=3, resume=True)
    lines = (run / "log.txt").read_text().splitlines()
    assert [line[:9] for line in lines] == [f"Epoch {e}/3" for e in (1, 2, 3)]


def test_resuming_a_run_that_had_stopped_keeps_one_stop_line(tmp_path):
    fit(make_trainer([TextLog("log.txt"), StopAt(2)], tmp_path), epochs=4)
    first = (tmp_path / "log.txt").read_text()
    fit(make_trainer([TextLog("log.txt"), StopAt(2)], tmp_path), epochs=4, resume=True)
    assert (tmp_path / "log.txt").read_text() == first
    assert first.count("Stopped after epoch 2") == 1


def test_state_dict_holds_the_size_after_the_last_line(tmp_path):
    log = TextLog("log.txt")
    fit(make_trainer([log], None), epochs=2)
    assert log.state_dict() == {
        "size": (tmp_path / "log.txt").stat().st_size,
        "steps_before_epoch": 10,
    }


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        (None, TypeError, r"TextLog: `path` must be a file name or path.*received NoneType"),
        ("", ValueError, r"TextLog: `path` is empty"),
    ],
)
def test_bad_paths_are_refused_with_a_clear_message(path, error, message):
    with pytest.raises(error, match=message):
        TextLog(path)


def test_a_path_that_is_a_directory_is_refused_before_training(tmp_path):
    (tmp_path / "log.txt").mkdir()
    trainer = make_trainer([TextLog("log.txt")], None)
    with pytest.raises(
        ValueError, match=r"TextLog: .*log.txt is a directory, but the log is a file"
    ):
        fit(trainer, epochs=1)
    assert trainer.state.step == 0
