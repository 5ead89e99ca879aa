"""Resuming mid-epoch equals the uninterrupted run with the loop's options on: accumulation
(saved in the middle of a group), bf16, repeated passes, skipped batches, the fp16 scaler."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import kiln
from kiln.callbacks import StepCheckpoint
from kiln.loop import optimizer_step
from tests.helpers import without_plots


class SimulatedCrashError(Exception):
    """Stands for the process dying."""


class CrashAtBatch(kiln.Callback):
    """Dies after `count` training batches of the run (not steps: with accumulation, mid-group)."""

    def __init__(self, count: int | None) -> None:
        self.count, self.seen = count, 0

    def on_train_batch_end(self, trainer: kiln.Trainer) -> None:
        self.seen += 1
        if self.seen == self.count:
            raise SimulatedCrashError


class PoisonSome(nn.Module):
    """With `poison`, a NaN output on batches whose first input is below -1.2 (to be skipped)."""

    def __init__(self, poison: bool) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
        self.poison = poison

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out * float("nan") if self.poison and self.training and x[0, 0] < -1.2 else out


def make_run(directory: Path, crash_at: int | None, options: dict, loader: bool = False):
    kiln.seed_everything(0)
    X = torch.randn(70, 4)
    Y = (X.sum(1) > 0).long()
    trainer = kiln.Trainer(
        PoisonSome(poison=options.get("nonfinite") == "skip"),
        loss="cross_entropy",
        metrics=["accuracy"],
        callbacks=[CrashAtBatch(crash_at), StepCheckpoint(every_n_steps=1)],
        dir=directory,
        device="cpu",
        progress=False,
        **options,
    )
    without_plots(trainer)
    data = (
        DataLoader(TensorDataset(X, Y), batch_size=10, shuffle=True)
        if loader
        else kiln.Data((X, Y), batch_size=10, shuffle=True)
    )
    return trainer, data, (X[:20], Y[:20])


CASES = {
    "accumulate, crash mid-group": ({"accumulate": 3}, {}, 5, False),
    "accumulate, loader": ({"accumulate": 3}, {}, 8, True),
    "bf16 and clipping": ({"precision": "bf16", "clip_norm": 0.5}, {}, 9, False),
    "repeated passes": ({}, {"repeat": 2}, 10, False),
    "repeated passes, loader": ({"accumulate": 2}, {"repeat": 2}, 11, True),
    "skipped batches": ({"nonfinite": "skip"}, {}, 9, False),
}


@pytest.mark.filterwarnings("ignore:.*were skipped:RuntimeWarning")
@pytest.mark.parametrize("case", CASES)
def test_resume_with_options_is_bitwise_identical(tmp_path, case):
    options, data_options, crash_at, loader = CASES[case]
    times = data_options.get("repeat", 1)
    straight, data, val = make_run(tmp_path / "straight", None, options, loader)
    straight.fit(kiln.repeat(data, times), val=val, epochs=2)

    crashed, data, val = make_run(tmp_path / "resumed", crash_at, options, loader)
    with pytest.raises(SimulatedCrashError):
        crashed.fit(kiln.repeat(data, times), val=val, epochs=2)
    resumed, data, val = make_run(tmp_path / "resumed", None, options, loader)
    history = resumed.fit(kiln.repeat(data, times), val=val, epochs=2, resume=True)

    assert resumed.state.step == straight.state.step
    assert resumed.state.samples == straight.state.samples
    assert resumed.state.skipped_batches == straight.state.skipped_batches
    rows = [{k: v for k, v in row.items() if k != "time"} for row in history.epochs]
    assert rows == [
        {k: v for k, v in row.items() if k != "time"} for row in straight.history.epochs
    ]
    assert history.batch_losses == straight.history.batch_losses
    for ours, theirs in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_skipped_batches_were_really_skipped(tmp_path):
    trainer, data, val = make_run(tmp_path, None, {"nonfinite": "skip"})
    with pytest.warns(RuntimeWarning, match="were skipped"):
        trainer.fit(data, val=val, epochs=2)
    assert trainer.state.skipped_batches > 0


def test_resume_with_the_fp16_scaler_path_is_bitwise_identical(tmp_path, monkeypatch):
    monkeypatch.setattr(
        optimizer_step,
        "grad_scaler",
        lambda precision, device: torch.amp.GradScaler("cpu", init_scale=2.0**6, growth_interval=3),
    )
    options = {"accumulate": 2}
    straight, data, val = make_run(tmp_path / "straight", None, options)
    straight.fit(data, val=val, epochs=2)
    crashed, data, val = make_run(tmp_path / "resumed", 9, options)
    with pytest.raises(SimulatedCrashError):
        crashed.fit(data, val=val, epochs=2)
    resumed, data, val = make_run(tmp_path / "resumed", None, options)
    resumed.fit(data, val=val, epochs=2, resume=True)
    assert resumed._stepper.scaler.get_scale() == straight._stepper.scaler.get_scale() > 2.0**6
    for ours, theirs in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)
