"""Calling callbacks: only the methods they override, with errors that name the callback."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from kiln.callbacks.base import Callback
from kiln.events import Event

if TYPE_CHECKING:
    from kiln.trainer import Trainer


#: Events of other libraries that kiln does not call, with the event to use instead (or None).
FOREIGN_EVENTS: dict[str, Event | None] = {
    "on_train_begin": Event.FIT_START,  # Keras, Poutyne
    "on_train_start": Event.FIT_START,  # Lightning
    "on_train_end": Event.FIT_END,
    "on_epoch_begin": Event.TRAIN_EPOCH_START,
    "on_epoch_start": Event.TRAIN_EPOCH_START,
    "on_batch_begin": Event.TRAIN_BATCH_START,
    "on_batch_start": Event.TRAIN_BATCH_START,
    "on_train_batch_begin": Event.TRAIN_BATCH_START,
    "on_batch_end": Event.TRAIN_BATCH_END,
    "on_backward_end": Event.BEFORE_OPTIMIZER_STEP,
    "on_validation_epoch_start": Event.VALIDATION_START,
    "on_valid_begin": Event.VALIDATION_START,
    "on_validation_epoch_end": Event.VALIDATION_END,
    "on_valid_end": Event.VALIDATION_END,
    "on_valid_batch_end": Event.VALIDATION_BATCH_END,
    "on_test_begin": None,
    "on_test_end": None,
    "on_predict_begin": None,
    "on_predict_end": None,
}


#: First arguments of other libraries' callback methods (Keras's `on_epoch_end(epoch, logs)`).
_FOREIGN_ARGUMENTS = {"epoch", "batch", "logs", "epoch_number", "batch_number"}


def own_method(callback: Any, event: Event) -> Callable[[Trainer], None] | None:
    """Return `callback`'s own code for `event`, or None for none (or `Callback`'s no-op).

    A method assigned on the instance (`callback.on_epoch_end = fn`) counts, and wins over
    the class's, as attribute lookup has it.
    """
    instance = getattr(callback, "__dict__", None)
    if isinstance(instance, dict) and event.value in instance:
        method = instance[event.value]
        return method if callable(method) else None
    method = getattr(type(callback), event.value, None)
    if callable(method) and method is not getattr(Callback, event.value, None):
        return getattr(callback, event.value)  # type: ignore[no-any-return]
    return None


def overrides(callback: Any, event: Event) -> bool:
    """Tell whether `callback` has its own code for `event` (not `Callback`'s no-op)."""
    return own_method(callback, event) is not None


def check_callback(callback: Any) -> None:
    """Raise `TypeError` for a callback whose methods kiln would not call, or could not.

    An object with no `on_<event>` method, a method of another library's name
    (`on_train_begin`) or one that cannot be called as `on_<event>(trainer)` (Keras's
    `on_epoch_end(epoch, logs)`) would never run, or fail only when its event comes.
    """
    owner = type(callback).__name__
    events = ", ".join(event.value for event in Event)
    names = {*dir(type(callback)), *getattr(callback, "__dict__", {})}
    for name in sorted(names & FOREIGN_EVENTS.keys()):
        if not callable(getattr(callback, name, None)):
            continue
        instead = FOREIGN_EVENTS[name]
        use = f"name it `{instead.value}`" if instead is not None else "kiln has no such event"
        raise TypeError(
            f"{owner}.{name} is another library's event, which kiln never calls: {use}. "
            f"kiln's events: {events}."
        )
    if not any(callable(getattr(callback, event.value, None)) for event in Event):
        raise TypeError(
            f"{owner} is not a callback: it has no `on_<event>(trainer)` method. Subclass "
            "kiln.Callback and override the events you need, or give any object such "
            f"methods. kiln's events: {events}."
        )
    for event in Event:
        method = own_method(callback, event)
        if method is None:
            continue
        try:
            signature = inspect.signature(method)
        except (TypeError, ValueError):  # a builtin or a mock: nothing to read
            continue
        try:
            signature.bind(None)
            first = next(iter(signature.parameters), "")
        except TypeError:
            first = "epoch"  # refused below, as for Keras's `on_epoch_end(epoch, logs)`
        if first in _FOREIGN_ARGUMENTS:
            raise TypeError(
                f"{owner}.{event.value}{signature} does not take what kiln passes: "
                f"`{event.value}(trainer)`, the trainer alone. Take it and read the rest from "
                "it: `trainer.state.epoch`, `trainer.state.logs`, `trainer.state.batch`, "
                "`trainer.state.output`."
            )


def call_hook(callbacks: Iterable[Any], name: str, trainer: Trainer) -> None:
    """Call `name(trainer)` on each callback that has such a method, in order.

    For hooks that a callback offers to the others (`TrainingPlot`'s `on_plot`), which are not
    events of the loop. An exception keeps its type and gains a note naming the callback.
    """
    for callback in callbacks:
        method = getattr(callback, name, None)
        if not callable(method):
            continue
        try:
            method(trainer)
        except Exception as error:
            if hasattr(error, "add_note"):  # Python 3.11+
                error.add_note(f"(raised in {type(callback).__name__}.{name})")
            raise


class CallbackList:
    """The callbacks of a trainer, called in list order at each event.

    Only the methods a callback overrides are called, so an event no callback uses costs one
    dict lookup. The methods are looked up here, once: on the class, and on the instance
    (`callback.on_epoch_end = fn` before the callbacks are given to the trainer). An exception
    raised in a callback keeps its type and gains a note naming the callback and the event.

    Args:
        callbacks: Objects with `on_<event>(trainer)` methods, usually `kiln.Callback`
            subclasses; any object with such methods works.

    Raises:
        TypeError: For an object with no such method, a method named after another library's
            event (`on_train_begin`), or one that does not take the trainer alone.

    Example:
        >>> from kiln.callbacks.dispatch import CallbackList
        >>> from kiln.events import Event
        >>> CallbackList([]).uses(Event.TRAIN_BATCH_END)
        False
    """

    def __init__(self, callbacks: Iterable[Any] = ()) -> None:
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            check_callback(callback)
        self._methods: dict[Event, list[tuple[Any, Callable[[Trainer], None]]]] = {
            event: [
                (cb, method)
                for cb in self.callbacks
                if (method := own_method(cb, event)) is not None
            ]
            for event in Event
        }

    def uses(self, event: Event) -> bool:
        """Tell whether any callback listens to `event`."""
        return bool(self._methods[event])

    def __call__(self, event: Event, trainer: Trainer) -> None:
        """Call every callback's method for `event`."""
        for callback, method in self._methods[event]:
            try:
                method(trainer)
            except Exception as error:
                if hasattr(error, "add_note"):  # Python 3.11+
                    error.add_note(f"(raised in {type(callback).__name__}.{event.value})")
                raise

    def __iter__(self) -> Any:
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)
