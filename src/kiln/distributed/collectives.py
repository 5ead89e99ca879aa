"""The collectives kiln uses: the two of the metric `sync` contract, and a few on plain objects.

What lives here: `all_reduce` and `all_gather` on 1-D float64 tensors, exactly as
`kiln.metrics.sync` states their contract (so `metric.sync(all_reduce, all_gather)` works), and
`broadcast_object`, `all_gather_objects` and `gather_objects` for the few plain values the
ranks exchange once per epoch (a seed, a stop request, per-rank random states). In one process
each returns what a group of one would. What does not: the process group (`context.py`).

All of them are collectives: every rank must call the same ones in the same order. Kiln calls
them at the ends of passes and at saves; per batch only with `nonfinite="skip"`, whose ranks
agree on each batch's skip with one `all_reduce` (`Replicas.all_finite`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from kiln.distributed.context import world_size


def _object_device() -> torch.device | None:
    # NCCL moves pickled objects through the current GPU; gloo through the CPU.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return None


def all_reduce(tensor: Tensor) -> Tensor:
    """Return the element-wise sum over the ranks of `tensor` (a copy; the input is kept).

    Example:
        >>> all_reduce(torch.tensor([1.0, 2.0], dtype=torch.float64))  # one process
        tensor([1., 2.], dtype=torch.float64)
    """
    summed = tensor.clone()
    if world_size() > 1:
        dist.all_reduce(summed)
    return summed


def all_gather(tensor: Tensor) -> Tensor:
    """Return the 1-D tensors of every rank concatenated in rank order; lengths may differ.

    Each rank's tensor is padded to the longest and trimmed back after the exchange.

    Example:
        >>> all_gather(torch.tensor([1.0, 2.0], dtype=torch.float64))  # one process
        tensor([1., 2.], dtype=torch.float64)
    """
    world = world_size()
    if world == 1:
        return tensor.clone()
    flat = tensor.reshape(-1)
    length = torch.tensor([flat.numel()], dtype=torch.int64, device=flat.device)
    lengths = [torch.zeros_like(length) for _ in range(world)]
    dist.all_gather(lengths, length)
    sizes = [int(size) for size in torch.cat(lengths).tolist()]
    longest = max(sizes)
    padded = torch.zeros(longest, dtype=flat.dtype, device=flat.device)
    padded[: flat.numel()] = flat
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])


def broadcast_object(value: Any, source: int = 0) -> Any:
    """Return rank `source`'s `value` on every rank (a seed, say), pickled on the way.

    Example:
        >>> broadcast_object(42)  # one process
        42
    """
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=source, device=_object_device())
    return box[0]


def all_gather_objects(value: Any) -> list[Any]:
    """Return every rank's `value`, in rank order.

    Example:
        >>> all_gather_objects("a")  # one process
        ['a']
    """
    world = world_size()
    if world == 1:
        return [value]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, value)
    return gathered


def gather_objects(value: Any) -> list[Any] | None:
    """Return every rank's `value` in rank order on rank 0, and `None` on the others.

    Example:
        >>> gather_objects({"rank": 0})  # one process
        [{'rank': 0}]
    """
    world = world_size()
    if world == 1:
        return [value]
    main = dist.get_rank() == 0
    gathered: list[Any] | None = [None] * world if main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered
