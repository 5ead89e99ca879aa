"""What the ranks run in `test_ddp_buffers.py`: a model with BatchNorm, trained with validation.

`run(options)` trains `make_model()` on the data of `script.py` (40 samples, 8 a rank: the
last batch of an epoch, 4 samples, differs on each rank, and so do the running statistics it
leaves) and writes this rank's buffers, weights and history to `out/rank{r}.pt`.

Options (a dict): `out` (required), `epochs`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

import kiln
from tests.distributed import script


def make_model() -> nn.Module:
    """A small MLP with a BatchNorm1d, whose running statistics are buffers."""
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def run(options: dict[str, Any]) -> None:
    """Train with validation; write this rank's final state to `out/rank{r}.pt`."""
    torch.set_num_threads(1)
    kiln.seed_everything(0)
    rank = int(os.environ.get("RANK", "0"))
    train, val = script.make_data({"batch_size": 8})
    trainer = kiln.Trainer(make_model(), loss="cross_entropy", device="cpu", progress=False)
    trainer.fit(train, val=val, epochs=options.get("epochs", 2))
    result = {
        "buffers": {key: value.clone() for key, value in trainer.model.named_buffers()},
        "weights": {key: value.clone() for key, value in trainer.model.state_dict().items()},
        "history": [
            {key: value for key, value in row.items() if key != "time"}
            for row in trainer.history.epochs
        ],
    }
    torch.save(result, Path(options["out"]) / f"rank{rank}.pt")
