"""Tests of `kiln.callbacks.EarlyStopping`."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

import kiln
from kiln.callbacks import EarlyStopping
from tests.callbacks.runs import Interrupt


class ScriptedValues(kiln.Callback):
    """Writes a scripted value into each epoch's logs, as a validation metric would."""

    def __init__(self, name: str, values: list[float]) -> None:
        self.name, self.values = name, values

    def on_validation_end(self, trainer: kiln.Trainer) -> None:
        trainer.state.logs[self.name] = self.values[trainer.state.epoch - 1]


def run(stopper: EarlyStopping, values: list[float], name: str = "val_loss") -> kiln.Trainer:
    X, Y = torch.randn(8, 2), torch.randn(8, 1)
    trainer = kiln.Trainer(
        nn.Linear(2, 1),
        loss="mse",
        callbacks=[ScriptedValues(name, values), stopper],
        device="cpu",
        progress=False,
    )
    trainer.fit((X, Y), val=(X, Y), epochs=len(values))
    return trainer


@pytest.mark.parametrize(
    ("monitor", "mode"),
    [
        ("val_loss", "min"),
        ("val_accuracy", "max"),
        ("val_acc", "max"),
        ("mae", "min"),
        ("val_score", "max"),
        ("top5", "max"),
    ],
)
def test_early_stopping_mode_auto_reads_the_name(monitor: str, mode: str):
    """mode='auto' minimizes losses and errors, maximizes accuracies and scores."""
    assert EarlyStopping(monitor).mode == mode


def test_early_stopping_waits_patience_epochs_without_improvement():
    """With patience=2 and no progress after epoch 1, training stops after epoch 3."""
    trainer = run(EarlyStopping(patience=2), [1.0, 1.0, 1.0, 1.0, 1.0])
    assert trainer.state.epoch == 3
    assert "val_loss did not improve for 2 epochs" in (trainer.state.stop_reason or "")


