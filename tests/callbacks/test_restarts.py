"""Tests of `kiln.callbacks.restarts.RestartOnPlateau`: optimizer restarts on a plateau."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

import kiln
from kiln.callbacks import EarlyStopping
from kiln.callbacks.restarts import RestartOnPlateau
from tests.callbacks.runs import Interrupt


class ScriptedValues(kiln.Callback):
    """Writes a scripted value into each epoch's logs, as a validation metric would."""

    def __init__(self, values: list[float]) -> None:
        self.values = values

    def on_validation_end(self, trainer: kiln.Trainer) -> None:
        trainer.state.logs["val_loss"] = self.values[trainer.state.epoch - 1]


class Halving(kiln.Callback):
    """A schedule that halves the learning rate after every epoch and counts its restarts."""

    def __init__(self) -> None:
        self.restarted_at: list[int] = []
        self._trainer: kiln.Trainer | None = None

    def on_fit_start(self, trainer: kiln.Trainer) -> None:
        self._trainer = trainer

    def on_epoch_end(self, trainer: kiln.Trainer) -> None:
        for group in trainer.optimizer.param_groups:
            group["lr"] *= 0.5

    def restart(self) -> None:
        self.restarted_at.append(self._trainer.state.epoch if self._trainer else -1)


def make_trainer(callbacks: list, lr: float = 0.1, **kwargs) -> tuple[kiln.Trainer, kiln.Data]:
    kiln.seed_everything(0)
    X, Y = torch.randn(8, 2), torch.randn(8, 1)
    trainer = kiln.Trainer(
        nn.Linear(2, 1),
        loss="mse",
        optimizer="adam",
        lr=lr,
        callbacks=callbacks,
        device="cpu",
        progress=False,
        **kwargs,
    )
    return trainer, kiln.Data((X, Y), batch_size=8)  # one step an epoch


def test_pytorch_trainer_run_without_progress(capsys):
    """P5, n_epochs=10, no progress: 1 improvement, 3 restarted, 5 early stopped."""
    schedule, restarts = Halving(), RestartOnPlateau()
    stopper = EarlyStopping(patience=0.2, min_rel_delta=0.005, countdown=True)
    trainer, data = make_trainer([ScriptedValues([1.0] * 10), schedule, restarts, stopper])
    history = trainer.fit(data, val=data, epochs=10)

    assert (stopper.best_epoch, restarts.restarts, trainer.state.epoch) == (1, [3], 5)
    assert trainer.state.stop_reason == (
        "early stopping: val_loss did not improve by more than 0.5% for 4 epochs "
        "(last counted improvement val_loss: 1.0000 at epoch 1)"
    )
    assert schedule.restarted_at == [3]
    # Halved after each epoch, back to the initial rate after epoch 3's restart.
    assert history.lr == [0.1, 0.05, 0.025, 0.1, 0.05]
    # A fresh Adam: its step count restarted with epoch 4.
    assert {int(state["step"]) for state in trainer.optimizer.state.values()} == {2}
    assert capsys.readouterr().out == (
        "Epoch 3: restarted the optimizer (val_loss did not improve for 2 epochs, best "
        "val_loss: 1.0000 at epoch 1); lr: 0.1\n"
    )
    assert (restarts.patience_epochs, restarts.monitor, restarts.countdown) == (
        0.4,
        "val_loss",
        True,
    )


def test_restart_at_most_once_per_improvement():
    """After a restart the next one waits for an improvement (Keras counting, patience=1)."""
    restarts = RestartOnPlateau(patience=1, verbose=False)
    values = [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.4, 0.4]
    trainer, data = make_trainer([ScriptedValues(values), Halving(), restarts])
    trainer.fit(data, val=data, epochs=9)
    assert restarts.restarts == [2, 6, 9]
    assert (restarts.best, restarts.best_epoch, restarts.restarted) == (0.4, 8, True)


def test_restart_restores_every_hyperparameter_and_a_schedulers_initial_lr():
    """Momentum and lr come back; lr from a torch scheduler's `initial_lr`."""

    class Warmup(kiln.Callback):
        def on_fit_start(self, trainer: kiln.Trainer) -> None:
            self.scheduler = torch.optim.lr_scheduler.LinearLR(
                trainer.optimizer, start_factor=0.5, total_iters=3
            )

        def on_epoch_end(self, trainer: kiln.Trainer) -> None:
            trainer.optimizer.param_groups[0]["momentum"] = 0.0
            self.scheduler.step()

    restarts = RestartOnPlateau(patience=2, verbose=False)
    X, Y = torch.randn(8, 2), torch.randn(8, 1)
    trainer = kiln.Trainer(
        nn.Linear(2, 1),
        loss="mse",
        optimizer=lambda params: torch.optim.SGD(params, lr=0.2, momentum=0.9),
        callbacks=[ScriptedValues([1.0, 1.0, 1.0]), Warmup(), restarts],
        device="cpu",
        progress=False,
    )
    trainer.fit((X, Y), val=(X, Y), epochs=3)
    group = trainer.optimizer.param_groups[0]
    assert restarts.restarts == [3]
    assert (group["lr"], group["momentum"], group["initial_lr"]) == (0.2, 0.9, 0.2)
    assert not trainer.optimizer.state  # no momentum buffers


