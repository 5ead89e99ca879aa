"""What the ranks run in `test_ddp_accumulate.py`: accumulation and skipped batches under DDP.

`run(options)` trains the MLP of `script.py` on its data (40 samples: at 8 a rank, or 16 in
one process, 3 batches an epoch, so `accumulate=2` leaves a short last group of one batch) and
writes this rank's end to `out/rank{r}.pt`, with how many times DDP reduced the gradients
(counted by a comm hook) and the skipped batches.

Options (a dict): `out` (required), `batch_size`, `epochs`, `accumulate`, `nonfinite`,
`strategy`, `nan_at` (a list of `[epoch, batch_idx]` whose loss is made NaN) and `nan_rank`
(the rank where it is; every rank when absent, as in one process).
"""

# No `from __future__ import annotations`: DDP checks the comm hook's annotations as objects.
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

import kiln
from tests.distributed import script


class PoisonNet(nn.Module):
    """The MLP of `script.py`, whose output is NaN while `poison` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.0), nn.Linear(8, 2))
        self.poison = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.body(x)
        return output * float("nan") if self.poison else output


class Poison(kiln.Callback):
    """Make the loss NaN at the batches `nan_at`, on rank `nan_rank` (all ranks if None)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.at = {tuple(place) for place in options.get("nan_at", [])}
        rank = int(os.environ.get("RANK", "0"))
        self.here = options.get("nan_rank") in (None, rank)

    def on_train_batch_start(self, trainer: kiln.Trainer) -> None:
        state = trainer.state
        trainer.model.poison = self.here and (state.epoch, state.batch_idx) in self.at

    def on_train_batch_end(self, trainer: kiln.Trainer) -> None:
        trainer.model.poison = False


class CountReductions(kiln.Callback):
    """Count DDP's gradient all-reduces: one call of its comm hook per bucket reduced."""

    def __init__(self) -> None:
        self.calls = 0

    def on_fit_start(self, trainer: kiln.Trainer) -> None:
        ddp = trainer.replicas._ddp  # wrapped by `fit` before this event
        if ddp is not None:
            ddp.register_comm_hook(None, self.hook)  # type: ignore[operator]

    def hook(self, state: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        self.calls += 1
        return allreduce_hook(state, bucket)


def run(options: dict[str, Any]) -> None:
    """Train as the options say; write this rank's final state to `out/rank{r}.pt`."""
    torch.set_num_threads(1)
    kiln.seed_everything(0)
    rank = int(os.environ.get("RANK", "0"))
    train, val = script.make_data(options)
    counter = CountReductions()
    trainer = kiln.Trainer(
        PoisonNet(),
        loss="cross_entropy",
        callbacks=[Poison(options), counter],
        device="cpu",
        progress=False,
        accumulate=options.get("accumulate", 1),
        nonfinite=options.get("nonfinite", "raise"),
        strategy=options.get("strategy", "ddp"),
    )
    with warnings.catch_warnings(record=True) as warned:  # the skipped batches' warnings
        warnings.simplefilter("always")
        trainer.fit(train, epochs=options.get("epochs", 2))
    result = {
        **script.outcome(trainer, val),
        "step": trainer.state.step,
        "skipped_batches": trainer.state.skipped_batches,
        "reductions": counter.calls,
        "warnings": [str(warning.message) for warning in warned],
    }
    torch.save(result, Path(options["out"]) / f"rank{rank}.pt")
