"""Calling callbacks: only the methods they override, with errors that name the callback."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from kiln.callbacks.base import Callback
from kiln.events import Event

if TYPE_CHECKING:
    from kiln.trainer import Trainer


def overrides(callback: Any, event: Event) -> bool:
    """Tell whether `callback` has its own code for `event` (not `Callback`'s no-op)."""
    method = getattr(type(callback), event.value, None)
    return callable(method) and method is not getattr(Callback, event.value, None)


class CallbackList:
    """The callbacks of a trainer, called in list order at each event.

    Only the methods a callback overrides are called, so an event no callback uses costs one
    dict lookup. An exception raised in a callback keeps its type and gains a note naming the
    callback and the event.

    Args:
        callbacks: Objects with `on_<event>(trainer)` methods, usually `kiln.Callback`
            subclasses; any object with such methods works.

    Example:
        >>> from kiln.callbacks.dispatch import CallbackList
        >>> from kiln.events import Event
        >>> CallbackList([]).uses(Event.TRAIN_BATCH_END)
        False
    """

    def __init__(self, callbacks: Iterable[Any] = ()) -> None:
        self.callbacks = list(callbacks)
        for callback in self.callbacks:
            if not any(callable(getattr(callback, event.value, None)) for event in Event):
                raise TypeError(
                    f"{type(callback).__name__} is not a callback: it has no `on_<event>` "
                    "method. Subclass kiln.Callback and override the events you need."
                )
        self._methods: dict[Event, list[tuple[Any, Callable[[Trainer], None]]]] = {
            event: [(cb, getattr(cb, event.value)) for cb in self.callbacks if overrides(cb, event)]
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
