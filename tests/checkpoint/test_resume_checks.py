"""A resume that cannot continue the run fails before it changes anything, and says what differs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import kiln
from kiln.callbacks import EarlyStopping, StepCheckpoint

X, Y = torch.randn(48, 3), torch.randn(48, 1)


class CrashAt(kiln.Callback):
    """Raises at training batch `at` of the first epoch (never with `at=None`)."""

    def __init__(self, at: int | None) -> None:
        self.at = at

    def on_train_batch_end(self, trainer: kiln.Trainer) -> None:
        if self.at is not None and trainer.state.batch_idx == self.at:
            raise KeyboardInterrupt("simulated crash")


def trainer_in(directory, callbacks=(), optimizer="sgd") -> kiln.Trainer:
    torch.manual_seed(0)
    lr = 0.01 if isinstance(optimizer, str) else None
    return kiln.Trainer(
        nn.Linear(3, 1), "mse", optimizer, lr=lr, callbacks=list(callbacks), dir=directory,
        device="cpu", progress=False,
    )  # fmt: skip


def untouched(trainer: kiln.Trainer, model_before: dict, optimizer_before: dict) -> None:
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, model_before[key]), key
    assert trainer.optimizer.state_dict() == optimizer_before
    assert trainer.state.epoch == 0
    assert len(trainer.history) == 0


def resume_fails(trainer: kiln.Trainer, match: str, batch_size: int = 8) -> None:
    model_before = copy.deepcopy(trainer.model.state_dict())
    optimizer_before = copy.deepcopy(trainer.optimizer.state_dict())
    with pytest.raises(ValueError, match=match):
        trainer.fit(kiln.Data((X, Y), batch_size=batch_size), epochs=3, resume=True)
    untouched(trainer, model_before, optimizer_before)


def test_other_callbacks_are_refused_before_the_model_is_loaded(tmp_path):
    trainer_in(tmp_path, [EarlyStopping("val_loss")]).fit((X, Y), val=(X, Y), epochs=2)
    resume_fails(trainer_in(tmp_path), r"was saved by a trainer with the callbacks")


def test_another_optimizer_is_refused_before_anything_is_loaded(tmp_path):
    trainer_in(tmp_path, optimizer="adam").fit((X, Y), epochs=2, batch_size=8)
    sgd = trainer_in(tmp_path, optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
    resume_fails(sgd, r"was saved with another optimizer: torch.optim.adam.Adam over paramet")


def test_the_same_optimizer_resumes(tmp_path):
    trainer_in(tmp_path, optimizer="adam").fit((X, Y), epochs=1, batch_size=8)
    again = trainer_in(tmp_path, optimizer="adam")
    again.fit(kiln.Data((X, Y), batch_size=8), epochs=2, resume=True)
    assert again.state.epoch == 2


def test_another_batch_size_inside_an_epoch_is_refused_before_anything_is_loaded(tmp_path):
    callbacks = [StepCheckpoint(every_n_steps=2), CrashAt(4)]
    with pytest.raises(KeyboardInterrupt):
        trainer_in(tmp_path, callbacks).fit(kiln.Data((X, Y), batch_size=8), epochs=3)
    again = trainer_in(tmp_path, [StepCheckpoint(every_n_steps=2), CrashAt(None)])
    resume_fails(
        again, r"saved inside an epoch of 6 batches, but the training data now makes 4", 12
    )
