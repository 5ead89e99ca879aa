"""Tests of `kiln.loop.tracking` with metrics of every kind, alone and inside whole runs."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

import kiln
from kiln.loop.step_methods import StepOutput
from kiln.loop.tracking import PassTracker
from kiln.metrics import F1, ConfusionMatrix

OUTPUT = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
TARGET = torch.tensor([0, 1, 1])


class Several:
    """A metric whose value is a dict of values (as PyBlaze's and MetricCollection's)."""

    name = "pr"

    def reset(self) -> None:
        self.seen = 0

    def update(self, output, target) -> None:
        self.seen += len(target)

    def compute(self) -> dict[str, torch.Tensor]:
        return {"seen": torch.tensor(float(self.seen)), "half": torch.tensor(self.seen / 2)}


def test_non_scalar_metric_is_kept_aside_not_logged():
    """A confusion matrix is not among the logged floats; `tensors` holds it on the CPU."""
    tracker = PassTracker([F1(), ConfusionMatrix()])
    tracker.update(StepOutput(torch.tensor(1.0), size=3, output=OUTPUT, target=TARGET))
    values = tracker.compute()
    assert set(values) == {"loss", "f1"}
    assert torch.equal(tracker.tensors["confusion_matrix"], torch.tensor([[1, 0], [1, 1]]))
    tracker.reset()
    assert tracker.tensors == {}


def test_dict_metric_logged_per_key():
    """A metric returning a dict logs `name_key` for each of its values."""
    tracker = PassTracker([Several()])
    tracker.update(StepOutput(torch.tensor(1.0), size=3, output=OUTPUT, target=TARGET))
    assert tracker.compute() == {"loss": 1.0, "pr_seen": 3.0, "pr_half": 1.5}


def make_run(directory, callbacks=()):
    kiln.seed_everything(0)
    X = torch.randn(90, 4)
    Y = X[:, :3].argmax(1)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    trainer = kiln.Trainer(
        net,
        loss="cross_entropy",
        metrics=["accuracy", "f1", "auroc", "confusion_matrix"],
        callbacks=list(callbacks),
        dir=directory,
        device="cpu",
        progress=False,
    )
    return trainer, kiln.Data((X, Y), batch_size=16, shuffle=True)


def test_whole_set_metrics_in_a_run_with_csv_log(tmp_path):
    """F1 and AUROC are logged per epoch; the confusion matrix breaks neither history nor CSV."""
    trainer, data = make_run(None, [kiln.callbacks.CSVLogger(tmp_path / "log.csv")])
    history = trainer.fit(data, val=0.3, epochs=2)
    for key in ("f1", "val_f1", "auroc", "val_auroc", "val_accuracy"):
        assert len(history[key]) == 2
        assert 0.0 <= history[key][-1] <= 1.0
    assert "confusion_matrix" not in trainer.state.logs
    with open(tmp_path / "log.csv", newline="") as file:
        header = next(csv.reader(file))
    assert "val_f1" in header
    assert not any("confusion" in column for column in header)


class Crash(kiln.Callback):
    """Stops the process-like run with an error after a given step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: kiln.Trainer) -> None:
        if trainer.state.step == self.step:
            raise RuntimeError("crash")


def test_resume_mid_epoch_with_whole_set_metrics_is_bitwise(tmp_path):
    """Interrupted mid-epoch (after a mid-epoch save) and resumed: the same history, bitwise."""
    straight, data = make_run(tmp_path / "straight")
    straight.fit(data, val=0.3, epochs=3)

    saver = kiln.callbacks.StepCheckpoint(every_n_steps=5)
    first, data = make_run(tmp_path / "resumed", [saver, Crash(step=7)])
    with pytest.raises(RuntimeError, match="crash"):
        first.fit(data, val=0.3, epochs=3, resume=True)
    saver = kiln.callbacks.StepCheckpoint(every_n_steps=5)
    second, data = make_run(tmp_path / "resumed", [saver, Crash(step=-1)])
    history = second.fit(data, val=0.3, epochs=3, resume=True)

    assert second.state.resumed
    expected = [{k: v for k, v in row.items() if k != "time"} for row in straight.history.epochs]
    actual = [{k: v for k, v in row.items() if k != "time"} for row in history.epochs]
    assert actual == expected


def test_metrics_keep_outputs_without_their_graph():
    """Outputs with a graph are kept detached by buffered metrics; their value is the same."""
    metric = F1()
    tracker = PassTracker([metric])
    weights = torch.ones(2, requires_grad=True)
    for _ in range(3):
        tracker.update(StepOutput(torch.tensor(1.0), 3, OUTPUT * weights, TARGET))
    assert metric._outputs
    assert not any(output.requires_grad for output in metric._outputs)
    plain = F1()
    for _ in range(3):
        plain.update(OUTPUT, TARGET)
    assert torch.equal(metric.compute(), plain.compute())