def test_early_stopping_improvement_resets_the_counter():
    """Each strict improvement resets the wait; min_delta sets how much counts."""
    stopper = EarlyStopping(patience=3, min_delta=0.05)
    trainer = run(stopper, [1.0, 0.9, 0.88, 0.87, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert (stopper.best, stopper.best_epoch) == (0.5, 5)
    assert stopper.best_logs["val_loss"] == 0.5
    assert trainer.state.epoch == 8
    assert (
        "did not improve by more than 0.05 for 3 epochs "
        "(last counted improvement val_loss: 0.5000 at epoch 5)"
    ) in (trainer.state.stop_reason or "")


def test_with_a_threshold_the_stop_names_the_reference_not_the_best():
    """A smaller gain does not count: the message must not call the reference the best."""
    stopper = EarlyStopping(patience=2, min_delta=0.05)
    trainer = run(stopper, [1.0, 0.99, 0.98, 0.97])
    assert trainer.state.epoch == 3
    assert trainer.state.stop_reason == (
        "early stopping: val_loss did not improve by more than 0.05 for 2 epochs "
        "(last counted improvement val_loss: 1.0000 at epoch 1)"
    )


def test_early_stopping_restore_best_loads_the_best_weights():
    """restore_best puts back the weights of the best epoch at the end of fit."""
    snapshots: list[torch.Tensor] = []

    class Snapshot(kiln.Callback):
        def on_epoch_end(self, trainer: kiln.Trainer) -> None:
            snapshots.append(trainer.model.weight.detach().clone())

    X, Y = torch.randn(8, 2), torch.randn(8, 1)
    trainer = kiln.Trainer(
        nn.Linear(2, 1),
        loss="mse",
        optimizer="sgd",
        lr=0.1,
        callbacks=[
            ScriptedValues("val_loss", [3.0, 1.0, 2.0, 2.5, 2.6]),
            EarlyStopping(patience=3, restore_best=True),
            Snapshot(),
        ],
        device="cpu",
        progress=False,
    )
    trainer.fit((X, Y), val=(X, Y), epochs=5)
    assert trainer.state.epoch == 5
    assert torch.equal(trainer.model.weight, snapshots[1])


def test_early_stopping_state_dict_round_trips():
    """The counters and best value survive state_dict/load_state_dict."""
    stopper = EarlyStopping(patience=4)
    run(stopper, [1.0, 0.5, 0.7])
    restored = EarlyStopping(patience=4)
    restored.load_state_dict(stopper.state_dict())
    assert (restored.best, restored.best_epoch, restored.wait) == (0.5, 2, 1)


def test_early_stopping_monitor_missing_from_a_validated_epoch_raises():
    """A monitored value absent from an epoch's logs raises, listing the logged values."""
    stopper = EarlyStopping("val_special", mode="max")
    X, Y = torch.randn(8, 2), torch.randn(8, 1)

    class Stepper(nn.Linear):
        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self(x), y)

        def validation_step(self, batch, batch_idx):
            return {"loss": torch.tensor(1.0)}

    trainer = kiln.Trainer(Stepper(2, 1), callbacks=[stopper], device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"val_special.*Logged values: .*val_loss"):
        trainer.fit((X, Y), val=(X, Y), epochs=2)


# --------------------------------------------------------------------------------------------
# Relative threshold, fractional patience, PytorchTrainer's countdown, non-finite values


def test_early_stopping_relative_threshold_needs_half_a_percent():
    """min_rel_delta=0.005: progress iff value < 0.995 * best (strictly), as PytorchTrainer."""
    stopper = EarlyStopping(patience=3, min_rel_delta=0.005)
    trainer = run(stopper, [1.0, 0.996, 0.995, 0.99, 0.986, 0.9851, 0.99, 0.5])
    assert (stopper.best, stopper.best_epoch) == (0.99, 4)
    assert trainer.state.epoch == 7
    assert "did not improve by more than 0.5% for 3 epochs" in (trainer.state.stop_reason or "")


def test_early_stopping_relative_threshold_for_max_and_negative_values():
    """The margin is a fraction of the best's magnitude, in the direction of progress."""
    higher = EarlyStopping("val_loss", mode="max", patience=5, min_rel_delta=0.005)
    run(higher, [0.5, 0.502, 0.503, 0.5026])
    assert (higher.best, higher.best_epoch) == (0.503, 3)
    lower = EarlyStopping(patience=5, min_rel_delta=0.005)
    run(lower, [-10.0, -10.04, -10.06, -9.0])
    assert (lower.best, lower.best_epoch) == (-10.06, 3)


def test_early_stopping_absolute_and_relative_margins_add_up():
    """min_delta and min_rel_delta together: both margins must be passed."""
    stopper = EarlyStopping(patience=1, min_delta=0.1, min_rel_delta=0.1)
    trainer = run(stopper, [1.0, 0.85, 0.79, 0.7])
    assert (stopper.best, stopper.best_epoch) == (1.0, 1)
    assert trainer.state.epoch == 2
    assert "by more than 0.1 + 10%" in (trainer.state.stop_reason or "")


@pytest.mark.parametrize(
    ("patience", "countdown", "stop_epoch"),
    [
        (2, False, 3),  # Keras: the 2nd epoch without improvement
        (0.2, False, 3),  # 0.2 * 10 epochs = 2, counted as Keras
        (0.2, True, 5),  # PytorchTrainer's code: counter > 2, tested before counting
        (0.15, True, 4),  # PytorchTrainer's README: 15% of the epochs
        (0.15, False, 3),  # 1.5 epochs, counted as Keras: the 2nd epoch without
        (2, True, 5),
    ],
)
def test_early_stopping_fractional_patience_and_countdown(patience, countdown, stop_epoch):
    """A float patience is a fraction of the run's epochs; countdown counts as PytorchTrainer."""
    stopper = EarlyStopping(patience=patience, countdown=countdown)
    trainer = run(stopper, [1.0] * 10)
    assert stopper.patience_epochs == pytest.approx(patience * 10 if patience < 1 else patience)
    assert trainer.state.epoch == stop_epoch
    assert f"for {stop_epoch - 1} epochs (best val_loss: 1.0000 at epoch 1)" in (
        trainer.state.stop_reason or ""
    )


def test_early_stopping_remaining_counts_down_as_pytorch_trainer_prints():
    """P5's run: 'Got improvement', '2 epochs till early stop', 'Restarted', '0 epochs ...'."""
    remaining: list[int | None] = []
    stopper = EarlyStopping(patience=0.2, min_rel_delta=0.005, countdown=True)

    class Record(kiln.Callback):
        def on_epoch_end(self, trainer: kiln.Trainer) -> None:
            remaining.append(stopper.remaining)

    X, Y = torch.randn(8, 2), torch.randn(8, 1)
    trainer = kiln.Trainer(
        nn.Linear(2, 1),
        loss="mse",
        callbacks=[ScriptedValues("val_loss", [1.0] * 10), stopper, Record()],
        device="cpu",
        progress=False,
    )
    assert stopper.remaining is None  # 0.2 of an epoch count not known yet
    trainer.fit((X, Y), val=(X, Y), epochs=10)
    assert remaining == [3, 2, 1, 0, 0]
    assert trainer.state.epoch == 5
    assert EarlyStopping(patience=3).remaining == 2  # Keras: 2 more, the 3rd stops


def test_early_stopping_fraction_follows_the_epochs_of_each_fit():
    """The window is resolved from state.max_epochs when each fit starts."""
    stopper = EarlyStopping(patience=0.5)
    run(stopper, [1.0, 0.5, 0.4, 0.3])
    assert stopper.patience_epochs == 2.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_early_stopping_stops_on_a_non_finite_value(bad: float):
    """A NaN or infinite monitored value stops the run at once (PytorchTrainer: 'Got nan')."""
    stopper = EarlyStopping(patience=5)
    trainer = run(stopper, [1.0, 0.5, bad, 0.4, 0.3])
    assert trainer.state.epoch == 3
    assert trainer.state.stop_reason == (
        f"val_loss is {bad}, not a finite number; the run has diverged "
        "(best val_loss: 0.5000 at epoch 2)"
    )
    assert (stopper.best, stopper.best_epoch) == (0.5, 2)


def test_early_stopping_non_finite_first_value_and_check_finite_off():
    """A first NaN reports no best; check_finite=False only counts it as no improvement."""
    trainer = run(EarlyStopping(patience=5), [float("nan"), 1.0])
    assert trainer.state.stop_reason == (
        "val_loss is nan, not a finite number; the run has diverged (best none yet at epoch 0)"
    )
    stopper = EarlyStopping(patience=2, check_finite=False)
    trainer = run(stopper, [1.0, float("nan"), float("nan"), 0.5])
    assert trainer.state.epoch == 3
    assert "did not improve for 2 epochs" in (trainer.state.stop_reason or "")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"patience": 1.5}, ValueError, r"a float `patience` is a fraction .* received 1\.5"),
        ({"patience": 0.0}, ValueError, r"must lie in \(0, 1\); received 0\.0"),
        ({"patience": -2}, ValueError, r"`patience` must be a positive integer; received -2"),
        ({"patience": "3"}, TypeError, r"`patience` must be an int .*; received str"),
        ({"patience": True}, TypeError, r"`patience` must be an int .*; received bool"),
        ({"min_delta": "0.1"}, TypeError, r"`min_delta` must be a number; received str"),
        ({"min_rel_delta": 1.0}, ValueError, r"`min_rel_delta` .* \[0, 1\) .*received 1\.0"),
        ({"min_rel_delta": -0.01}, ValueError, r"`min_rel_delta` .* received -0\.01"),
        ({"min_rel_delta": None}, TypeError, r"`min_rel_delta` must be a number; received None"),
    ],
)
def test_early_stopping_rejects_bad_new_arguments(kwargs, error, match):
    """Bad patience and thresholds raise at construction, saying what to pass."""
    with pytest.raises(error, match=match):
        EarlyStopping(**kwargs)


