"""Starting a two-rank gloo group for a test: forked from the test process (fast), or torchrun."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.distributed import script

SCRIPT = Path(script.__file__)


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _rank_main(
    rank: int, world: int, port: int, options: dict[str, Any], main: Callable[..., None]
) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    code = 0
    try:
        main(options)
    except BaseException:  # the test reads the exit code; the traceback goes to its output
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)  # not pytest's teardown, inherited by the fork


def run_forked(
    options: dict[str, Any],
    world: int = 2,
    timeout: float = 60,
    main: Callable[[dict[str, Any]], None] = script.run,
) -> None:
    """Run `main(options)` on `world` forked ranks (torchrun's variables set by hand).

    `main` is `script.run` unless given: a top-level function of an importable module.
    """
    context = multiprocessing.get_context("fork")
    port = free_port()
    ranks = [
        context.Process(target=_rank_main, args=(rank, world, port, options, main))
        for rank in range(world)
    ]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout)
    for process in ranks:
        if process.is_alive():
            process.kill()
            process.join()
    codes = [process.exitcode for process in ranks]
    if codes != [0] * world:
        pytest.fail(f"the ranks exited with {codes}")


def torchrun(
    options: dict[str, Any], max_restarts: int = 0, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run the script with real torchrun on two gloo processes; return the finished process."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--standalone",  # c10d rendezvous on a free port: restarts meet afresh
        "--max-restarts",
        str(max_restarts),
        "--monitor-interval",
        "0.2",
        str(SCRIPT),
        json.dumps(options),
    ]
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(SCRIPT.parents[2]),
    }
    # torchrun's agent shares its store with the restarted ranks, where the keys of the killed
    # attempt remain (pytorch/pytorch#135712); kiln's `init_process_group` puts each attempt
    # under its own prefix, which the restart test exercises with the store shared.
    environment.pop("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", None)
    with tempfile.TemporaryDirectory(prefix="kiln-torchrun-") as logs:  # not left in /tmp
        command[3:3] = ["--log-dir", logs]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=environment, check=False
        )


def results(out: Path) -> list[dict[str, Any]]:
    """What each rank wrote, in rank order."""
    found = sorted(out.glob("rank*.pt"))
    return [torch.load(path, weights_only=True) for path in found]


def one_process(options: dict[str, Any], out: Path) -> dict[str, Any]:
    """The same script in this process (no group), with the given options."""
    out.mkdir(parents=True, exist_ok=True)
    script.run({**options, "out": str(out)})
    return results(out)[0]
