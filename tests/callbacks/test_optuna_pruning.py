"""Tests of `kiln.callbacks.OptunaPruning` with real in-memory Optuna studies."""

from __future__ import annotations

import sys

import pytest
import torch

import kiln
from kiln.callbacks.optuna_pruning import PRUNED_ATTR, OptunaPruning
from tests.callbacks.runs import Interrupt, fit, make_trainer

optuna = pytest.importorskip("optuna")

TrialState = optuna.trial.TrialState


@pytest.fixture(autouse=True)
def _quiet_optuna():
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(verbosity)


class EndRecorder(kiln.Callback):
    """Notes that its `on_fit_end` ran."""

    def __init__(self) -> None:
        self.ended = 0

    def on_fit_end(self, trainer: kiln.Trainer) -> None:
        self.ended += 1


class KillAtEpochEnd(kiln.Callback):
    """Raise at the end of `epoch`, after the callbacks before it ran, before the checkpoint."""

    def __init__(self, epoch: int | None) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer: kiln.Trainer) -> None:
        if trainer.state.epoch == self.epoch:
            raise RuntimeError("killed")


def regression(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=generator)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1


def new_study() -> optuna.Study:
    # Prune from the second trial on, at any step, whatever is worse than the median.
    pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    return optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0), pruner=pruner)


def values_of(study: optuna.Study, number: int) -> dict[int, float]:
    return dict(study.trials[number].intermediate_values)


def test_a_study_prunes_bad_trials_and_finds_the_best_lr():
    """Each larger learning rate learns faster here: the tiny ones fall behind, and are pruned."""
    lrs = [0.05, 0.1, 1e-5, 0.2, 2e-5, 1e-4]
    ends = []

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-5, 0.2, log=True)
        torch.manual_seed(0)
        end = EndRecorder()
        ends.append(end)
        trainer = kiln.Trainer(
            torch.nn.Linear(4, 1), loss="mse", lr=lr, device="cpu", progress=False,
            callbacks=[OptunaPruning(trial, monitor="val_loss"), end],
        )  # fmt: skip
        history = trainer.fit(regression(), val=0.25, epochs=4, batch_size=8)
        return history.val_loss[-1]

    study = new_study()
    for lr in lrs:
        study.enqueue_trial({"lr": lr})
    study.optimize(objective, n_trials=len(lrs))
    complete, pruned = TrialState.COMPLETE, TrialState.PRUNED
    states = [trial.state for trial in study.trials]
    assert states == [complete, complete, pruned, complete, pruned, pruned]
    pruned_trials = [trial for trial in study.trials if trial.state == pruned]
    for trial in pruned_trials:  # stopped at the epoch that was pruned, recorded on the trial
        epoch = trial.user_attrs[PRUNED_ATTR]
        assert sorted(trial.intermediate_values) == list(range(1, epoch + 1))
    assert study.best_params == {"lr": 0.2}
    assert study.best_trial.state == TrialState.COMPLETE
    assert sorted(values_of(study, 0)) == [1, 2, 3, 4]
    assert [end.ended for end in ends] == [1] * len(lrs)  # listed after it: still ended


def test_a_pruned_run_ends_like_a_stopped_one(tmp_path):
    """The pruned epoch is logged and saved; resuming raises TrialPruned again, untrained."""
    study = new_study()
    study.enqueue_trial({"lr": 0.1})
    study.optimize(lambda trial: train_trial(trial, tmp_path / "good"), n_trials=1)
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-6, 1.0, log=True)})
    pruning = OptunaPruning(trial)
    trainer = slow_trainer(pruning, tmp_path / "bad")
    with pytest.raises(optuna.TrialPruned, match=r"pruned trial 1 at epoch 1 \(val_loss\)"):
        trainer.fit(regression(), val=0.25, epochs=4, batch_size=8)
    assert pruning.pruned_epoch == 1
    assert trainer.state.stop_reason == "Optuna pruned trial 1 at epoch 1 (val_loss)"
    assert len(trainer.history) == 1

    again = slow_trainer(OptunaPruning(trial), tmp_path / "bad")
    with pytest.raises(optuna.TrialPruned):
        again.fit(regression(), val=0.25, epochs=4, batch_size=8, resume=True)
    assert again.state.epoch == 1
    assert values_of_trial(study, trial) == {1: trainer.history.val_loss[0]}


def slow_trainer(pruning: OptunaPruning, directory) -> kiln.Trainer:
    """A trainer whose tiny learning rate makes it fall behind any other."""
    return kiln.Trainer(torch.nn.Linear(4, 1), loss="mse", lr=1e-6, device="cpu",
                        progress=False, callbacks=[pruning], dir=directory)  # fmt: skip


