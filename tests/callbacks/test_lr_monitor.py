"""Tests of `kiln.callbacks.LRMonitor`: every group, momentum and decay, per epoch and per step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kiln
from kiln.callbacks.lr_monitor import LRMonitor, optimizer_values
from tests.callbacks.runs import fit


def two_groups(optimizer: str = "sgd") -> tuple[nn.Module, torch.optim.Optimizer]:
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    groups = [
        {"params": net[0].parameters()},
        {"params": net[1].parameters(), "lr": 0.01, "weight_decay": 0.5},
    ]
    if optimizer == "sgd":
        return net, torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    if optimizer == "adam":
        return net, torch.optim.Adam(groups, lr=0.1, betas=(0.8, 0.99))
    return net, torch.optim.Adagrad(groups, lr=0.1)


def trainer_with(callbacks: list[kiln.Callback], optimizer: str = "sgd") -> kiln.Trainer:
    net, opt = two_groups(optimizer)
    return kiln.Trainer(net, loss="cross_entropy", optimizer=opt, callbacks=callbacks,
                        device="cpu", progress=False)  # fmt: skip


class HalveSecondGroup(kiln.Callback):
    """A schedule on the second group only, stepped per optimizer step."""

    def on_train_batch_end(self, trainer: kiln.Trainer) -> None:
        trainer.optimizer.param_groups[1]["lr"] /= 2


class RecordLogs(kiln.Callback):
    """Keeps a copy of the logs after every step, as a per-step logger would read them."""

    def __init__(self) -> None:
        self.seen: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: kiln.Trainer) -> None:
        self.seen.append(dict(trainer.state.logs))


def test_every_group_momentum_and_decay_reach_the_history():
    history = fit(trainer_with([LRMonitor(momentum=True, weight_decay=True)]), epochs=2)
    assert history.lr == [0.1, 0.1]
    assert history.lr_group_1 == [0.01, 0.01]
    assert history.momentum == history.momentum_group_1 == [0.9, 0.9]
    assert history.weight_decay == [0.0, 0.0]
    assert history.weight_decay_group_1 == [0.5, 0.5]


def test_adam_momentum_is_its_first_beta():
    history = fit(trainer_with([LRMonitor(momentum=True)], "adam"), epochs=1)
    assert history.momentum == [0.8]
    assert "weight_decay" not in history


def test_per_step_values_are_in_the_logs_during_the_pass():
    """Each step sees the rate it used (5 steps an epoch), whatever the callbacks' order."""
    recorder = RecordLogs()
    history = fit(trainer_with([recorder, HalveSecondGroup(), LRMonitor(interval="step")]), 2)
    used = [0.01 / 2**step for step in range(10)]
    assert [logs["lr_group_1"] for logs in recorder.seen] == pytest.approx(used)
    assert all(logs["lr"] == 0.1 for logs in recorder.seen)
    # The epoch value is read from the optimizer when the pass ends, after the last halving.
    assert history.lr_group_1 == pytest.approx([0.01 / 2**5, 0.01 / 2**10])


def test_epoch_interval_leaves_the_pass_logs_alone():
    recorder = RecordLogs()
    fit(trainer_with([LRMonitor(), recorder]), epochs=1)
    assert recorder.seen == [{}] * 5


def test_optimizer_without_momentum_is_refused_at_fit():
    with pytest.raises(ValueError, match=r"the optimizer Adagrad has no momentum or betas to log"):
        fit(trainer_with([LRMonitor(momentum=True)], "adagrad"), epochs=1)
    assert optimizer_values(two_groups("adagrad")[1], momentum=True) == {
        "lr": 0.1,
        "lr_group_1": 0.01,
    }


def test_a_trainer_without_optimizer_is_refused():
    trainer = kiln.Trainer(nn.Linear(3, 2), optimizer=None, callbacks=[LRMonitor()],
                           device="cpu", progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"LRMonitor reads the optimizer's learning rate"):
        LRMonitor().on_fit_start(trainer)


def test_bad_arguments():
    with pytest.raises(TypeError, match=r"`interval` must be a string, 'epoch' or 'step'; "):
        LRMonitor(interval=1)
    with pytest.raises(ValueError, match=r"`interval` must be 'epoch' or 'step'; received 'batch'"):
        LRMonitor(interval="batch")
    with pytest.raises(TypeError, match=r"`momentum` must be True or False; received 1 \(int\)"):
        LRMonitor(momentum=1)
    with pytest.raises(TypeError, match=r"`weight_decay` must be True or False; received None"):
        LRMonitor(weight_decay=None)
