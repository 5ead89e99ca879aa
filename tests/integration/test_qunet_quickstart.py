"""QuNet's quick start (seed 000) redone with kiln: the circle data and a model-defined step."""

from __future__ import annotations

import torch
from torch import nn

import kiln


class Model(nn.Module):
    """The quick start's model: an MLP with a sigmoid output, trained with BCE."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = kiln.MLP(input=2, hidden=[16], output=1, drop=0.1)
        self.loss = nn.BCELoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(x))

    def training_step(self, batch, batch_id):
        x, y_true = batch
        y_pred = self(x)
        loss = self.loss(y_pred, y_true)
        y_pred = y_pred.detach() > 0.5
        acc = (y_pred == y_true.bool()).float().mean()
        return {"loss": loss, "score": acc}


def test_qunet_quickstart_learns_the_circle():
    """The quick start trains to a high validation score, logging score and val_score."""
    kiln.seed_everything(0)
    N = 1200
    X = 2 * torch.rand(N, 2) - 1
    Y = (torch.sum(X**2, axis=1) < 0.5).float().view(-1, 1)
    n_trn = int(N * 0.8)
    data_trn = kiln.Data((X[:n_trn], Y[:n_trn]), batch_size=128, shuffle=True)
    data_val = kiln.Data((X[n_trn:], Y[n_trn:]), batch_size=256)

    model = Model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    trainer = kiln.Trainer(model, optimizer=optimizer, device="cpu", progress=False)
    history = trainer.fit(data_trn, val=data_val, epochs=60)

    assert {"loss", "score", "val_loss", "val_score"} <= set(history.keys())
    assert max(history.val_score) > 0.95
    assert history.val_loss[-1] < history.val_loss[0] / 3
    data_trn.batch_size = 64  # QuNet's habit: changes the batching of the next pass
    assert len(data_trn) == 15
    trainer.fit(data_trn, val=data_val, epochs=1)
    assert trainer.state.step == 60 * 8 + 15
