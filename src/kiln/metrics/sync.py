"""Combining a metric's state across processes: the two collectives a metric asks for.

What lives here: the contract of the two functions that `Metric.sync` receives, and the helpers
that metrics use to sum their counts and gather their whole-set tensors through them. What does
not: the process group itself, nor the code that calls `sync` at the end of a pass (both belong
to `kiln.distributed`).

The contract keeps the distributed side small. Both functions take a 1-D float64 tensor and
return one, on the tensor's device:

- `all_reduce(t)` receives a tensor of the same length on every rank and returns the
  element-wise sum over the ranks (`torch.distributed.all_reduce` on a copy).
- `all_gather(t)` receives tensors whose lengths may differ between ranks and returns their
  concatenation in rank order (the distributed helper pads to the longest and trims).

Every rank makes the same calls in the same order, whatever it saw: a rank without samples
still takes part, with empty tensors. float64 holds every count below 2**53 exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

#: Returns the element-wise sum over ranks of a 1-D float64 tensor of equal length on each rank.
AllReduce = Callable[[Tensor], Tensor]
#: Returns the concatenation, in rank order, of each rank's 1-D float64 tensor.
AllGather = Callable[[Tensor], Tensor]


def agree_width(width: int | None, all_gather: AllGather, device: torch.device, what: str) -> int:
    """Return the width every rank uses, from the widths of the ranks that know one.

    A rank that saw no samples passes `None` and takes the width of the others.

    Raises:
        ValueError: If two ranks saw tensors of different widths.

    Example:
        >>> agree_width(None, lambda t: torch.cat([t, torch.tensor([3.0], dtype=t.dtype)]),
        ...             torch.device("cpu"), "scores")
        3
    """
    local = torch.tensor([-1.0 if width is None else float(width)], dtype=torch.float64)
    widths = {int(w) for w in all_gather(local.to(device)).tolist() if w >= 0}
    if len(widths) > 1:
        raise ValueError(
            f"The ranks saw {what} of different widths {sorted(widths)}; every rank must give "
            "the metric outputs with the same number of columns (classes or labels)."
        )
    return widths.pop() if widths else 0


def sum_across(
    total: Tensor | None, count: int, all_reduce: AllReduce, all_gather: AllGather
) -> tuple[Tensor | None, int]:
    """Return `(total, count)` summed over the ranks, in one reduction.

    `total` keeps its shape and dtype; a rank that has none gets the others' sum as a 1-D
    tensor (0-dim when it holds one value). The result is `None` when no rank saw anything.

    Example:
        >>> same = lambda t: t  # one rank
        >>> sum_across(torch.tensor(3.0), 2, same, same)
        (tensor(3.), 2)
    """
    device = torch.device("cpu") if total is None else total.device
    width = agree_width(None if total is None else total.numel(), all_gather, device, "sums")
    flat = torch.zeros(width, dtype=torch.float64, device=device)
    if total is not None:
        flat.copy_(total.reshape(-1))
    packed = torch.cat([flat, torch.tensor([float(count)], dtype=torch.float64, device=device)])
    summed = all_reduce(packed)
    new_count = int(summed[-1])  # read once, at the end of the pass
    if width == 0:
        return None, new_count
    values = summed[:-1]
    if total is None:
        return (values.reshape(()) if width == 1 else values), new_count
    return values.reshape(total.shape).to(total.dtype), new_count


def gather_across(rows: Tensor | None, all_gather: AllGather, what: str) -> Tensor | None:
    """Return the rows of every rank, concatenated in rank order (a whole-set metric's data).

    `rows` is 1-D or 2-D; it travels as float64 and comes back in its own dtype (`None` means
    this rank has none; the result is `None` when no rank has any).

    Example:
        >>> same = lambda t: t  # one rank
        >>> gather_across(torch.tensor([[1, 2], [3, 4]]), same, "labels")
        tensor([[1, 2],
                [3, 4]])
    """
    device = torch.device("cpu") if rows is None else rows.device
    width = None if rows is None else (1 if rows.dim() == 1 else rows.shape[1])
    agreed = agree_width(width, all_gather, device, what)
    local = (
        torch.zeros(0, dtype=torch.float64, device=device)
        if rows is None
        else rows.reshape(-1).to(torch.float64)
    )
    gathered = all_gather(local)
    if rows is None:
        if gathered.numel() == 0:
            return None
        return gathered if agreed == 1 else gathered.reshape(-1, agreed)
    rebuilt = gathered.reshape(-1, *rows.shape[1:])
    return rebuilt.to(rows.dtype)
