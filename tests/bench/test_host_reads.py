"""Tests of bench/host_reads.py: the count of host reads (device synchronisations) by callbacks.

They check kiln's promise that no logger reads a device tensor more than once per logging
interval, and that the counter itself sees a read where there is one and none where there is not.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from host_reads import BATCH_INTERVAL, CHECKS, EPOCHS, HostReads, run_check, watch

import kiln


class EveryStep(kiln.Callback):
    """Reads the loss after every step: what a logger must not do."""

    def on_train_batch_end(self, trainer: kiln.Trainer) -> None:
        float(trainer.state.output.loss.detach())


class HostCopy(kiln.Callback):
    """Copies the loss to the host once per step, then computes and reads from the copy."""

    def on_train_batch_end(self, trainer: kiln.Trainer) -> None:
        host = trainer.state.output.loss.detach().cpu().double()
        sizes = torch.tensor([1.0, 2.0], dtype=torch.float64)
        float((host * sizes).sum() / sizes.sum())


class Conversions(kiln.Callback):
    """At the end of each epoch: a move to the host, then a change of dtype on the device."""

    def on_train_epoch_end(self, trainer: kiln.Trainer) -> None:
        loss = trainer.state.output.loss.detach()
        loss.to(torch.float64)  # stays where it is: no read
        loss.to("cpu")  # a read


def fit_watched(callback: kiln.Callback, epochs: int = 2) -> HostReads:
    """Fit a tiny model for `epochs` of 4 steps with `callback` watched; return its reads."""
    reads = watch(callback)
    trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu", progress=False,
                           callbacks=[reads.callback])  # fmt: skip
    trainer.fit((torch.randn(16, 2), torch.randn(16, 1)), epochs=epochs, batch_size=4)
    return reads


def test_a_read_per_step_is_counted_at_every_step() -> None:
    reads = fit_watched(EveryStep())
    assert reads.steps == [1, 2, 3, 4, 5, 6, 7, 8]
    assert reads.per_interval(4) == 4  # an epoch holds four reads: the check would fail
    assert reads.per_interval(1) == 1


def test_reading_a_host_copy_again_is_not_counted() -> None:
    reads = fit_watched(HostCopy(), epochs=1)
    assert reads.steps == [1, 2, 3, 4]  # the `.cpu()` of each step, not the `float` after it


def test_moves_to_the_host_count_and_dtype_changes_do_not() -> None:
    reads = fit_watched(Conversions())
    assert reads.steps == [4, 8]


def test_the_trainers_own_reads_are_not_counted() -> None:
    # On the CPU the trainer reads every loss to check that it is finite; the watched callback
    # (which reads nothing) is charged none of those reads.
    reads = fit_watched(kiln.callbacks.LRMonitor())
    assert reads.steps == []


def test_per_interval_counts_the_reads_of_the_busiest_interval() -> None:
    reads = HostReads(callback=None, steps=[0, 4, 8, 8, 9])
    assert reads.per_interval(4) == 2  # steps 5 to 8 (and what ran right after step 8)
    assert reads.per_interval(100) == 4
    assert HostReads(callback=None).per_interval(4) == 0


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.label)
def test_no_logger_reads_the_device_more_than_once_per_interval(
    check, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if check.needs:
        pytest.importorskip(check.needs)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    reads, per_epoch = run_check(check, tmp_path)
    interval = int(check.interval) if check.interval.isdigit() else per_epoch
    assert reads.per_interval(interval) <= 1, reads.steps
    steps = per_epoch * EPOCHS
    if "batch_granularity" in check.label:  # a row per step, as asked: one read per step
        assert len(reads.steps) == steps
    elif "batch_interval" in check.label:  # the mean loss of each interval, read once
        assert reads.steps == list(range(BATCH_INTERVAL, steps + 1, BATCH_INTERVAL))
    else:  # epoch values are numbers already: nothing to read
        assert reads.steps == []
