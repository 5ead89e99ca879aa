"""Tests of `kiln.callbacks.EarlyStopping`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kiln
from kiln.callbacks import EarlyStopping


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
    assert "did not improve by more than 0.05 for 3 epochs (best val_loss: 0.5000 at epoch 5)" in (
        trainer.state.stop_reason or ""
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
