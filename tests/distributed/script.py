"""One training run, written as a user would: the same file in one process and under torchrun.

`python -m torch.distributed.run --nproc-per-node 2 script.py '<json options>'` runs it on two
gloo processes; the tests also call `run` in their own process (one process) and in forked
processes (a fast two-rank group). Each rank writes what it ended with to `out/rank{r}.pt`, in a
directory of the test's, apart from the experiment directory whose files the test inspects.

Options (a JSON object): `out` (required), `dir` (the experiment directory, or null),
`batch_size`, `epochs`, `data` ("data" for a kiln.Data, "loader" for a shuffled DataLoader),
`model` ("net" or "step": a model with its own `training_step`), `dropout`, `resume`,
`step_checkpoint` (every N steps), `raise_at_step` / `kill_at_step` with `fault_rank` (the kill
only on the first attempt of torchrun's restarts).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import DataLoader, TensorDataset

import kiln


class StepNet(nn.Module):
    """A model that defines its own step and calls `self(x)` in it (Lightning's trap for DDP)."""

    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(dropout), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def training_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        x, y = batch
        output = self(x)
        return {"loss": functional.cross_entropy(output, y), "output": output, "target": y}


class Fault(kiln.Callback):
    """Raise, or kill this process, on one rank at one step (to test what the others do)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    def on_train_batch_end(self, trainer: kiln.Trainer) -> None:
        options, step = self.options, trainer.state.step
        if int(os.environ.get("RANK", "0")) != options.get("fault_rank", 1):
            return
        if step == options.get("raise_at_step"):
            raise RuntimeError(f"boom on rank {os.environ.get('RANK')} at step {step}")
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if step == options.get("kill_at_step") and first_attempt:
            os.kill(os.getpid(), signal.SIGKILL)


def make_data(options: dict[str, Any]) -> tuple[Any, Any]:
    """40 training samples (a partial last batch of 8 at a global batch of 16), 21 validation."""
    X, Xv = torch.randn(40, 4), torch.randn(21, 4)
    Y, Yv = (X.sum(1) > 0).long(), (Xv.sum(1) > 0).long()
    size = options.get("batch_size", 8)
    if options.get("data", "data") == "loader":
        train: Any = DataLoader(TensorDataset(X, Y), batch_size=size, shuffle=True)
    else:
        # Seed 0 is also the seed kiln gives shuffled loaders after `seed_everything(0)`.
        train = kiln.Data((X, Y), batch_size=size, shuffle=True, seed=0)
    return train, kiln.Data((Xv, Yv), batch_size=size)


def run(options: dict[str, Any]) -> None:
    """Train as the options say; write this rank's final state to `out/rank{r}.pt`."""
    torch.set_num_threads(1)
    kiln.seed_everything(0)
    out = Path(options["out"])
    rank = int(os.environ.get("RANK", "0"))
    train, val = make_data(options)
    dropout = options.get("dropout", 0.0)
    if options.get("model", "net") == "step":
        model: nn.Module = StepNet(dropout)
        loss = None
    else:
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(dropout), nn.Linear(8, 2))
        loss = "cross_entropy"
    with open(out / f"progress{rank}.txt", "w") as progress:  # created by every rank
        train_and_save(options, model, loss, progress, (train, val), out / f"rank{rank}.pt")


def outcome(trainer: kiln.Trainer, val: Any) -> dict[str, Any]:
    """What a rank's run ended with: weights, history, evaluation, counters (compared by tests)."""
    return {
        "world_size": trainer.distributed.world_size,
        # Sharded (fsdp) weights are gathered whole on every rank: one collective each.
        "weights": {
            key: (value.full_tensor() if hasattr(value, "full_tensor") else value).clone()
            for key, value in trainer.model.state_dict().items()
        },
        "history": [
            {key: value for key, value in row.items() if key != "time"}
            for row in trainer.history.epochs
        ],
        "batch_losses": list(trainer.history.batch_losses),
        "evaluation": trainer.evaluate(val).to_dict(),
        "samples": trainer.state.samples,
    }


def train_and_save(
    options: dict[str, Any], model: nn.Module, loss: Any, progress: Any, data: Any, path: Path
) -> None:
    """Train with the logging callbacks (each rank names its own files), then save the end."""
    train, val = data
    rank = path.stem.removeprefix("rank")
    callbacks: list[Any] = [
        kiln.callbacks.ProgressBar(bar=False, file=progress),
        kiln.callbacks.CSVLogger(path.parent / f"log{rank}.csv"),
        Fault(options),
    ]
    if options.get("step_checkpoint"):
        callbacks.append(kiln.callbacks.StepCheckpoint(every_n_steps=options["step_checkpoint"]))
    trainer = kiln.Trainer(
        model,
        loss=loss,
        metrics=["accuracy", "auroc"],
        callbacks=callbacks,
        device="cpu",
        dir=options.get("dir"),
        strategy=options.get("strategy", "ddp"),
    )
    trainer.fit(
        train, val=val, epochs=options.get("epochs", 3), resume=options.get("resume", False)
    )
    result = {
        **outcome(trainer, val),
        "attempt": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
        "sharded": type(trainer.model).__name__.startswith("FSDP"),  # fully_shard's class
    }
    if options.get("save"):
        trainer.save(options["save"])  # every rank calls it; rank 0 writes the whole model
    torch.save(result, path)


if __name__ == "__main__":
    run(json.loads(sys.argv[1]))
