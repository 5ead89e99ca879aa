"""Measure training throughput on 1 and 2 processes, and how well it scales, kiln against plain DDP.

What: samples per second of training, summed over the ranks, for a tiny MLP (32-64-64-10, where
the framework's Python work and the gradient all-reduce dominate) and a larger one
(256-1024-1024-10, 1.3M parameters, where the matrix products do), on 1 process and on 2 gloo
processes on the CPU, one thread each (`--device cuda`: NCCL, one GPU a rank, as many ranks as
GPUs). The scaling efficiency is (2-process throughput) / (2 x 1-process throughput): 1.0 means
the second process doubles the throughput. Each rank trains on its own shard of the same size
(weak scaling: a rank's batch is 64 whatever the number of ranks).

Three contenders run in the same processes, one epoch each in turn (the order reversed every
other round), and the tables give medians over the rounds:

- **torch DDP**, the baseline: the loop a careful user writes, the model in
  `DistributedDataParallel` on 2 processes (the bare model on 1), each rank slicing its shard of
  in-memory tensors by a random permutation (`index_select`), `zero_grad(set_to_none=True)`,
  backward, Adam step;
- **kiln**: `kiln.Trainer(model, loss="cross_entropy").fit(kiln.Data((X, Y), batch_size=64,
  shuffle=True), epochs=1)` on the whole data set, which kiln cuts per rank, the model in DDP
  on 2 processes (on 1, with no process group to join, it trains the model itself);
- **kiln, accumulate=4**: the same with `Trainer(..., accumulate=4)`, one optimizer step per 4
  batches, whose gradients are reduced over the ranks once per step (DDP's `no_sync` for the
  first 3): what gradient accumulation saves in communication (and optimizer steps). Its
  "kiln / torch" cells stay empty: the loops differ.

How: the ranks are started by `kiln.distributed.launch.launch` (torch's elastic launcher), one
launch per model and process count; in each rank, both contenders train their own model, built
from the same seed, for a warm-up epoch, then the timed rounds, each ended by a barrier. Time is
rank 0's wall clock from the barrier before a contender's epoch to the barrier after it.

Run it with `python bench/distributed.py` (a few minutes on two cores), `--quick` for a small
version that checks the script, `--rounds N`, `--device cuda`, and `--markdown PATH` to also
write the report to a file. On a machine with two cores shared with other work, two processes
compete with everything else for both cores: read the efficiency as a lower bound.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional

import kiln
from kiln.distributed.launch import launch

BATCH = 64  # per rank
ACCUMULATE = 4  # batches per optimizer step of the third contender
ACCUMULATING = f"kiln, accumulate={ACCUMULATE}"
CONTENDERS = ("torch DDP", "kiln", ACCUMULATING)


@dataclass(frozen=True)
class Model:
    """One of the models measured, and how much data each rank trains on per epoch."""

    name: str
    sizes: tuple[int, ...]
    samples_per_rank: int

    def build(self) -> nn.Module:
        """The MLP, with the same initial weights in every rank."""
        torch.manual_seed(0)
        layers: list[nn.Module] = []
        for width, following in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            layers += [nn.Linear(width, following), nn.ReLU()]
        return nn.Sequential(*layers[:-1])

    @property
    def parameters(self) -> int:
        """The parameter count."""
        return sum(a * b + b for a, b in zip(self.sizes[:-1], self.sizes[1:], strict=True))


TINY = Model("tiny MLP 32-64-64-10", (32, 64, 64, 10), 4096)
LARGE = Model("MLP 256-1024-1024-10", (256, 1024, 1024, 10), 1024)
QUICK_TINY = Model("tiny MLP 32-64-64-10", (32, 64, 64, 10), 512)


def make_data(model: Model, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole data set: `world` ranks' shards of `samples_per_rank` samples each."""
    generator = torch.Generator().manual_seed(1)
    count = model.samples_per_rank * world
    inputs = torch.randn(count, model.sizes[0], generator=generator)
    return inputs, torch.randint(0, model.sizes[-1], (count,), generator=generator)


