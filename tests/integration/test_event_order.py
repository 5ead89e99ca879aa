"""The golden event-order test: a whole run's events, compared with a literal list."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

import kiln
from kiln.testing import EventRecorder

# (event, state.epoch, state.step, state.batch_idx) for 2 epochs of 3 training batches and
# 2 validation batches. Counters count completed work.
EXPECTED = [
    ("fit_start", 0, 0, 0),
    ("train_epoch_start", 0, 0, 0),
    ("train_batch_start", 0, 0, 0),
    ("before_optimizer_step", 0, 0, 0),
    ("train_batch_end", 0, 1, 0),
    ("train_batch_start", 0, 1, 1),
    ("before_optimizer_step", 0, 1, 1),
    ("train_batch_end", 0, 2, 1),
    ("train_batch_start", 0, 2, 2),
    ("before_optimizer_step", 0, 2, 2),
    ("train_batch_end", 0, 3, 2),
    ("train_epoch_end", 1, 3, 2),
    ("validation_start", 1, 3, 2),
    ("validation_batch_end", 1, 3, 0),
    ("validation_batch_end", 1, 3, 1),
    ("validation_end", 1, 3, 1),
    ("epoch_end", 1, 3, 1),
    ("train_epoch_start", 1, 3, 0),
    ("train_batch_start", 1, 3, 0),
    ("before_optimizer_step", 1, 3, 0),
    ("train_batch_end", 1, 4, 0),
    ("train_batch_start", 1, 4, 1),
    ("before_optimizer_step", 1, 4, 1),
    ("train_batch_end", 1, 5, 1),
    ("train_batch_start", 1, 5, 2),
    ("before_optimizer_step", 1, 5, 2),
    ("train_batch_end", 1, 6, 2),
    ("train_epoch_end", 2, 6, 2),
    ("validation_start", 2, 6, 2),
    ("validation_batch_end", 2, 6, 0),
    ("validation_batch_end", 2, 6, 1),
    ("validation_end", 2, 6, 1),
    ("epoch_end", 2, 6, 1),
    ("fit_end", 2, 6, 1),
]


def test_event_order_of_a_two_epoch_run_with_validation():
    """Every event fires in the documented order, with the documented counters."""
    recorder = EventRecorder()
    trainer = kiln.Trainer(
        nn.Linear(3, 2), loss="cross_entropy", callbacks=[recorder], device="cpu", progress=False
    )
    train = kiln.Data((torch.randn(6, 3), torch.randint(0, 2, (6,))), batch_size=2)
    val = kiln.Data((torch.randn(4, 3), torch.randint(0, 2, (4,))), batch_size=2)
    trainer.fit(train, val=val, epochs=2)
    assert recorder.events == EXPECTED


def test_event_order_when_a_step_raises():
    """An exception fires EXCEPTION then FIT_END, and reaches the caller."""
    recorder = EventRecorder()

    class Failing(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ArithmeticError("broken model")

    trainer = kiln.Trainer(
        nn.Sequential(nn.Linear(3, 2), Failing()),
        loss="mse",
        callbacks=[recorder],
        device="cpu",
        progress=False,
    )
    with contextlib.suppress(ArithmeticError):
        trainer.fit((torch.randn(4, 3), torch.randn(4, 2)), epochs=1)
    names = [name for name, *_ in recorder.events]
    assert names == ["fit_start", "train_epoch_start", "train_batch_start", "exception", "fit_end"]
