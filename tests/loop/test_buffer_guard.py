"""A batch refused or skipped for its loss leaves the model as it was, buffers included."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kiln
from kiln.loop.buffer_guard import BufferGuard


def batchnorm_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))


def data_with_a_nan_batch() -> tuple[torch.Tensor, torch.Tensor]:
    X, Y = torch.randn(32, 3), torch.randn(32, 1)
    X[9, 1] = float("nan")  # in the third batch of 4
    return X, Y


def test_skipped_batches_leave_batchnorm_statistics_finite_and_as_without_them():
    X, Y = data_with_a_nan_batch()
    trainer = kiln.Trainer(
        batchnorm_net(), "mse", "sgd", lr=0.01, nonfinite="skip", device="cpu", progress=False
    )
    with pytest.warns(RuntimeWarning, match="were skipped"):
        trainer.fit(kiln.Data((X, Y), batch_size=4), epochs=1)
    norm = trainer.model[1]
    assert torch.isfinite(norm.running_mean).all()
    assert torch.isfinite(norm.running_var).all()
    assert int(norm.num_batches_tracked) == 7
    assert torch.isfinite(trainer.predict(torch.randn(5, 3))).all()


def test_the_counter_case_a_forward_alone_poisons_the_statistics():
    X, _ = data_with_a_nan_batch()
    net = batchnorm_net().train()
    net(X[8:12])
    assert torch.isnan(net[1].running_mean).any()


def test_a_refused_batch_leaves_the_buffers_of_the_step_before():
    X, Y = data_with_a_nan_batch()
    kept = {}

    class Snapshot(kiln.Callback):
        def on_train_batch_start(self, trainer: kiln.Trainer) -> None:
            kept.update({k: v.clone() for k, v in trainer.model.state_dict().items()})

    trainer = kiln.Trainer(
        batchnorm_net(), "mse", "sgd", lr=0.01, callbacks=[Snapshot()], device="cpu", progress=False
    )
    with pytest.raises(FloatingPointError, match=r"the weights and buffers \(such as BatchNorm's"):
        trainer.fit(kiln.Data((X, Y), batch_size=4), epochs=1)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, kept[key]), key


def test_a_guard_of_a_model_without_buffers_is_empty_and_costs_nothing():
    guard = BufferGuard(nn.Linear(2, 2))
    assert not guard
    guard.keep()
    guard.restore()
