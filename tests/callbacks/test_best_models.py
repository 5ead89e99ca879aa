"""Tests of `kiln.callbacks.BestModels`: QuNet's best-loss and best-score weights in memory."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import kiln
from kiln.callbacks import BestModels
from kiln.checkpoint import atomic_save, safe_load
from tests.callbacks.runs import QuNetStyle, Snapshots


class ScriptedValues(kiln.Callback):
    """Writes scripted values into each epoch's logs, as validation would."""

    def __init__(self, **values: list[float]) -> None:
        self.values = values

    def on_validation_end(self, trainer: kiln.Trainer) -> None:
        for name, values in self.values.items():
            trainer.state.logs[name] = values[trainer.state.epoch - 1]


X, Y = torch.randn(64, 3), torch.randn(64, 1)
LOSSES = [1.0, 0.4, 0.6, 0.5]
SCORES = [0.1, 0.3, 0.9, 0.9]


def fit(callbacks: list[Any], epochs: int, dir: Path | None = None, **kw: Any) -> kiln.Trainer:
    model = kw.pop("model", None) or nn.Linear(3, 1)
    trainer = kiln.Trainer(
        model,
        loss=None if isinstance(model, QuNetStyle) else "mse",
        lr=0.05,
        callbacks=callbacks,
        dir=dir,
        device="cpu",
        progress=False,
    )
    trainer.fit((X, Y), val=kw.pop("val", (X, Y)), epochs=epochs, **kw)
    return trainer


def equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def scripted_run() -> tuple[BestModels, Snapshots, kiln.Trainer]:
    best, snapshots = BestModels(), Snapshots()
    scripted = ScriptedValues(val_loss=LOSSES, val_score=SCORES)
    trainer = fit([scripted, snapshots, best], 4)
    return best, snapshots, trainer


def test_keeps_the_best_loss_and_the_best_score_weights():
    """Strictly better values replace the kept ones (an equal score does not)."""
    best, snapshots, trainer = scripted_run()
    assert (best.loss, best.loss_epoch) == (0.4, 2)
    assert (best.score, best.score_epoch) == (0.9, 3)
    assert best.loss_weights is not None
    assert best.score_weights is not None
    assert equal(best.loss_weights, snapshots.weights[1])
    assert equal(best.score_weights, snapshots.weights[2])
    assert all(w.device.type == "cpu" for w in best.loss_weights.values())
    with torch.no_grad():  # copies: changing the model leaves them as they were
        trainer.model.weight.add_(1.0)
    assert equal(best.loss_weights, snapshots.weights[1])


def test_restore_rolls_a_trainer_or_a_model_back():
    best, snapshots, trainer = scripted_run()
    best.restore(trainer, "loss")
    assert equal(trainer.model.state_dict(), snapshots.weights[1])
    other = nn.Linear(3, 1)
    best.restore(other)  # "score" by default
    assert equal(other.state_dict(), snapshots.weights[2])


def test_model_returns_a_copy_with_the_best_weights():
    best, snapshots, trainer = scripted_run()
    copy = best.model("loss")
    assert copy is not trainer.model
    assert equal(copy.state_dict(), snapshots.weights[1])
    assert equal(trainer.model.state_dict(), snapshots.weights[3])  # left as it was
    assert equal(best.model().state_dict(), snapshots.weights[2])


def test_a_model_defined_score_is_followed():
    """QuNet's training_step returning a score: the best score is the highest val_score."""
    best = BestModels()
    trainer = fit([best], 3, model=QuNetStyle())
    scores = trainer.history.val_score
    assert best.score == max(scores)
    assert best.score_epoch == scores.index(max(scores)) + 1
    assert best.loss == min(trainer.history.val_loss)


def test_score_mode_min_and_score_none():
    lower = BestModels(score="val_error", score_mode="min")
    loss_only = BestModels(score=None)
    fit([ScriptedValues(val_error=[0.5, 0.2, 0.3]), lower, loss_only], 3)
    assert (lower.score, lower.score_epoch) == (0.2, 2)
    assert loss_only.score is None
    assert loss_only.score_weights is None
    with pytest.raises(ValueError, match=r"has no best-score weights yet \(it follows None\)"):
        loss_only.restore(nn.Linear(3, 1), "score")


def test_nan_never_becomes_the_best():
    best = BestModels(score=None)
    fit([ScriptedValues(val_loss=[math.nan, 2.0]), best], 2)
    assert (best.loss, best.loss_epoch) == (2.0, 2)


def test_epochs_without_validation_are_skipped():
    best = BestModels()
    fit([best], 2, val=None)
    assert best.loss is None
    assert best.score is None
    with pytest.raises(ValueError, match=r"has no best-loss weights yet \(it follows 'val_loss'\)"):
        best.model("loss")


def test_a_value_that_is_not_logged_is_an_error():
    with pytest.raises(
        ValueError,
        match=r"BestModels follows 'val_score', which is not logged\. Logged values: epoch, loss, "
        r"lr, time, val_loss\. Pass the name of one of them \(or score=None",
    ):
        fit([BestModels()], 1)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda b: b.restore(nn.Linear(3, 1), "best"), ValueError, r"`which` must be 'loss' or "),
        (lambda b: b.model("last"), ValueError, r"received 'last'\."),
        (lambda b: b.restore("model.pt"), TypeError, r"needs a kiln.Trainer or a torch.nn.Module"),
        (
            lambda b: b.restore(nn.Linear(3, 2), "loss"),
            ValueError,
            r"best-loss weights do not fit Linear: it was saved from another architecture",
        ),
    ],
)
def test_bad_calls_are_refused(call, error, message: str):
    best, _, _ = scripted_run()
    with pytest.raises(error, match=message):
        call(best)


def test_bad_score_mode_is_refused():
    with pytest.raises(ValueError, match=r"`mode` must be 'auto', 'min' or 'max'; received 'up'"):
        BestModels(score_mode="up")


def test_state_dict_round_trips_through_a_file(tmp_path: Path):
    best, snapshots, _ = scripted_run()
    state = safe_load(atomic_save(best.state_dict(), tmp_path / "best.pt"))
    restored = BestModels()
    restored.load_state_dict(state)
    assert (restored.loss, restored.loss_epoch, restored.score, restored.score_epoch) == (
        0.4,
        2,
        0.9,
        3,
    )
    assert restored.score_weights is not None
    assert equal(restored.score_weights, snapshots.weights[2])
    with pytest.raises(ValueError, match="has not been part of a fit yet"):
        restored.model("score")


def test_a_resumed_run_and_a_further_fit_keep_the_best(tmp_path: Path):
    def callbacks() -> list[Any]:
        scripted = ScriptedValues(val_loss=[1.0, 0.3, 0.6, 0.5, 0.2], val_score=[0.5] * 5)
        return [scripted, Snapshots(), BestModels()]

    first = callbacks()
    fit(first, 2, tmp_path)
    resumed = callbacks()
    trainer = fit(resumed, 4, tmp_path, resume=True)
    best = resumed[2]
    assert trainer.state.resumed
    assert (best.loss, best.loss_epoch, best.score_epoch) == (0.3, 2, 1)
    assert equal(best.loss_weights, first[1].weights[1])
    trainer.fit((X, Y), val=(X, Y), epochs=1)  # a further fit: epoch 5 is the new best loss
    assert (best.loss, best.loss_epoch, best.score_epoch) == (0.2, 5, 1)
