"""The process group that `torchrun` describes, and the questions code asks about it.

kiln does not start processes or invent a runtime: `torchrun --nproc-per-node N script.py` (or
`kiln.launch`) starts the ranks and sets `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and
`MASTER_PORT`; `setup` reads them and joins the `torch.distributed` process group (gloo on the
CPU, NCCL on CUDA, each rank on its own GPU). One process without those variables is a group of
one, and everything here then does nothing, at no cost.

What lives here: `DistributedContext`, `setup`, `init_process_group`, `is_main_process`,
`rank_zero_only`, `barrier`. What does not: collectives on values (`collectives.py`), data sharding
(`sharding.py`) and the trainer's use of all this (`replicas.py`).
"""

from __future__ import annotations

import atexit
import functools
import gc
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.distributed.constants import default_pg_timeout

F = TypeVar("F", bound=Callable[..., Any])

#: The environment variable that holds the collective timeout in seconds, when `setup` gets none.
TIMEOUT_VARIABLE = "KILN_DIST_TIMEOUT"


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands among the processes that train together.

    Args:
        rank: This process's number, 0 to `world_size - 1`; rank 0 writes the files.
        world_size: How many processes train together (1: no process group).
        local_rank: This process's number on its machine (its GPU index under torchrun).
        device: The device this process trains on.
        backend: `"gloo"`, `"nccl"`, or `None` for a single process.

    Example:
        >>> import torch
        >>> context = DistributedContext(0, 1, 0, torch.device("cpu"), None)
        >>> context.is_main, context.enabled
        (True, False)
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def enabled(self) -> bool:
        """Whether several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that prints and writes files."""
        return self.rank == 0


def in_torchrun_environment() -> bool:
    """Whether the environment describes a group of several processes (`WORLD_SIZE` > 1).

    Example:
        >>> import os
        >>> in_torchrun_environment() == (int(os.environ.get("WORLD_SIZE", "1")) > 1)
        True
    """
    return _int_variable("WORLD_SIZE", 1) > 1


def _int_variable(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"The environment variable {name}={value!r} must be an integer; torchrun sets it. "
            "Start the script with `torchrun --nproc-per-node N script.py`."
        ) from None


def _timeout(seconds: float | None) -> timedelta | None:
    if seconds is None:
        text = os.environ.get(TIMEOUT_VARIABLE)
        if not text:
            return None  # torch's default
        try:
            seconds = float(text)
        except ValueError:
            raise ValueError(
                f"{TIMEOUT_VARIABLE}={text!r} must be a number of seconds, such as 600."
            ) from None
    if isinstance(seconds, bool) or not seconds > 0:
        raise ValueError(f"`timeout` must be a positive number of seconds; received {seconds!r}.")
    return timedelta(seconds=seconds)


def _device(device: Any, local_rank: int) -> torch.device:
    """This rank's device: `"auto"` is `cuda:LOCAL_RANK` when there are GPUs, else the CPU."""
    # kiln.devices imports nothing of ours.
    from kiln.devices import resolve_device

    if device is None or device is True or device == "auto" or device == "cuda":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if device == "cuda":
            return resolve_device("cuda")  # the clear error for a missing GPU
        return torch.device("cpu")
    return resolve_device(device)


def init_process_group(backend: str, timeout: timedelta | None = None, **options: Any) -> None:
    """Join the process group torchrun describes, with a store fresh for each restart.

    Under torch's elastic agent (torchrun, `kiln.launch`) every attempt after a restart
    reuses the agent's key-value store, and the keys of the failed attempt are still in it:
    torch 2.13 gives workers no per-attempt prefix there, and a gloo rank that reads a peer's
    address left by the dead attempt is refused ("Gloo connectFullMesh failed ... Connection
    refused"). So kiln opens the store itself and puts every key of this attempt under
    `kiln/attempt_{TORCHELASTIC_RESTART_COUNT}`. Elsewhere (`env://` with a store that rank 0
    creates anew) torch's own rendezvous is used unchanged.

    Args:
        backend: `"gloo"` or `"nccl"`.
        timeout: How long collectives (and waiting for the store) may take; torch's default
            when `None`.
        **options: Passed on to `torch.distributed.init_process_group` (e.g. `device_id`).

    Example:
        >>> import os
        >>> if "RANK" in os.environ:  # under torchrun; a plain process has no group to join
        ...     init_process_group("gloo")
    """
    if timeout is not None:
        options["timeout"] = timeout
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        dist.init_process_group(backend, **options)
        return
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.TCPStore(  # type: ignore[attr-defined]  # in torch, not in its stubs
        os.environ["MASTER_ADDR"],
        _int_variable("MASTER_PORT", 0),
        is_master=False,
        timeout=timeout or default_pg_timeout,
    )
    dist.init_process_group(
        backend,
        store=dist.PrefixStore(f"kiln/attempt_{attempt}", store),  # type: ignore[attr-defined]
        rank=_int_variable("RANK", 0),
        world_size=_int_variable("WORLD_SIZE", 1),
        **options,
    )


