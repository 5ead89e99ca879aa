"""Resuming from a checkpoint saved in the middle of an epoch equals the uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import kiln
from kiln.callbacks import StepCheckpoint
from tests.helpers import CrashAtStep, SimulatedCrashError


class NoisyDataset(Dataset):
    """Draws a random augmentation from torch's global generator for every sample."""

    def __init__(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        self.X, self.Y = X, Y

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.X[index] + 0.1 * torch.randn(self.X.shape[1]), self.Y[index]


class ScoringNet(nn.Module):
    """Logs a score beside the loss, so the epoch's logged values are resumed too."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        output = self(x)
        loss = nn.functional.cross_entropy(output, y)
        return {
            "loss": loss,
            "score": (output.argmax(1) == y).float().mean(),
            "output": output,
            "target": y,
        }


def make_run(directory: Path, data_kind: str, crash_at: int | None, every: int):
    kiln.seed_everything(0)
    X = torch.randn(80, 4)
    Y = (X.sum(1) > 0).long()
    callbacks = [
        kiln.callbacks.EarlyStopping(patience=20),
        CrashAtStep(crash_at),
        StepCheckpoint(every_n_steps=every),
    ]
    if data_kind == "data":
        net, loss, data = (
            nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2)),
            "cross_entropy",
            kiln.Data((X, Y), batch_size=16, shuffle=True),
        )
        val = (X[:16], Y[:16])
    else:
        net, loss = ScoringNet(), None
        data = DataLoader(NoisyDataset(X, Y), batch_size=16, shuffle=True)
        val = DataLoader(NoisyDataset(X[:16], Y[:16]), batch_size=8)
    trainer = kiln.Trainer(
        net,
        loss=loss,
        metrics=["accuracy"],
        callbacks=callbacks,
        dir=directory,
        device="cpu",
        progress=False,
    )
    return trainer, data, val


def without_time(history: kiln.History) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "time"} for row in history.epochs]


@pytest.mark.parametrize("data_kind", ["data", "loader"])
@pytest.mark.parametrize(("every", "crash_at"), [(3, 7), (2, 5), (5, 10)])
def test_resume_mid_epoch_is_bitwise_identical(tmp_path, data_kind, every, crash_at):
    """Crash between step checkpoints (5 steps an epoch), resume: same weights, logs, losses."""
    straight, data, val = make_run(tmp_path / "straight", data_kind, None, every)
    straight.fit(data, val=val, epochs=4)

    crashed, data, val = make_run(tmp_path / "resumed", data_kind, crash_at, every)
    with pytest.raises(SimulatedCrashError):
        crashed.fit(data, val=val, epochs=4, resume=True)
    resumed, data, val = make_run(tmp_path / "resumed", data_kind, None, every)
    history = resumed.fit(data, val=val, epochs=4, resume=True)

    assert resumed.state.resumed
    assert resumed.state.step == straight.state.step == 20
    assert resumed.state.samples == straight.state.samples
    assert without_time(history) == without_time(straight.history)
    assert history.batch_losses == straight.history.batch_losses
    for ours, theirs in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_a_pending_position_is_cleared_by_the_epoch_it_resumes(tmp_path):
    """After the resumed epoch, later epochs start from their first batch again."""
    crashed, data, val = make_run(tmp_path / "run", "data", 7, 3)
    with pytest.raises(SimulatedCrashError):
        crashed.fit(data, val=val, epochs=3)
    resumed, data, val = make_run(tmp_path / "run", "data", None, 3)
    resumed.fit(data, val=val, epochs=3, resume=True)
    assert resumed._position.pending is None
    assert len(resumed.history.batch_losses) == 15


def test_loader_shorter_than_the_saved_position_is_refused(tmp_path):
    """Data that now yields fewer batches than were done cannot continue the same epoch."""
    crashed, data, val = make_run(tmp_path / "run", "loader", 4, 3)
    with pytest.raises(SimulatedCrashError):
        crashed.fit(data, val=val, epochs=2)
    resumed, data, val = make_run(tmp_path / "run", "loader", None, 3)
    short = DataLoader(data.dataset, batch_size=40)  # 2 batches, the checkpoint is after 3
    with pytest.raises(
        ValueError, match="inside an epoch of 5 batches, but the training data now makes 2"
    ):
        resumed.fit(short, val=val, epochs=2, resume=True)


def test_step_checkpoint_every_seconds_saves_during_the_epoch(tmp_path, monkeypatch):
    """With a clock that passes the interval at every step, every step saves."""
    clock = iter(range(0, 10_000, 10))
    monkeypatch.setattr("kiln.callbacks.step_checkpoint.time.monotonic", lambda: next(clock))
    saves = []
    monkeypatch.setattr(
        "kiln.callbacks.step_checkpoint.checkpoints.save_last",
        lambda trainer, directory: saves.append(trainer.state.step),
    )
    trainer = kiln.Trainer(
        nn.Linear(2, 2),
        loss="cross_entropy",
        callbacks=[StepCheckpoint(every_seconds=5)],
        dir=tmp_path,
        device="cpu",
        progress=False,
    )
    trainer.fit((torch.randn(8, 2), torch.zeros(8, dtype=torch.long)), batch_size=2)
    assert saves == [1, 2, 3, 4, 4]  # and the trainer's own save at the end of the epoch


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs `every_n_steps` or `every_seconds`"),
        ({"every_n_steps": 0}, "`every_n_steps` must be a positive integer; received 0"),
        ({"every_n_steps": True}, "`every_n_steps` must be a positive integer; received True"),
        ({"every_seconds": -1}, "`every_seconds` must be a positive number; received -1"),
    ],
)
def test_step_checkpoint_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StepCheckpoint(**kwargs)


def test_step_checkpoint_needs_a_directory():
    trainer = kiln.Trainer(
        nn.Linear(2, 2),
        loss="cross_entropy",
        callbacks=[StepCheckpoint(every_n_steps=1)],
        device="cpu",
        progress=False,
    )
    with pytest.raises(ValueError, match=r"has none: create it with `Trainer\(\.\.\., dir="):
        trainer.fit((torch.randn(4, 2), torch.zeros(4, dtype=torch.long)))
    assert trainer.state.step == 0


def test_metric_without_state_dict_is_named_at_a_mid_epoch_save(tmp_path):
    """A custom metric object that cannot save its sums stops the save with a clear error."""

    class Plain:
        name = "plain"

        def reset(self) -> None:
            pass

        def update(self, output, target) -> None:
            pass

        def compute(self) -> float:
            return 0.0

    trainer = kiln.Trainer(
        nn.Linear(2, 2),
        loss="cross_entropy",
        metrics=[Plain()],
        callbacks=[StepCheckpoint(every_n_steps=1)],
        dir=tmp_path,
        device="cpu",
        progress=False,
    )
    with pytest.raises(TypeError, match="must save the metric .* has no `state_dict\\(\\)`"):
        trainer.fit((torch.randn(4, 2), torch.zeros(4, dtype=torch.long)))