def torch_epoch(
    net: nn.Module, optimizer: torch.optim.Optimizer, inputs: Any, targets: Any, seed: int
) -> None:
    """One epoch of the hand-written DDP loop over this rank's shard."""
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed))
    for start in range(0, len(inputs), BATCH):
        index = order[start : start + BATCH]
        loss = functional.cross_entropy(
            net(inputs.index_select(0, index)), targets.index_select(0, index)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def measure_rank(model: Model, rounds: int, device: str) -> dict[str, list[float]]:
    """Run in every rank: both contenders' epochs, interleaved; rank 0's seconds per epoch."""
    rank, world = dist.get_rank(), dist.get_world_size()
    where = torch.device(device, rank) if device == "cuda" else torch.device("cpu")
    inputs, targets = make_data(model, world)
    shard_inputs, shard_targets = inputs[rank::world].to(where), targets[rank::world].to(where)
    net = model.build().to(where)
    # One process trains the model itself, as kiln does then: the baseline of the efficiency.
    ids = [rank] if device == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel(net, device_ids=ids) if world > 1 else net
    optimizer = torch.optim.Adam(ddp.parameters(), lr=1e-3)
    trainer = kiln.Trainer(model.build(), loss="cross_entropy", device=str(where), progress=False)
    accumulating = kiln.Trainer(
        model.build(),
        loss="cross_entropy",
        device=str(where),
        progress=False,
        accumulate=ACCUMULATE,
    )
    data = kiln.Data((inputs, targets), batch_size=BATCH, shuffle=True)

    def run(contender: str, epoch: int) -> float:
        dist.barrier()
        started = time.perf_counter()
        if contender == "kiln":
            trainer.fit(data, epochs=1)
        elif contender == ACCUMULATING:
            accumulating.fit(data, epochs=1)
        else:
            torch_epoch(ddp, optimizer, shard_inputs, shard_targets, epoch)
        if device == "cuda":
            torch.cuda.synchronize()
        dist.barrier()
        return time.perf_counter() - started

    for contender in CONTENDERS:  # warm-up
        run(contender, 0)
    seconds: dict[str, list[float]] = {contender: [] for contender in CONTENDERS}
    for round_index in range(rounds):
        order = CONTENDERS if round_index % 2 == 0 else CONTENDERS[::-1]
        for contender in order:
            seconds[contender].append(run(contender, round_index + 1))
    return seconds


def throughput(model: Model, world: int, seconds: list[float]) -> float:
    """Median samples per second over all ranks."""
    return model.samples_per_rank * world / statistics.median(seconds)


def report(
    results: dict[tuple[str, int], dict[str, list[float]]],
    models: list[Model],
    device: str,
    loads: dict[tuple[str, int], tuple[float, float]],
) -> str:
    """The tables, in markdown."""
    lines = [
        f"Device: {device}; torch {torch.__version__}; Python {platform.python_version()}; "
        f"{os.cpu_count()} CPU cores; batch {BATCH} per rank; median of "
        f"{len(next(iter(results.values()))['kiln'])} rounds.",
        "",
        "| model | contender | samples/s, 1 process | samples/s, 2 processes | scaling efficiency "
        "| kiln / torch, 1 process | kiln / torch, 2 processes |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for model in models:
        one, two = results.get((model.name, 1)), results.get((model.name, 2))
        for contender in CONTENDERS:
            single = None if one is None else throughput(model, 1, one[contender])
            double = None if two is None else throughput(model, 2, two[contender])
            efficiency = f"{double / (2 * single):.2f}" if single and double else "n/a"
            ratios = []
            for seconds in (one, two):
                if contender == "kiln" and seconds is not None:
                    pairs = zip(seconds["torch DDP"], seconds["kiln"], strict=True)
                    ratio = statistics.median(ours / theirs for theirs, ours in pairs)
                    ratios.append(f"{ratio:.2f}x time")
                else:
                    ratios.append("")
            lines.append(
                f"| {model.name} ({model.parameters:,} parameters) | {contender} | "
                f"{single or 0:,.0f} | {double or 0:,.0f} | {efficiency} | "
                f"{ratios[0]} | {ratios[1]} |"
            )
    busy = ", ".join(
        f"{name}, {world} process(es): {before:.1f} to {after:.1f}"
        for (name, world), (before, after) in loads.items()
    )
    lines += [
        "",
        f"Load average (1 min) before and after each launch, on {os.cpu_count()} cores: {busy}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure, print the report, and write it to `--markdown` if given."""
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument(
        "--quick", action="store_true", help="a small version that checks the script"
    )
    options.add_argument("--rounds", type=int, default=None, help="timed rounds per contender")
    options.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    options.add_argument("--markdown", type=Path, default=None, help="also write the report here")
    arguments = options.parse_args(argv)
    models = [QUICK_TINY] if arguments.quick else [TINY, LARGE]
    rounds = arguments.rounds or (2 if arguments.quick else 7)
    backend = "nccl" if arguments.device == "cuda" else "gloo"
    counts = (
        [1, 2]
        if arguments.device == "cpu"
        else list(range(1, min(2, torch.cuda.device_count()) + 1))
    )
    os.environ["OMP_NUM_THREADS"] = "1"  # one thread a rank, as torchrun sets it
    results, loads = {}, {}
    for model in models:
        for world in counts:
            print(f"{model.name}: {world} process(es)...", file=sys.stderr, flush=True)
            before = os.getloadavg()[0]
            results[model.name, world] = launch(
                measure_rank, model, rounds, arguments.device, nprocs=world, backend=backend
            )
            loads[model.name, world] = (before, os.getloadavg()[0])
    text = report(results, models, arguments.device, loads)
    print(text)
    if arguments.markdown is not None:
        arguments.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
