"""Tests of `kiln.callbacks.TensorBoard`, read back with TensorBoard's own reader."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import kiln
from kiln.callbacks.lr_monitor import LRMonitor
from kiln.callbacks.tensorboard import BATCH, TensorBoard
from kiln.loop.step_methods import StepOutput
from kiln.state import TrainState
from tests.callbacks.runs import fit, make_trainer

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing import (
    event_accumulator,
    event_file_loader,
    plugin_event_accumulator,
)
from tensorboard.plugins.hparams import plugin_data_pb2

#: Batches of the shared run: 24 training samples in batches of 8 -> 5 batches an epoch.
SIZES = [8, 8, 8, 8, 4]


class SimulatedKillError(Exception):
    """Stands for the process being killed."""


class KillAtEpochEnd(kiln.Callback):
    """Raise at the end of `epoch`, after the loggers before it wrote, before the checkpoint."""

    def __init__(self, epoch: int | None = None) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer: kiln.Trainer) -> None:
        if trainer.state.epoch == self.epoch:
            raise SimulatedKillError


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of one run directory as TensorBoard shows it (purged events dropped)."""
    reader = event_accumulator.EventAccumulator(str(run))
    reader.Reload()
    return {
        tag: [(event.step, event.value) for event in reader.Scalars(tag)]
        for tag in reader.Tags()["scalars"]
    }


def f32(values: list[float]) -> list[float]:
    """Event files hold float32: the logged values as TensorBoard stores them."""
    return torch.tensor(values, dtype=torch.float32).tolist()


