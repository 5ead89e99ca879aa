"""What the ranks run in `test_launch.py`: top-level functions, so that ranks can import them."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist


def rank_report(start: int, step: int = 0) -> tuple[int, int, int, int]:
    """This rank's number, the world size, a sum of all ranks' values, and the thread count."""
    value = torch.tensor([start + step * dist.get_rank()])
    dist.all_reduce(value)
    return dist.get_rank(), dist.get_world_size(), int(value), torch.get_num_threads()


def break_rank_1() -> None:
    """Fail on rank 1 with a message the caller can find."""
    if dist.get_rank() == 1:
        raise ValueError("rank 1 broke on purpose")


def fail_once(marker: str) -> str:
    """Fail on rank 0 the first time (leaving `marker`), succeed when restarted."""
    if dist.get_rank() == 0 and not Path(marker).exists():
        Path(marker).touch()
        raise RuntimeError("first attempt fails")
    return "restarted and done"