def setup(
    device: str | int | bool | torch.device | None = "auto",
    *,
    backend: str | None = None,
    timeout: float | None = None,
) -> DistributedContext:
    """Join the process group torchrun's environment describes; return where this rank stands.

    Without `WORLD_SIZE` > 1 in the environment this is one process: no group is made, and
    the context says rank 0 of 1 on `device` resolved as usual. Otherwise the group is
    initialised (unless it is already, by the user or an earlier call) with `backend` (default
    NCCL when this rank's device is a GPU, gloo otherwise), and on a GPU this rank's device
    becomes the current CUDA device. A group kiln made is destroyed at exit, after the
    `release_at_exit` hooks.

    Args:
        device: `"auto"` (under torchrun: `cuda:LOCAL_RANK`, or the CPU), or any `device`
            the `Trainer` accepts.
        backend: `"gloo"` or `"nccl"`; `None` chooses by device.
        timeout: Seconds a collective waits for the other ranks before it fails (so a rank
            that died mid-run cannot hang the others forever); default: `KILN_DIST_TIMEOUT`
            from the environment, else torch's default.

    Returns:
        The context: rank, world size, local rank, device and backend.

    Raises:
        ValueError: If a variable of the environment or `timeout` is not a valid number.

    Example:
        >>> import os
        >>> context = setup("cpu")  # a plain `python script.py`: one process
        >>> (context.rank, context.world_size, str(context.device)) if not context.enabled else 0
        (0, 1, 'cpu')
    """
    from kiln.devices import resolve_device

    wait = _timeout(timeout)
    if not in_torchrun_environment() and not (dist.is_available() and dist.is_initialized()):
        return DistributedContext(0, 1, 0, resolve_device(device), None)
    local_rank = _int_variable("LOCAL_RANK", 0)
    placed = _device(device, local_rank)
    if placed.type == "cuda":
        torch.cuda.set_device(placed)
    if not dist.is_initialized():
        chosen = backend or ("nccl" if placed.type == "cuda" else "gloo")
        options: dict[str, Any] = {}
        if chosen == "nccl":
            options["device_id"] = placed  # binds the communicator now, not at first use
        init_process_group(chosen, wait, **options)
        atexit.register(_destroy)
    return DistributedContext(
        dist.get_rank(), dist.get_world_size(), local_rank, placed, dist.get_backend()
    )


#: What `_destroy` calls first: each drops a reference that keeps the process group alive.
_RELEASE_AT_EXIT: list[Callable[[], None]] = []


def release_at_exit(release: Callable[[], None]) -> None:
    """Have `release` called at exit, before the process group kiln made is destroyed.

    A process group still referenced when the interpreter shuts down (by a DDP wrapper's
    reducer, say) is destroyed among the C++ static objects, where gloo can abort the process
    ("terminate called without an active exception", about one torchrun run in ten here), and
    torchrun then reports the rank as failed. So holders of such references register a
    `release` that drops them, and the group is destroyed while Python still runs.

    Example:
        >>> release_at_exit(lambda: None)
    """
    _RELEASE_AT_EXIT.append(release)


def _destroy() -> None:
    for release in reversed(_RELEASE_AT_EXIT):
        release()
    gc.collect()  # the wrappers just released, and those of trainers already dropped
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    """This process's rank in the process group (0 without one).

    Example:
        >>> rank() if not in_torchrun_environment() else 0
        0
    """
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """How many processes are in the group (1 without one).

    Example:
        >>> world_size() if not in_torchrun_environment() else 1
        1
    """
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Whether this process is rank 0 (or the only one): the one that prints and writes files.

    Example:
        >>> is_main_process() if not in_torchrun_environment() else True
        True
    """
    return rank() == 0


def rank_zero_only(function: F) -> F:
    """Make `function` run on rank 0 only; other ranks get `None` without calling it.

    Example:
        >>> @rank_zero_only
        ... def say(text):
        ...     return text
        >>> say("hello") if not in_torchrun_environment() else "hello"
        'hello'
    """

    @functools.wraps(function)
    def on_rank_zero(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs) if is_main_process() else None

    return on_rank_zero  # type: ignore[return-value]


def barrier() -> None:
    """Wait until every rank gets here (nothing to wait for in one process).

    Used after rank 0 writes a file that the others may read: none reads it half-written.

    Example:
        >>> barrier()  # one process: returns at once
    """
    if world_size() > 1:
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()
