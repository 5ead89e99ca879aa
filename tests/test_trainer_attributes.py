"""Assigning a trainer's attributes does all it takes, or is refused with a reason."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import kiln

X, Y = torch.randn(32, 3), torch.randn(32, 1)


def make(optimizer="adam") -> kiln.Trainer:
    torch.manual_seed(0)
    return kiln.Trainer(nn.Linear(3, 1), "mse", optimizer, device="cpu", progress=False)


def test_assigning_a_copy_of_the_best_model_keeps_training_it_with_the_optimizer_state():
    trainer = make()
    trainer.fit((X, Y), epochs=2, batch_size=8)
    best = copy.deepcopy(trainer.model)
    trainer.fit((X, Y), epochs=1, batch_size=8)
    trainer.model = best  # roll back, as with QuNet's `trainer.model = best`
    before = best.weight.detach().clone()
    trainer.fit((X, Y), epochs=1, batch_size=8)
    assert trainer.model is best
    assert not torch.equal(best.weight, before)  # the optimizer now steps the new parameters
    params = trainer.optimizer.param_groups[0]["params"]
    assert params[0] is best.weight
    assert int(trainer.optimizer.state[best.weight]["step"]) == 16  # the moments carried over


def test_the_counter_case_an_optimizer_left_on_the_old_parameters_changes_nothing():
    trainer = make()
    best = copy.deepcopy(trainer.model)
    optimizer = torch.optim.Adam(nn.Linear(3, 1).parameters())  # not the model's
    before = best.weight.detach().clone()
    for _ in range(2):
        optimizer.zero_grad()
        nn.functional.mse_loss(best(X), Y).backward()
        optimizer.step()
    assert torch.equal(best.weight, before)


def test_another_architecture_is_refused_and_the_trainer_is_unchanged():
    trainer = make()
    model = trainer.model
    with pytest.raises(ValueError, match=r"has other parameters than the trainer's \(Linear\)"):
        trainer.model = nn.Linear(4, 1)
    assert trainer.model is model
    with pytest.raises(TypeError, match=r"`model` must be a torch.nn.Module; received str"):
        trainer.model = "net"


def test_loss_metrics_and_optimizer_assigned_by_name_are_resolved():
    trainer = make()
    trainer.loss = "l1"
    trainer.metrics = ["mae"]
    trainer.optimizer = "sgd"
    history = trainer.fit((X, Y), val=(X, Y), epochs=1, batch_size=8)
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    assert history.val_loss[0] == pytest.approx(history.val_mae[0])


def test_device_and_dir_cannot_be_assigned_and_say_why():
    trainer = make()
    with pytest.raises(AttributeError, match=r"`trainer.device` is fixed when the trainer is bu"):
        trainer.device = "cuda"
    with pytest.raises(AttributeError, match=r"`trainer.dir` is fixed when the trainer is built"):
        trainer.dir = "runs/x"
