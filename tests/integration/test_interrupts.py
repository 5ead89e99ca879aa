"""SIGINT and SIGTERM end a run cleanly, and `resume=True` continues it bit for bit."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from torch import nn

import kiln
from kiln.testing import EventRecorder
from tests.helpers import without_plots


class SignalAt(kiln.Callback):
    """Sends the process a signal (twice with `twice`) at the end of the given step."""

    def __init__(self, step: int | None, number: int = signal.SIGINT, twice: bool = False) -> None:
        self.step, self.number, self.twice = step, number, twice

    def on_train_batch_end(self, trainer: kiln.Trainer) -> None:
        if trainer.state.step == self.step and trainer.state.interrupt is None:
            os.kill(os.getpid(), self.number)
            if self.twice:
                os.kill(os.getpid(), self.number)


def make_run(directory: Path, signal_at: int | None, **kwargs):
    kiln.seed_everything(0)
    X = torch.randn(60, 4)
    Y = (X.sum(1) > 0).long()
    recorder = EventRecorder()
    trainer = kiln.Trainer(
        nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2)),
        loss="cross_entropy",
        metrics=["accuracy"],
        callbacks=[kiln.callbacks.EarlyStopping(patience=20), SignalAt(signal_at, **kwargs)],
        dir=directory,
        device="cpu",
        progress=False,
    )
    # Without the plots at the end of fit, which take long.
    without_plots(trainer).callbacks = [*trainer.callbacks, recorder]
    data = kiln.Data((X, Y), batch_size=10, shuffle=True)
    return trainer, data, (X[:20], Y[:20]), recorder


def weights(trainer: kiln.Trainer) -> list[torch.Tensor]:
    return [p.detach() for p in trainer.model.parameters()]


def without_time(history: kiln.History) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "time"} for row in history.epochs]


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_then_resume_equals_the_uninterrupted_run(tmp_path, number):
    straight, data, val, _ = make_run(tmp_path / "straight", None)
    straight.fit(data, val=val, epochs=3)

    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    stopped, data, val, recorder = make_run(tmp_path / "run", 8, number=number)
    history = stopped.fit(data, val=val, epochs=3)
    name = signal.Signals(number).name
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == previous
    assert stopped.state.interrupt == name
    assert stopped.state.stop_reason == f"interrupted by {name}"
    assert stopped.state.step == 8
    # The unfinished epoch is closed (logged, counted) without validation; fit_end ran.
    assert len(history) == 2
    assert history.val_loss[1] is None
    assert recorder.events[-1][0] == "fit_end"
    saved = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    assert saved["position"]["batches"] == 2
    assert saved["state"]["stop_reason"] is None

    resumed, data, val, _ = make_run(tmp_path / "run", None)
    resumed.fit(data, val=val, epochs=3, resume=True)
    assert resumed.state.step == straight.state.step == 18
    assert without_time(resumed.history) == without_time(straight.history)
    assert resumed.history.batch_losses == straight.history.batch_losses
    for ours, theirs in zip(weights(resumed), weights(straight), strict=True):
        assert torch.equal(ours, theirs)


def test_second_sigint_aborts_at_once(tmp_path):
    trainer, data, val, recorder = make_run(tmp_path / "run", 3, twice=True)
    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt, match="SIGINT received again while stopping"):
        trainer.fit(data, val=val, epochs=3)
    assert signal.getsignal(signal.SIGINT) is previous
    names = [name for name, *_ in recorder.events]
    assert names[-2:] == ["exception", "fit_end"]


def test_signal_during_validation_finishes_the_epoch_and_saves_it(tmp_path):
    class SignalInValidation(kiln.Callback):
        def on_validation_batch_end(self, trainer: kiln.Trainer) -> None:
            if trainer.state.epoch == 1 and trainer.state.interrupt is None:
                os.kill(os.getpid(), signal.SIGTERM)

    trainer, data, val, _ = make_run(tmp_path / "run", None)
    trainer.callbacks = [*trainer.callbacks, SignalInValidation()]
    history = trainer.fit(data, val=val, epochs=3)
    assert len(history) == 1
    assert history.val_loss[0] is not None
    saved = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    assert saved["position"] is None
    assert saved["state"]["epoch"] == 1
    assert saved["state"]["stop_reason"] is None  # resumable


def test_signal_without_a_directory_still_stops_cleanly():
    kiln.seed_everything(0)
    trainer = kiln.Trainer(
        nn.Linear(4, 2),
        loss="cross_entropy",
        callbacks=[SignalAt(2)],
        device="cpu",
        progress=False,
    )
    X, Y = torch.randn(40, 4), torch.randint(0, 2, (40,))
    history = trainer.fit((X, Y), epochs=5, batch_size=10)
    assert trainer.state.step == 2
    assert len(history) == 1
    assert trainer.state.stop_reason == "interrupted by SIGINT"