def countdown_run(directory, at: int | None) -> tuple[kiln.Trainer, EarlyStopping]:
    kiln.seed_everything(0)
    X, Y = torch.randn(16, 2), torch.randn(16, 1)
    stopper = EarlyStopping(patience=0.2, min_rel_delta=0.005, countdown=True, restore_best=True)
    values = [1.0, 0.9, 0.899, 0.898, 0.7, 0.8, 0.8, 0.8, 0.8, 0.8]
    trainer = kiln.Trainer(
        nn.Linear(2, 1),
        loss="mse",
        callbacks=[ScriptedValues("val_loss", values), Interrupt(at), stopper],
        dir=directory,
        device="cpu",
        progress=False,
    )
    with contextlib.suppress(RuntimeError):
        trainer.fit((X, Y), val=(X, Y), epochs=10, resume=True)
    return trainer, stopper


def test_early_stopping_countdown_resumes_exactly(tmp_path):
    """Interrupted mid-countdown (after epoch 7) and resumed: same stop, counters, weights."""
    straight, expected = countdown_run(tmp_path / "straight", None)
    countdown_run(tmp_path / "resumed", 7)
    resumed, stopper = countdown_run(tmp_path / "resumed", None)
    assert resumed.state.resumed
    assert resumed.state.epoch == straight.state.epoch == 9
    assert resumed.state.stop_reason == straight.state.stop_reason
    assert stopper.state_dict().keys() == expected.state_dict().keys()
    assert (stopper.best, stopper.best_epoch, stopper.wait) == (0.7, 5, 4)
    assert (expected.best, expected.best_epoch, expected.wait) == (0.7, 5, 4)
    assert torch.equal(resumed.model.weight, straight.model.weight)
