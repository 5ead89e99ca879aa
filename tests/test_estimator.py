"""Tests of `kiln.Estimator`: PyBlaze's door, fit/evaluate/predict on the model itself."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

import kiln


class Net(kiln.Estimator, nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def data(n: int = 48):
    return torch.randn(n, 4), torch.randint(0, 3, (n,))


def test_estimator_fit_evaluate_predict_delegate_to_a_trainer():
    """net.fit trains through a Trainer; evaluate and predict reuse its loss and metrics."""
    net = Net()
    X, Y = data()
    history = net.fit(
        (X, Y),
        val=(X, Y),
        epochs=2,
        optimizer="sgd",
        loss="cross_entropy",
        metrics=["accuracy"],
        device="cpu",
        progress=False,
    )
    assert isinstance(net.trainer, kiln.Trainer)
    assert len(history) == 2
    evaluation = net.evaluate((X, Y))
    assert set(evaluation.keys()) == {"loss", "accuracy"}
    assert net.predict(X).shape == (48, 3)


def test_estimator_evaluate_before_fit_uses_the_given_loss_and_metrics():
    """An unfitted estimator evaluates with the loss and metrics passed to evaluate."""
    X, Y = data()
    evaluation = Net().evaluate((X, Y), loss="cross_entropy", metrics=["accuracy"])
    assert set(evaluation.keys()) == {"loss", "accuracy"}


def test_estimator_predict_before_fit_runs_the_model():
    """An unfitted estimator predicts with the model as it is."""
    net = Net()
    X, _ = data()
    assert torch.allclose(net.predict(X), net(X).detach())


def test_estimator_copies_and_pickles_leave_the_trainer_behind():
    """deepcopy and pickle of a fitted model do not carry its trainer and optimizer."""
    net = Net()
    X, Y = data()
    net.fit((X, Y), epochs=1, loss="cross_entropy", device="cpu", progress=False)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert clone.trainer is None
        assert torch.equal(clone.linear.weight, net.linear.weight)


def test_estimator_needs_a_module():
    """A class that mixes in Estimator without nn.Module gets a clear TypeError."""

    class NotAModule(kiln.Estimator):
        pass

    with pytest.raises(TypeError, match=r"class Net\(kiln.Estimator, nn.Module\)"):
        NotAModule().predict(torch.zeros(1, 2))
