"""Small runs that callback tests share: a trainer, its data, a weights recorder, a crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

import kiln


class Interrupt(kiln.Callback):
    """Raises before epoch `at` + 1 trains: a crash after `at` epochs were saved."""

    def __init__(self, at: int | None) -> None:
        self.at = at

    def on_train_epoch_start(self, trainer: kiln.Trainer) -> None:
        if trainer.state.epoch == self.at:
            raise RuntimeError("interrupted")


def make_trainer(callbacks: list[kiln.Callback], directory: Path | None) -> kiln.Trainer:
    """A linear two-class classifier with accuracy, on the CPU, without a progress bar."""
    return kiln.Trainer(
        nn.Linear(3, 2),
        loss="cross_entropy",
        metrics=["accuracy"],
        callbacks=callbacks,
        device="cpu",
        progress=False,
        dir=directory,
    )


def fit(trainer: kiln.Trainer, epochs: int = 3, resume: bool = False) -> kiln.History:
    """Fit 36 fixed random samples (validating on 12 of them) in batches of 8."""
    generator = torch.Generator().manual_seed(1)
    X, Y = torch.randn(36, 3, generator=generator), torch.randint(0, 2, (36,), generator=generator)
    return trainer.fit((X, Y), val=(X[:12], Y[:12]), epochs=epochs, resume=resume, batch_size=8)


class Snapshots(kiln.Callback):
    """Keeps a copy of the model's weights after every epoch."""

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []

    def on_epoch_end(self, trainer: kiln.Trainer) -> None:
        self.weights.append({k: v.clone() for k, v in trainer.model.state_dict().items()})


class QuNetStyle(nn.Module):
    """A model defining its own step, returning a loss and a score (logged as val_score)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        return {"loss": loss, "score": 1 / (1 + loss.detach())}  # higher is better
