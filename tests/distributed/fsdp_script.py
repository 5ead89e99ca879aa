"""What the ranks run in `test_fsdp.py`: train a sharded MLP, save it, load it, gather it.

Each function is started on every rank by `kiln.distributed.launch.launch`, so it lives at the
top level of an importable module; `launch` returns what rank 0's call returned.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from kiln.distributed.dcp import load_sharded, save_sharded
from kiln.distributed.fsdp import full_state, load_full_state, shard_model

STEPS = 3


def make_model() -> nn.Module:
    """The same MLP, with the same initial weights, in every rank and every process."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)
    )


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The one batch every step trains on (all 16 samples; each rank takes its share)."""
    generator = torch.Generator().manual_seed(1)
    return torch.randn(16, 8, generator=generator), torch.randn(16, 4, generator=generator)


def train(model: nn.Module, optimizer: torch.optim.Optimizer, rank: int, world: int) -> None:
    """`STEPS` Adam steps; each rank's loss is the mean over its share of the batch."""
    inputs, targets = batch()
    for _ in range(STEPS):
        loss = nn.functional.mse_loss(model(inputs[rank::world]), targets[rank::world])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def train_unsharded() -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The reference: the same steps in one process on the whole batch, nothing sharded."""
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train(model, optimizer, 0, 1)
    return full_state(model, optimizer)


def train_and_save(directory: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Train sharded over all ranks, save to `directory/last.dcp`, and return the whole state."""
    model = shard_model(make_model())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train(model, optimizer, dist.get_rank(), dist.get_world_size())
    save_sharded(Path(directory), model, optimizer, {"ranks": dist.get_world_size()})
    return full_state(model, optimizer)


def load_and_gather(
    directory: str, weights: dict[str, Any], moments: dict[str, Any]
) -> tuple[dict[str, Any] | None, Any, Any]:
    """Load `directory/last.dcp` into a model sharded over this run's ranks and gather it; then
    load `weights` and `moments`, held by rank 0 only, into another (broadcast) and gather that.
    """
    model = shard_model(make_model())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    extra = load_sharded(Path(directory), model, optimizer)
    loaded = full_state(model, optimizer)
    model = shard_model(make_model())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    if dist.get_rank() != 0:
        weights, moments = {}, {}
    load_full_state(model, optimizer, weights, moments, from_rank0=True)
    return extra, loaded, full_state(model, optimizer)


def make_trainer() -> tuple[Any, Any]:
    """A kiln trainer of the MLP (DDP over the ranks) and its shuffled data, built afresh."""
    # Only this check needs the trainer.
    import kiln

    kiln.seed_everything(0)
    inputs, targets = torch.randn(64, 8), torch.randn(64, 4)
    trainer = kiln.Trainer(make_model(), loss="mse", device="cpu", progress=False)
    return trainer, kiln.Data((inputs, targets), batch_size=8, shuffle=True)


def trainer_resumed_and_straight(directory: str) -> tuple[Any, Any, list[float], list[float]]:
    """4 epochs straight; then 2, saved with `save_trainer_sharded`, loaded afresh, 2 more."""
    from kiln.distributed.dcp import load_trainer_sharded, save_trainer_sharded

    straight, data = make_trainer()
    straight.fit(data, epochs=4)
    first, data = make_trainer()
    first.fit(data, epochs=2)
    save_trainer_sharded(first, Path(directory))
    second, data = make_trainer()
    load_trainer_sharded(second, Path(directory))
    second.fit(data, epochs=2)
    return (
        full_state(straight.model, straight.optimizer),
        full_state(second.model, second.optimizer),
        straight.history.batch_losses,
        second.history.batch_losses,
    )
