"""What the ranks run in `test_launch.py`: top-level functions, so that ranks can import them."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from kiln.distributed.context import init_process_group


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


def join_attempt(rank: int, port: int, attempt: int) -> None:
    """Join a 2-rank group as torch's elastic agent would start restart number `attempt`.

    Attempt 0 ends without leaving the group, as a failed attempt's ranks do. Rank 1 of a
    restart joins late, so that rank 0 is sure to look for rank 1's address before the new one
    is written: an address left by the earlier attempt would then be dialled, and refused.
    """
    os.environ.update(
        TORCHELASTIC_USE_AGENT_STORE="True",
        TORCHELASTIC_RESTART_COUNT=str(attempt),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
    )
    if attempt > 0 and rank == 1:
        time.sleep(1.0)
    init_process_group("gloo", timedelta(seconds=20))
    total = torch.tensor([rank + 1])
    dist.all_reduce(total)
    assert int(total) == 3
    if attempt == 0:
        os._exit(0)  # dies as a failed attempt's ranks do, its keys left in the store
    dist.destroy_process_group()