def next_second() -> None:
    """Event file names start with the second they were made in; make the next file sort later."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)


def test_epoch_values_read_back_equal_the_history(tmp_path):
    """`train` and `validation` runs share the `epoch_<name>` tags, at step = epoch."""
    history = fit(make_trainer([TensorBoard()], tmp_path))
    train = scalars(tmp_path / "tensorboard" / "train")
    validation = scalars(tmp_path / "tensorboard" / "validation")
    assert sorted(train) == ["epoch_accuracy", "epoch_loss", "epoch_lr", "epoch_time"]
    assert sorted(validation) == ["epoch_accuracy", "epoch_loss"]
    for name in ("loss", "accuracy", "lr", "time"):
        assert train[f"epoch_{name}"] == list(zip([1, 2, 3], f32(history[name]), strict=True))
    for name in ("loss", "accuracy"):
        expected = list(zip([1, 2, 3], f32(history[f"val_{name}"]), strict=True))
        assert validation[f"epoch_{name}"] == expected
    assert not (tmp_path / "tensorboard" / BATCH).exists()


def test_batch_loss_is_the_weighted_mean_of_each_interval(tmp_path):
    """Every 2 steps, across epoch ends; with LRMonitor per step, `batch_lr` too."""
    callbacks = [LRMonitor(interval="step"), TensorBoard(batch_interval=2)]
    history = fit(make_trainer(callbacks, tmp_path))
    losses, sizes = history.batch_losses, SIZES * 3
    expected = [
        (losses[i] * sizes[i] + losses[i + 1] * sizes[i + 1]) / (sizes[i] + sizes[i + 1])
        for i in range(0, 14, 2)
    ]
    batch = scalars(tmp_path / "tensorboard" / BATCH)
    assert [step for step, _ in batch["batch_loss"]] == [2, 4, 6, 8, 10, 12, 14]
    assert [value for _, value in batch["batch_loss"]] == pytest.approx(expected, rel=1e-6)
    assert batch["batch_lr"] == [(step, pytest.approx(1e-3)) for step in range(2, 15, 2)]


def test_batch_interval_one_writes_every_step_loss(tmp_path):
    history = fit(make_trainer([TensorBoard(batch_interval=1)], tmp_path), epochs=2)
    batch = scalars(tmp_path / "tensorboard" / BATCH)
    assert batch["batch_loss"] == list(zip(range(1, 11), f32(history.batch_losses), strict=True))


def test_with_gradient_accumulation_a_point_covers_the_batches_of_its_steps(tmp_path):
    """Two batches a step (5 batches: steps of 2, 2 and 1): one point per step, not per batch."""
    trainer = kiln.Trainer(torch.nn.Linear(3, 2), loss="cross_entropy", accumulate=2,
                           callbacks=[TensorBoard(batch_interval=1)], device="cpu",
                           progress=False, dir=tmp_path)  # fmt: skip
    history = fit(trainer, epochs=2)
    losses, groups = history.batch_losses, [(0, 2), (2, 4), (4, 5)] * 2
    sizes = SIZES * 2
    expected = [
        sum(losses[5 * (n // 3) + i] * sizes[i] for i in range(a, b)) / sum(sizes[a:b])
        for n, (a, b) in enumerate(groups)
    ]
    batch = scalars(tmp_path / "tensorboard" / BATCH)["batch_loss"]
    assert [step for step, _ in batch] == [1, 2, 3, 4, 5, 6]
    assert [value for _, value in batch] == pytest.approx(expected, rel=1e-6)


def test_the_device_is_read_once_per_interval():
    """Losses stay on the device until the interval ends: one read for 5 steps."""
    reads = []

    class Loss(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if func in (torch.Tensor.cpu, torch.Tensor.item, torch.Tensor.tolist):
                reads.append(func)
            return super().__torch_function__(func, types, args, kwargs or {})

    written = []
    logger = TensorBoard(batch_interval=5)
    logger._writers = {BATCH: SimpleNamespace(add_scalar=lambda *a: written.append(a))}
    trainer = SimpleNamespace(state=TrainState())
    for step in range(1, 11):
        trainer.state.step = step
        trainer.state.output = StepOutput(torch.tensor(float(step)).as_subclass(Loss), size=2)
        logger.on_train_batch_end(trainer)
        assert len(reads) == step // 5
    assert written == [("batch_loss", 3.0, 5), ("batch_loss", 8.0, 10)]


def test_hparams_hold_the_run_and_the_final_values(tmp_path):
    logger = TensorBoard(hparams={"dropout": 0.1, "note": "baseline"})
    history = fit(make_trainer([logger], tmp_path), epochs=2)
    run = tmp_path / "tensorboard" / "hparams"
    reader = plugin_event_accumulator.EventAccumulator(str(run))
    reader.Reload()
    content = reader.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    values = {name: value.WhichOneof("kind") for name, value in start.hparams.items()}
    assert set(values) == {
        *("dropout", "note", "model", "parameters", "loss"),
        *("optimizer", "lr", "batch_size", "epochs"),
    }
    assert start.hparams["note"].string_value == "baseline"
    assert start.hparams["optimizer"].string_value == "Adam"
    assert start.hparams["batch_size"].number_value == 8
    assert start.hparams["epochs"].number_value == 2
    final = scalars(run)
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert final[name] == [(0, f32([history[name][-1]])[0])]


def test_resume_drops_the_events_written_after_the_checkpoint(tmp_path):
    """Killed after epoch 3 was written but not saved: TensorBoard shows each epoch once."""
    logger = TensorBoard(batch_interval=3)
    with pytest.raises(SimulatedKillError):
        fit(make_trainer([logger, KillAtEpochEnd(3)], tmp_path), epochs=4)
    next_second()
    resumed = make_trainer([TensorBoard(batch_interval=3), KillAtEpochEnd()], tmp_path)
    history = fit(resumed, epochs=4, resume=True)
    train = scalars(tmp_path / "tensorboard" / "train")
    assert train["epoch_loss"] == list(zip([1, 2, 3, 4], f32(history.loss), strict=True))
    steps = [step for step, _ in scalars(tmp_path / "tensorboard" / BATCH)["batch_loss"]]
    assert steps == [3, 6, 9, 12, 15, 18]
    # The files do hold epoch 3 twice: the reader drops the first through the purge step.
    written = [
        event.step
        for path in sorted((tmp_path / "tensorboard" / "train").iterdir())
        for event in event_file_loader.EventFileLoader(str(path)).Load()
        if any(value.tag == "epoch_loss" for value in event.summary.value)
    ]
    assert written == [1, 2, 3, 3, 4]


def test_an_interval_cut_by_the_checkpoint_resumes_with_its_losses(tmp_path):
    """Step 10 ends epoch 2 inside the interval 10-12: its loss is saved with the checkpoint."""
    with pytest.raises(SimulatedKillError):
        fit(make_trainer([TensorBoard(batch_interval=3), KillAtEpochEnd(3)], tmp_path), epochs=4)
    next_second()
    resumed = make_trainer([TensorBoard(batch_interval=3), KillAtEpochEnd()], tmp_path)
    history = fit(resumed, epochs=4, resume=True)
    losses, sizes = history.batch_losses, SIZES * 4
    expected = [
        sum(losses[i] * sizes[i] for i in range(end - 3, end)) / sum(sizes[end - 3 : end])
        for end in range(3, 21, 3)
    ]
    batch = scalars(tmp_path / "tensorboard" / BATCH)["batch_loss"]
    assert [value for _, value in batch] == pytest.approx(expected, rel=1e-6)


def test_a_new_run_in_the_same_directory_hides_the_old_one(tmp_path):
    fit(make_trainer([TensorBoard()], tmp_path), epochs=3)
    next_second()
    again = make_trainer([TensorBoard()], tmp_path)
    again.overwrite = True  # a new run over the saved one, on purpose
    history = fit(again, epochs=2)
    train = scalars(tmp_path / "tensorboard" / "train")
    assert train["epoch_loss"] == list(zip([1, 2], f32(history.loss), strict=True))


def test_bad_arguments():
    with pytest.raises(TypeError, match=r"`log_dir` must be a directory name or path.*None"):
        TensorBoard(log_dir=None)
    with pytest.raises(TypeError, match=r"`batch_interval` must be an int or None; received 2.0"):
        TensorBoard(batch_interval=2.0)
    with pytest.raises(ValueError, match=r"`batch_interval` must be a positive .* received 0"):
        TensorBoard(batch_interval=0)
    with pytest.raises(TypeError, match=r"`hparams` must be a dict .* received list"):
        TensorBoard(hparams=["lr"])
    with pytest.raises(TypeError, match=r"received 'layers': \[1, 2\] \(list\)"):
        TensorBoard(hparams={"layers": [1, 2]})


def test_missing_tensorboard_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    trainer = make_trainer([TensorBoard()], tmp_path)
    with pytest.raises(ImportError, match=r"pip install 'kiln\[tensorboard\]'"):
        fit(trainer, epochs=1)
