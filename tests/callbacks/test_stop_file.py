"""Tests of `kiln.callbacks.stop_file.StopFile`: ending a run on demand with a file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import kiln
from kiln.callbacks.dispatch import CallbackList
from kiln.callbacks.stop_file import StopFile
from kiln.events import BATCH_EVENTS


class TouchDuring(kiln.Callback):
    """Creates `file` while epoch `epoch` (1-based) trains, as a user's `touch` would."""

    def __init__(self, file: str | Path, epoch: int) -> None:
        self.file, self.epoch = Path(file), epoch

    def on_train_epoch_start(self, trainer: kiln.Trainer) -> None:
        if trainer.state.epoch + 1 == self.epoch:
            self.file.write_text("")


def make_trainer(callbacks: list, **kwargs) -> tuple[kiln.Trainer, kiln.Data]:
    kiln.seed_everything(0)
    X, Y = torch.randn(16, 2), torch.randn(16, 1)
    trainer = kiln.Trainer(
        nn.Linear(2, 1), loss="mse", callbacks=callbacks, device="cpu", progress=False, **kwargs
    )
    return trainer, kiln.Data((X, Y), batch_size=8)


def test_stop_file_ends_the_run_after_the_current_epoch(tmp_path, monkeypatch):
    """stop_{name} appearing in epoch 2 in the working directory: 2 epochs, file deleted."""
    monkeypatch.chdir(tmp_path)
    stop = StopFile("digits")
    trainer, data = make_trainer([TouchDuring("stop_digits", 2), stop])
    history = trainer.fit(data, val=data, epochs=5)
    assert len(history) == 2
    assert "val_loss" in history.epochs[-1]  # the epoch was validated and logged
    assert not (tmp_path / "stop_digits").exists()
    assert stop.file == tmp_path / "stop_digits"
    assert (
        trainer.state.stop_reason == f"on demand (found the stop file {tmp_path / 'stop_digits'})"
    )


def test_stop_file_never_looks_per_batch():
    """Only epoch events are used, so batches cost nothing more."""
    callbacks = CallbackList([StopFile()])
    assert not any(callbacks.uses(event) for event in BATCH_EVENTS)


def test_no_stop_file_trains_every_epoch(tmp_path, monkeypatch):
    """Without the file, nothing changes."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stop_other").write_text("")  # another run's file is not ours
    trainer, data = make_trainer([StopFile("mine")])
    assert len(trainer.fit(data, epochs=3)) == 3
    assert trainer.state.stop_reason is None
    assert (tmp_path / "stop_other").exists()


def test_stop_file_named_after_the_experiment_directory_and_resume_stays_ended(
    tmp_path, monkeypatch
):
    """No name: stop_{dir name}; the stopped run is saved, and resuming it trains no further."""
    monkeypatch.chdir(tmp_path)
    trainer, data = make_trainer([TouchDuring("stop_exp", 3), StopFile()], dir=tmp_path / "exp")
    trainer.fit(data, val=data, epochs=6, resume=True)
    assert trainer.state.epoch == 3
    again, data = make_trainer([TouchDuring("stop_exp", 99), StopFile()], dir=tmp_path / "exp")
    history = again.fit(data, val=data, epochs=6, resume=True)
    assert again.state.resumed
    assert len(history) == 3
    assert "stop_exp" in (again.state.stop_reason or "")
    for ours, theirs in zip(again.model.parameters(), trainer.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_stop_file_at_a_given_path_or_plain_stop(tmp_path, monkeypatch):
    """path= watches that file; with no name, path or dir the file is ./stop."""
    elsewhere = tmp_path / "flags" / "halt"
    elsewhere.parent.mkdir()
    trainer, data = make_trainer([TouchDuring(elsewhere, 1), StopFile(path=elsewhere)])
    assert len(trainer.fit(data, epochs=4)) == 1
    assert not elsewhere.exists()

    monkeypatch.chdir(tmp_path)
    trainer, data = make_trainer([TouchDuring("stop", 2), StopFile()])
    assert len(trainer.fit(data, epochs=4)) == 2


def test_stop_file_that_cannot_be_deleted_still_stops(tmp_path, monkeypatch):
    """A file that cannot be removed is reported, and the run stops all the same."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stop_run").write_text("")

    def refuse(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "unlink", refuse)
    trainer, data = make_trainer([StopFile("run")])
    with pytest.warns(
        RuntimeWarning,
        match=r"StopFile: .*stop file .*stop_run could not be deleted \(Permission denied\)\. "
        r"Delete it, or the next run watching it stops after its first epoch",
    ):
        assert len(trainer.fit(data, epochs=3)) == 1
    assert trainer.state.stop_reason == f"on demand (found the stop file {tmp_path / 'stop_run'})"


