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


def _fit(callbacks: list) -> kiln.Trainer:
    trainer = kiln.Trainer(
        nn.Linear(2, 1), loss="mse", callbacks=callbacks, device="cpu", progress=False
    )
    trainer.fit((torch.randn(4, 2), torch.randn(4, 1)), epochs=2)
    return trainer


def test_dispatch_calls_methods_assigned_on_the_instance():
    """`cb.on_epoch_end = fn`, on a Callback or a plain object, is called like a method."""
    import types

    calls: list[str] = []
    callback = kiln.Callback()
    callback.on_epoch_end = lambda trainer: calls.append("epoch")  # type: ignore[method-assign]
    counter = OnlyEpochEnd()
    counter.on_fit_end = lambda trainer: calls.append("fit_end")  # type: ignore[attr-defined]
    plain = types.SimpleNamespace(on_fit_start=lambda trainer: calls.append("fit_start"))
    _fit([callback, counter, plain])
    assert calls == ["fit_start", "epoch", "epoch", "fit_end"]
    assert counter.calls == 2  # its class's method still runs
    assert overrides(callback, Event.EPOCH_END)
    assert not overrides(callback, Event.FIT_END)


def test_dispatch_instance_attribute_none_turns_a_method_off():
    """An instance attribute that is not callable hides the class's method: nothing is called."""
    counter = OnlyEpochEnd()
    counter.on_epoch_end = None  # type: ignore[assignment]
    _fit([counter, OnlyEpochEnd()])
    assert counter.calls == 0


@pytest.mark.parametrize(
    ("name", "instead"),
    [("on_train_begin", "name it `on_fit_start`"), ("on_test_end", "kiln has no such event")],
)
def test_dispatch_refuses_another_librarys_event_names(name, instead):
    """A Keras-named method would never be called: refused, with kiln's name for it."""

    class KerasStyle:
        def on_epoch_end(self, trainer: kiln.Trainer) -> None:
            pass

    callback = KerasStyle()
    setattr(callback, name, lambda trainer: None)
    match = rf"KerasStyle\.{name} is another library's event, which kiln never calls: {instead}"
    with pytest.raises(TypeError, match=match):
        CallbackList([callback])


class KerasStyle(kiln.Callback):
    def on_epoch_end(self, epoch, logs):  # type: ignore[override]
        pass


class KerasDefaults:
    def on_epoch_end(self, epoch, logs=None):
        pass


class Lightning:
    def on_fit_start(self, trainer, pl_module):
        pass


@pytest.mark.parametrize(
    ("callback", "signature"),
    [
        (KerasStyle(), r"KerasStyle\.on_epoch_end\(epoch, logs\)"),
        (KerasDefaults(), r"KerasDefaults\.on_epoch_end\(epoch, logs=None\)"),
        (Lightning(), r"Lightning\.on_fit_start\(trainer, pl_module\)"),
    ],
)
def test_dispatch_refuses_methods_that_do_not_take_the_trainer_alone(callback, signature):
    """Keras's `on_epoch_end(epoch, logs)` is refused at construction, not after an epoch."""
    match = (
        rf"{signature} does not take what kiln passes: `on_\w+\(trainer\)`, the trainer alone"
        r".*`trainer\.state\.epoch`, `trainer\.state\.logs`"
    )
    with pytest.raises(TypeError, match=match):
        kiln.Trainer(nn.Linear(1, 1), loss="mse", callbacks=[callback], device="cpu")


def test_dispatch_refusal_lists_kilns_events():
    """An object without any event method is told the names kiln calls."""
    with pytest.raises(TypeError, match=r"kiln's events: on_fit_start, .*on_fit_end\.$"):
        CallbackList([object()])