def values_of_trial(study: optuna.Study, trial: optuna.trial.Trial) -> dict[int, float]:
    return values_of(study, trial.number)


def train_trial(trial, directory, callbacks=(), epochs=4, resume=False) -> float:
    lr = trial.suggest_float("lr", 1e-6, 1.0, log=True)
    torch.manual_seed(0)
    trainer = kiln.Trainer(
        torch.nn.Linear(4, 1), loss="mse", lr=lr, device="cpu", progress=False,
        callbacks=[OptunaPruning(trial), *callbacks], dir=directory,
    )  # fmt: skip
    history = trainer.fit(regression(), val=0.25, epochs=epochs, batch_size=8, resume=resume)
    return history.val_loss[-1]


@pytest.mark.parametrize("kill", ["before_epoch_3", "after_report_of_epoch_3"])
def test_a_trial_resumes_from_its_run_directory(tmp_path, kill):
    """Interrupted, then resumed in the same objective: each epoch is reported once.

    Killed after epoch 3 was reported but before it was saved, the resumed run trains epoch 3
    again: the trial keeps the value reported first (the same on the CPU), with no warning.
    """
    directory = tmp_path / "trial_0"
    interruption = Interrupt(2) if kill == "before_epoch_3" else KillAtEpochEnd(3)

    def objective(trial):
        with pytest.raises(RuntimeError, match="interrupted|killed"):
            train_trial(trial, directory, [interruption])
        reported = sorted(values_of(study, trial.number))
        assert reported == ([1, 2] if kill == "before_epoch_3" else [1, 2, 3])
        again = type(interruption)(None)  # the same callbacks, in the same order
        return train_trial(trial, directory, [again], resume=True)

    study = new_study()
    study.optimize(objective, n_trials=1)  # warnings are errors: none about a repeated step

    straight = new_study()
    straight.enqueue_trial(study.trials[0].params)
    straight.optimize(lambda trial: train_trial(trial, tmp_path / "straight"), n_trials=1)
    assert study.trials[0].state == TrialState.COMPLETE
    assert values_of(study, 0) == values_of(straight, 0)
    assert sorted(values_of(study, 0)) == [1, 2, 3, 4]


def test_optuna_warns_about_a_step_reported_twice():
    """The counter-test: what the resume tests would see (as an error) for a repeated epoch."""
    trial = new_study().ask()
    trial.report(1.0, step=3)
    with pytest.warns(UserWarning, match=r"`step=3` is already reported"):
        trial.report(2.0, step=3)


def test_a_retried_trial_receives_the_epochs_saved_before_the_failure(tmp_path):
    """The failed trial's run directory resumed in a new trial: it reports epochs 1 to 4."""
    directory = tmp_path / "run"
    study = new_study()

    def failing(trial):
        return train_trial(trial, directory, [Interrupt(2)])

    study.optimize(failing, n_trials=1, catch=(RuntimeError,))
    assert study.trials[0].state == TrialState.FAIL
    study.enqueue_trial(study.trials[0].params)
    study.optimize(
        lambda trial: train_trial(trial, directory, [Interrupt(None)], resume=True), n_trials=1
    )
    assert study.trials[1].state == TrialState.COMPLETE
    assert values_of(study, 1) == {**values_of(study, 0), **values_of(study, 1)}
    assert sorted(values_of(study, 1)) == [1, 2, 3, 4]
    assert values_of(study, 1)[1] == values_of(study, 0)[1]


def test_a_monitor_never_logged_fails_on_the_first_batch():
    trial = optuna.trial.FixedTrial({})
    trainer = make_trainer([OptunaPruning(trial, monitor="val_acc")], None)
    with pytest.raises(ValueError, match=r"OptunaPruning\(monitor='val_acc'\) names a value that"):
        fit(trainer, epochs=1)
    assert trainer.state.step == 0


def test_a_fixed_trial_trains_to_the_end():
    history = fit(make_trainer([OptunaPruning(optuna.trial.FixedTrial({}))], None), epochs=2)
    assert len(history) == 2


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((object(),), TypeError, r"`trial` must be the optuna.trial.Trial .* received object"),
        ((None,), TypeError, r"received NoneType"),
        ((optuna.trial.FixedTrial({}), 3), TypeError, r"`monitor` must be the name .* received 3"),
    ],
)
def test_bad_arguments(args, error, match):
    with pytest.raises(error, match=match):
        OptunaPruning(*args)


def test_missing_optuna_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ImportError, match=r"pip install 'kiln\[optuna\]'"):
        OptunaPruning(None)


def test_importing_kiln_imports_neither_optuna_nor_wandb():
    import subprocess

    code = "import sys, kiln.callbacks; print('optuna' in sys.modules, 'wandb' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False False", result.stderr
