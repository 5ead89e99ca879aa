"""TorchFusion's custom trainer, done the kiln way: subclass Trainer, override the steps."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kiln


class AutoencoderTrainer(kiln.Trainer):
    """Batches are inputs alone; the loss is the reconstruction error; predict encodes."""

    def training_step(self, batch, batch_idx):
        reconstruction = self.model(batch)
        return {
            "loss": F.mse_loss(reconstruction, batch),
            "output": reconstruction,
            "target": batch,
        }

    def validation_step(self, batch, batch_idx):
        result = self.training_step(batch, batch_idx)
        result["worst"] = (result["output"] - batch).abs().max()
        return result

    def predict_step(self, batch, batch_idx):
        return self.model[0](batch)  # the code, not the reconstruction


def test_custom_step_replaces_training_validation_and_prediction():
    """Overriding the three step methods changes what happens to a batch; the loop stays."""
    kiln.seed_everything(0)
    X = torch.randn(128, 6)
    model = nn.Sequential(nn.Linear(6, 3), nn.Linear(3, 6))
    trainer = AutoencoderTrainer(
        model, optimizer="adam", lr=0.02, metrics=["mse"], device="cpu", progress=False
    )
    history = trainer.fit(kiln.Data(X, batch_size=32, shuffle=True), val=kiln.Data(X), epochs=40)
    assert history.loss[-1] < history.loss[0] / 2
    assert history.mse[-1] == pytest.approx(history.loss[-1], rel=1e-5)
    assert "val_worst" in history
    assert trainer.predict(X).shape == (128, 3)
