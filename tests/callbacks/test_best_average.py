"""Tests of `BestAverage`: the keep and choose rules, a whole run, stops, errors and resume."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import kiln
from kiln.callbacks.best_average import BestAverage, close_to_best, keep_slot
from kiln.checkpoint.weights import load_weights


def test_keep_slot_fills_then_replaces_the_worst():
    """Append while not full; then replace the worst only when strictly better."""
    assert keep_slot([], 3.0, n=2, mode="min") == 0
    assert keep_slot([3.0], 9.0, n=2, mode="min") == 1
    assert keep_slot([3.0, 9.0, 1.0], 2.0, n=3, mode="min") == 1
    assert keep_slot([3.0, 9.0, 1.0], 9.0, n=3, mode="min") is None
    assert keep_slot([2.0, 2.0], 1.0, n=2, mode="min") == 1  # the latest of equal worst
    assert keep_slot([0.5, 0.9], 0.7, n=2, mode="max") == 0
    assert keep_slot([0.5, 0.9], 0.4, n=2, mode="max") is None
    assert keep_slot([], math.nan, n=2, mode="min") is None


def test_close_to_best_is_pytorch_trainers_ten_percent_rule():
    """For losses: value / best < 1.1 is kept, >= 1.1 dropped; max and zero handled."""
    assert close_to_best([2.0, 2.19, 2.2, 2.21], within=0.1, mode="min") == [0, 1]
    assert close_to_best([0.99, 1.09, 1.0], within=0.1, mode="min") == [0, 2]
    assert close_to_best([0.5, 0.9, 0.82, 0.8], within=0.1, mode="max") == [1, 2]
    assert close_to_best([-1.0, -0.95, -0.8], within=0.1, mode="min") == [0, 1]
    assert close_to_best([0.0, 0.0, 1e-9], within=0.1, mode="min") == [0, 1]
    assert close_to_best([3.0, 3.0], within=0.0, mode="min") == [0, 1]


class FakeLoss(kiln.Callback):
    """Replace val_loss with given values, and record the parameters of every epoch."""

    def __init__(self, values: list[float]) -> None:
        self.values, self.params = values, []

    def on_validation_end(self, trainer: kiln.Trainer) -> None:
        trainer.state.logs["val_loss"] = self.values[trainer.state.epoch - 1]

    def on_epoch_end(self, trainer: kiln.Trainer) -> None:
        self.params.append([p.detach().clone() for p in trainer.model.parameters()])


def _fit(callbacks: list, epochs: int, directory=None) -> kiln.Trainer:
    kiln.seed_everything(0)
    X = torch.randn(32, 3)
    Y = X.sum(1, keepdim=True)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    trainer = kiln.Trainer(
        net, loss="mse", optimizer="sgd", callbacks=callbacks, device="cpu", progress=False,
        dir=directory,
    )  # fmt: skip
    trainer.fit(kiln.Data((X, Y), batch_size=8, shuffle=True), val=(X, Y), epochs=epochs)
    return trainer


def test_whole_run_averages_the_best_within_ten_percent(tmp_path):
    """n=3 keeps epochs 2, 4, 6; 1.09 / 0.99 >= 1.1 drops epoch 4; 2 and 6 are averaged."""
    fake = FakeLoss([5.0, 1.0, 3.0, 1.09, 1.2, 0.99])
    best = BestAverage(n=3, name="digits")
    trainer = _fit([fake, best], epochs=6, directory=tmp_path)
    assert sorted(best.snapshots) == [(2, 1.0), (4, 1.09), (6, 0.99)]
    assert best.averaged_epochs == [2, 6]
    expected = [(a + b) / 2 for a, b in zip(fake.params[1], fake.params[5], strict=True)]
    for parameter, mean in zip(trainer.model.parameters(), expected, strict=True):
        torch.testing.assert_close(parameter.detach(), mean)
    # Buffers are the model's own (last epoch), as PytorchTrainer averages parameters only.
    assert best.saved_path == tmp_path / "digits_avg.pt"
    saved = load_weights(tmp_path / "digits_avg.pt")
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(saved[key], value)
    best.restore_best(trainer)  # the un-averaged best: epoch 6
    for parameter, own in zip(trainer.model.parameters(), fake.params[5], strict=True):
        assert torch.equal(parameter, own)


def test_a_stop_request_still_averages_and_an_error_does_not():
    """Early stopping ends normally (averaged); an exception leaves the model alone."""

    class StopAt(kiln.Callback):
        def __init__(self, epoch: int, error: bool = False) -> None:
            self.epoch, self.error = epoch, error

        def on_epoch_end(self, trainer: kiln.Trainer) -> None:
            if trainer.state.epoch == self.epoch:
                if self.error:
                    raise RuntimeError("boom")
                trainer.request_stop("enough")

    fake = FakeLoss([1.0, 1.05, 1.02, 9.0])
    best = BestAverage(n=3)
    _fit([fake, best, StopAt(3)], epochs=4)
    assert best.averaged_epochs == [1, 2, 3]
    assert best.saved_path is None  # no name, no file

    fake, best = FakeLoss([1.0, 1.05, 1.02, 9.0]), BestAverage(n=3)
    with pytest.raises(RuntimeError, match="boom"):
        _fit([fake, best, StopAt(3, error=True)], epochs=4)
    assert best.averaged_epochs == []


def test_one_snapshot_is_not_averaged():
    """n=1 (or one epoch) leaves the last weights in the model, as PytorchTrainer."""
    fake, best = FakeLoss([2.0, 1.0, 3.0]), BestAverage(n=1)
    trainer = _fit([fake, best], epochs=3)
    assert best.snapshots == [(2, 1.0)]
    assert best.averaged_epochs == []
    for parameter, last in zip(trainer.model.parameters(), fake.params[2], strict=True):
        assert torch.equal(parameter, last)


def test_resume_keeps_the_snapshots_bitwise(tmp_path):
    """3 epochs, resume to 6 == 6 straight: the same snapshots and the same average."""
    values = [5.0, 1.0, 3.0, 1.09, 1.2, 0.99]
    straight = _fit([FakeLoss(values), BestAverage(n=3)], 6, tmp_path / "straight")
    _fit([FakeLoss(values), BestAverage(n=3)], 3, tmp_path / "resumed")
    kiln.seed_everything(0)
    X = torch.randn(32, 3)
    Y = X.sum(1, keepdim=True)
    best = BestAverage(n=3)
    trainer = kiln.Trainer(
        nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)), loss="mse",
        optimizer="sgd", callbacks=[FakeLoss(values), best], device="cpu", progress=False,
        dir=tmp_path / "resumed",
    )  # fmt: skip
    trainer.fit(kiln.Data((X, Y), batch_size=8, shuffle=True), val=(X, Y), epochs=6, resume=True)
    assert trainer.state.resumed
    assert best.snapshots == straight.callbacks.callbacks[1].snapshots
    assert best.averaged_epochs == [2, 6]
    for ours, theirs in zip(trainer.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_unknown_monitor_lists_the_logged_values():
    """A monitored name that is not logged gets a ValueError listing what is."""
    best = BestAverage(monitor="val_score", mode="max")
    trainer = SimpleNamespace(state=SimpleNamespace(logs={"loss": 1.0, "val_loss": 2.0}))
    with pytest.raises(ValueError, match=r"monitor='val_score'.*Logged values: loss, val_loss\."):
        best.on_epoch_end(trainer)  # type: ignore[arg-type]
    trainer.state.logs = {"loss": 1.0}  # an epoch without validation is skipped
    best.on_epoch_end(trainer)  # type: ignore[arg-type]
    assert best.snapshots == []


def test_unknown_monitor_is_refused_before_training():
    """The trainer's first-step check catches it before any optimizer step."""
    with pytest.raises(ValueError, match=r"BestAverage\(monitor='val_accuracy'\) names a value"):
        _fit([BestAverage(monitor="val_accuracy")], epochs=1)


def test_bad_arguments():
    """Bad n, within, name and mode are refused with what was received."""
    for n in (0, 2.0, True):
        with pytest.raises(ValueError, match=rf"`n` must be a positive integer; received {n!r}"):
            BestAverage(n=n)  # type: ignore[arg-type]
    for within in (-0.1, float("nan"), "10%"):
        with pytest.raises(ValueError, match=rf"`within` must be .*received {within!r}"):
            BestAverage(within=within)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`name` must be a non-empty file stem .*received ''"):
        BestAverage(name="")
    with pytest.raises(ValueError, match=r"BestAverage: `mode` must be 'auto', 'min' or 'max'"):
        BestAverage(mode="lowest")
    with pytest.raises(ValueError, match=r"BestAverage has no snapshot yet"):
        BestAverage().restore_best(nn.Linear(2, 1))
    with pytest.raises(TypeError, match=r"restore_best needs a kiln\.Trainer or a torch\.nn"):
        BestAverage().restore_best("net")  # type: ignore[arg-type]