def test_explicit_arguments_override_the_early_stopping():
    """Given values win; the rest still come from the EarlyStopping."""
    restarts = RestartOnPlateau(patience=0.5, min_rel_delta=0.0, verbose=False)
    stopper = EarlyStopping(patience=3, min_delta=0.01, min_rel_delta=0.005)
    trainer, data = make_trainer([ScriptedValues([1.0, 0.995, 0.992]), restarts, stopper])
    trainer.fit(data, val=data, epochs=3)
    assert restarts.patience_epochs == 1.5
    assert (restarts.min_delta, restarts.min_rel_delta, restarts.countdown) == (0.01, 0.0, False)
    assert restarts.restarts == [3]


@pytest.mark.parametrize(
    ("stoppers", "match"),
    [
        ([], r"the trainer has no EarlyStopping callbacks to take it from"),
        (
            [EarlyStopping("val_loss"), EarlyStopping("loss")],
            r"the trainer has 2 EarlyStopping callbacks to take it from\. Add one "
            r"EarlyStopping, or pass `patience=`",
        ),
    ],
)
def test_unset_patience_needs_one_early_stopping(stoppers, match):
    """Without patience=, exactly one EarlyStopping must give the window."""
    trainer, data = make_trainer([RestartOnPlateau(), *stoppers])
    with pytest.raises(ValueError, match=match):
        trainer.fit(data, val=data, epochs=1)
    assert trainer.state.step == 0


def test_several_early_stoppings_are_told_apart_by_monitor():
    """With monitor= given, the EarlyStopping watching the same value gives the rest."""
    restarts = RestartOnPlateau(monitor="val_loss", verbose=False)
    trainer, data = make_trainer(
        [restarts, EarlyStopping("loss", patience=10), EarlyStopping("val_loss", patience=5)]
    )
    trainer.fit(data, val=data, epochs=1)
    assert restarts.patience_epochs == 1.0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"patience": 0}, ValueError, r"RestartOnPlateau: `patience` must be a positive integer"),
        ({"patience": 2.0}, ValueError, r"a float `patience` is a fraction .* received 2\.0"),
        ({"patience": "2"}, TypeError, r"`patience` must be an int .* received str"),
        ({"monitor": 3}, TypeError, r"`monitor` must be a logged name .* received int"),
        ({"mode": "up"}, ValueError, r"`mode` must be 'auto', 'min' or 'max'; received 'up'"),
        ({"min_delta": -1}, ValueError, r"`min_delta` must be zero or positive; received -1"),
        ({"min_delta": "0"}, TypeError, r"`min_delta` must be a number; received str"),
        ({"min_rel_delta": 2}, ValueError, r"`min_rel_delta` .* must lie in \[0, 1\)"),
    ],
)
def test_restart_rejects_bad_arguments(kwargs, error, match):
    """Bad arguments raise at construction."""
    with pytest.raises(error, match=match):
        RestartOnPlateau(**kwargs)


def test_restart_monitor_not_logged_is_reported_before_training():
    """A monitor that is never logged fails on the first batch, like EarlyStopping's."""
    trainer, data = make_trainer([RestartOnPlateau(2, monitor="val_f2", mode="max")])
    with pytest.raises(ValueError, match=r"RestartOnPlateau\(monitor='val_f2'\) names a value"):
        trainer.fit(data, val=data, epochs=1)


def resumable_run(directory, at: int | None) -> tuple[kiln.Trainer, RestartOnPlateau]:
    values = [1.0, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    restarts = RestartOnPlateau(verbose=False)
    stopper = EarlyStopping(patience=0.2, min_rel_delta=0.005, countdown=True)
    callbacks = [ScriptedValues(values), Interrupt(at), Halving(), restarts, stopper]
    trainer, data = make_trainer(callbacks, dir=directory)
    with contextlib.suppress(RuntimeError):
        trainer.fit(data, val=data, epochs=10, resume=True)
    return trainer, restarts


@pytest.mark.parametrize("at", [3, 7])
def test_restarts_resume_exactly(tmp_path, at: int):
    """Interrupted before or after a restart and resumed: same restarts, optimizer, weights."""
    straight, expected = resumable_run(tmp_path / "straight", None)
    resumable_run(tmp_path / "resumed", at)
    resumed, restarts = resumable_run(tmp_path / "resumed", None)
    assert resumed.state.resumed
    assert expected.restarts == restarts.restarts == [4, 7]
    assert resumed.state.epoch == straight.state.epoch == 9
    assert resumed.history.lr == straight.history.lr
    assert resumed.history.batch_losses == straight.history.batch_losses
    assert torch.equal(resumed.model.weight, straight.model.weight)
    ours, theirs = resumed.optimizer.state_dict(), straight.optimizer.state_dict()
    assert ours["param_groups"] == theirs["param_groups"]
    for key, value in theirs["state"].items():
        assert torch.equal(ours["state"][key]["exp_avg"], value["exp_avg"])
        assert torch.equal(ours["state"][key]["step"], value["step"])
