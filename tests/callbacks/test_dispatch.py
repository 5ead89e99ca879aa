"""Tests of callback dispatch: only overridden hooks run; duck-typed callbacks work."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kiln
from kiln.callbacks.dispatch import CallbackList, overrides
from kiln.events import Event


class OnlyEpochEnd(kiln.Callback):
    def __init__(self) -> None:
        self.calls = 0

    def on_epoch_end(self, trainer: kiln.Trainer) -> None:
        self.calls += 1


def test_dispatch_calls_only_overridden_hooks():
    """A callback's untouched hooks are not registered for dispatch."""
    callbacks = CallbackList([OnlyEpochEnd()])
    assert callbacks.uses(Event.EPOCH_END)
    assert not any(callbacks.uses(event) for event in Event if event is not Event.EPOCH_END)
    assert overrides(OnlyEpochEnd(), Event.EPOCH_END)
    assert not overrides(OnlyEpochEnd(), Event.FIT_START)


def test_dispatch_accepts_duck_typed_callbacks():
    """Any object with on_<event> methods is a callback, without subclassing."""

    class Plain:
        def __init__(self) -> None:
            self.events: list[str] = []

        def on_fit_start(self, trainer: kiln.Trainer) -> None:
            self.events.append("fit_start")

        def on_fit_end(self, trainer: kiln.Trainer) -> None:
            self.events.append("fit_end")

    plain, counter = Plain(), OnlyEpochEnd()
    trainer = kiln.Trainer(
        nn.Linear(2, 1), loss="mse", callbacks=[plain, counter], device="cpu", progress=False
    )
    trainer.fit((torch.randn(4, 2), torch.randn(4, 1)), epochs=2)
    assert plain.events == ["fit_start", "fit_end"]
    assert counter.calls == 2


def test_dispatch_rejects_objects_without_hooks():
    """An object with no on_<event> method is refused with a TypeError."""
    with pytest.raises(TypeError, match="is not a callback"):
        kiln.Trainer(nn.Linear(1, 1), loss="mse", callbacks=[object()], device="cpu")
