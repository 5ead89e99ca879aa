"""Tests of `kiln.Event`: the naming invariant and its documentation."""

from __future__ import annotations

import pytest

import kiln
from kiln.events import BATCH_EVENTS, Event


@pytest.mark.parametrize("event", list(Event))
def test_event_value_is_the_callback_method_name(event: Event):
    """Each event's value is `on_` plus its lower-cased name, a method of Callback."""
    assert event.value == "on_" + event.name.lower()
    assert callable(getattr(kiln.Callback, event.value))


@pytest.mark.parametrize("event", list(Event))
def test_event_appears_in_the_loop_docstring(event: Event):
    """The Event docstring (the loop in pseudocode) marks where every event fires."""
    assert event.name in (Event.__doc__ or "")


def test_batch_events_are_the_per_batch_ones():
    """The per-batch events are exactly those fired inside the batch loops."""
    assert {event.name for event in BATCH_EVENTS} == {
        "TRAIN_BATCH_START",
        "BEFORE_OPTIMIZER_STEP",
        "TRAIN_BATCH_END",
        "VALIDATION_BATCH_END",
    }