class SimulatedKillError(Exception):
    """Stands for the process being killed after the stop file was found."""


class KillAfterStop(kiln.Callback):
    """Put after `StopFile`: a kill once the stop is requested, before `last.ckpt` records it."""

    def __init__(self, active: bool) -> None:
        self.active = active

    def on_epoch_end(self, trainer: kiln.Trainer) -> None:
        if self.active and trainer.state.should_stop:
            raise SimulatedKillError


def test_a_kill_right_after_the_stop_file_fired_keeps_the_stop(tmp_path, monkeypatch):
    """Killed before the checkpoint records the stop: the file is still there, and the resumed
    run stops after the same epoch; then the file goes."""
    monkeypatch.chdir(tmp_path)
    stop = tmp_path / "stop_exp"
    callbacks = [TouchDuring(stop, 2), StopFile(), KillAfterStop(active=True)]
    trainer, data = make_trainer(callbacks, dir=tmp_path / "exp")
    with pytest.raises(SimulatedKillError):
        trainer.fit(data, epochs=6, resume=True)
    assert stop.exists()

    callbacks = [TouchDuring(stop, 99), StopFile(), KillAfterStop(active=False)]
    again, data = make_trainer(callbacks, dir=tmp_path / "exp")
    history = again.fit(data, epochs=6, resume=True)
    assert again.state.resumed
    assert len(history) == 2  # the stop survived: it fired again after epoch 2
    assert again.state.stop_reason == f"on demand (found the stop file {stop})"
    assert not stop.exists()


def test_a_kill_after_the_stop_was_saved_ends_the_run_and_removes_the_file(tmp_path, monkeypatch):
    """Killed after the checkpoint records the stop, before the file is deleted: the resumed
    run is ended, and deletes the file so that the next run is not stopped."""
    monkeypatch.chdir(tmp_path)
    stop = tmp_path / "stop_exp"
    with monkeypatch.context() as patch:  # the process dies before StopFile's end of `fit`
        patch.setattr(StopFile, "on_fit_end", lambda self, trainer: None)
        trainer, data = make_trainer([TouchDuring(stop, 2), StopFile()], dir=tmp_path / "exp")
        trainer.fit(data, epochs=6, resume=True)
    assert stop.exists()

    again, data = make_trainer([TouchDuring(stop, 99), StopFile()], dir=tmp_path / "exp")
    history = again.fit(data, epochs=6, resume=True)
    assert again.state.resumed
    assert len(history) == 2
    assert not stop.exists()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "a", "path": "b"}, ValueError, r"takes `name` or `path`, not both; received "),
        ({"name": 3}, TypeError, r"`name` must be a str; received int"),
        ({"name": ""}, ValueError, r"`name` must be a non-empty name .*received ''"),
        ({"name": "runs/a"}, ValueError, r"without '/' .* received 'runs/a'\. .* pass `path=`"),
        ({"path": 3}, TypeError, r"`path` must be a str or a path; received int"),
    ],
)
def test_stop_file_rejects_bad_arguments(kwargs, error, match):
    """Bad arguments raise at construction."""
    with pytest.raises(error, match=match):
        StopFile(**kwargs)
