"""Start ranks from Python: `kiln.launch(fn, *args, nprocs=N)`, for notebooks and scripts.

`torchrun script.py` is the usual way to train on several processes. Where a command cannot be
started (a notebook, a script that trains several models, a test), `launch` starts `fn` on `N`
local processes through torch's elastic launcher (`torch.distributed.launcher.api`), with a
process group already initialised in each, and returns rank 0's result. `launch(fn, gpus=[0, 2])`
runs DDP over those GPUs, one process each, never DataParallel.

The ranks are new processes (`spawn`): `fn` and its arguments are pickled to them, so `fn` must
be importable by its name. A function defined in a notebook cell, a lambda or a function defined
inside another cannot be; put it in a `.py` file next to the notebook and import it. A script
that calls `launch` must do so under `if __name__ == "__main__":`, because each rank imports the
script again. The ranks' printed output goes to the terminal that started Python, which in a
notebook is the server's, not the cell.

What lives here: starting ranks, the GPU each rank sees, and a one-process group for trying
sharded code in a notebook or a doctest. What does not: what a rank does (the trainer, DDP and
FSDP wrapping), and the process group of a `torchrun` run (the rest of `kiln.distributed`).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist

from kiln.distributed.context import init_process_group
from kiln.options import whole_number


def free_port() -> int:
    """Return a TCP port on this machine that is free now, for the ranks' rendezvous.

    Example:
        >>> 0 < free_port() < 65536
        True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def visible_devices(gpus: Sequence[int], parent_visible: str | None = None) -> list[str]:
    """Return, for each rank, the `CUDA_VISIBLE_DEVICES` that shows it only its own GPU.

    `gpus` are indices as this process sees them: when `CUDA_VISIBLE_DEVICES` is set here
    (`parent_visible`), index 0 is the first GPU it lists, as in `torch.cuda.device(0)`. Each
    rank then uses `cuda:0`, which is the GPU given to it.

    Args:
        gpus: One GPU index per rank, such as `[0, 2]`.
        parent_visible: This process's `CUDA_VISIBLE_DEVICES`, or `None` if unset.

    Raises:
        TypeError: If `gpus` is not a list of ints.
        ValueError: If it is empty, repeats a GPU, or names one that is not visible here.

    Example:
        >>> visible_devices([0, 2])
        ['0', '2']
        >>> visible_devices([1, 0], parent_visible="4,5,6")
        ['5', '4']
    """
    if isinstance(gpus, (str, bytes)) or not isinstance(gpus, Sequence):
        raise TypeError(f"`gpus` must be a list of GPU indices, such as [0, 1]; received {gpus!r}.")
    wrong = [gpu for gpu in gpus if whole_number(gpu) is None]
    if wrong:
        raise TypeError(
            "`gpus` must hold integer GPU indices, such as [0, 1]; received "
            f"{wrong[0]!r} in {list(gpus)!r}."
        )
    if not gpus:
        raise ValueError("`gpus` is empty: give at least one GPU index, such as [0].")
    if len(set(gpus)) != len(gpus):
        raise ValueError(
            f"`gpus` repeats a GPU ({list(gpus)!r}): each rank needs its own GPU. List each "
            "index once."
        )
    listed = (
        None
        if parent_visible is None
        else [item.strip() for item in parent_visible.split(",") if item.strip()]
    )
    for gpu in gpus:
        if gpu < 0 or (listed is not None and gpu >= len(listed)):
            seen = (
                ""
                if listed is None
                else f" (CUDA_VISIBLE_DEVICES={parent_visible!r} shows {len(listed)})"
            )
            raise ValueError(
                f"`gpus` names GPU {gpu}, which this process cannot see{seen}. Use indices from 0 "
                "to the number of visible GPUs minus one."
            )
    return [str(gpu) if listed is None else listed[gpu] for gpu in gpus]


def _check_importable(fn: Callable[..., Any]) -> None:
    """Refuse, before starting anything, a function the new processes could not find."""
    if not callable(fn):
        raise TypeError(
            f"launch expects a function to run on each rank; received {type(fn).__name__}."
        )
    name = getattr(fn, "__qualname__", repr(fn))
    module = getattr(fn, "__module__", None)
    main = sys.modules.get("__main__")
    if module == "__main__" and not getattr(main, "__file__", None):
        raise TypeError(
            f"launch cannot start {name}: it is defined in a notebook or an interactive session, "
            "and the new processes cannot import it from there. Put the function in a .py file "
            "next to the notebook and import it from there."
        )
    try:
        pickle.dumps(fn)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise TypeError(
            f"launch cannot start {name}: the new processes receive the function by its import "
            "path, and a lambda or a function defined inside another function has none "
            f"({error}). Define it at the top level of a module and pass that."
        ) from error


def _run_rank(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    backend: str,
    devices: list[str] | None,
    threads: int,
) -> Any:
    """Body of every rank: its GPU, its threads, the process group, then `fn`."""
    if devices is not None:
        # Before anything touches CUDA: the rank sees its one GPU, as cuda:0, and its local
        # rank reads 0 so that code placing it on `cuda:LOCAL_RANK` finds that GPU (what
        # torch's own `virtual_local_rank` does).
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[int(os.environ["LOCAL_RANK"])]
        os.environ["LOCAL_RANK"] = "0"
        torch.cuda.set_device(0)
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(threads)
    init_process_group(backend)
    try:
        return fn(*args, **kwargs)
    finally:
        dist.destroy_process_group()


def launch(
    fn: Callable[..., Any],
    *args: Any,
    nprocs: int | None = None,
    gpus: Sequence[int] | None = None,
    backend: str | None = None,
    max_restarts: int = 0,
    **kwargs: Any,
) -> Any:
    """Run `fn(*args, **kwargs)` on `nprocs` local ranks and return rank 0's result.

    Each rank is a new process with a process group initialised (`torch.distributed` works in
    `fn`: `kiln.Trainer` trains with DDP there, `shard_model` shards) and destroyed when `fn`
    returns. Under the hood it is torch's elastic launcher, what `torchrun` uses.

    Args:
        fn: A function importable by its name (defined at the top level of a `.py` file).
        *args: Its positional arguments, pickled to every rank.
        nprocs: The number of ranks; with `gpus`, one per GPU (default 2 on the CPU).
        gpus: GPU indices, one rank each; each rank sees only its own (as `cuda:0`).
        backend: `"nccl"` or `"gloo"`; default NCCL with `gpus`, gloo without.
        max_restarts: How many times to restart all ranks after one fails.
        **kwargs: Its keyword arguments, pickled to every rank.

    Returns:
        What `fn` returned on rank 0.

    Raises:
        TypeError: If `fn` cannot be started in a new process (a lambda, a local function, one
            defined in a notebook), or an option has the wrong type.
        ValueError: If `nprocs` is below 1 or disagrees with `gpus`.
        torch.distributed.elastic.multiprocessing.errors.ChildFailedError: If a rank failed;
            the message holds its traceback.

    Example:
        >>> from kiln.distributed.launch import launch
        >>> launch(len, [1, 2, 3], nprocs=1)
        3
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    _check_importable(fn)
    devices = (
        None if gpus is None else visible_devices(gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    )
    if nprocs is None:
        nprocs = 2 if devices is None else len(devices)
    if whole_number(nprocs) is None:
        raise TypeError(f"`nprocs` must be an int, the number of ranks; received {nprocs!r}.")
    nprocs = int(nprocs)
    if nprocs < 1:
        raise ValueError(f"`nprocs` must be at least 1; received {nprocs}.")
    if devices is not None and nprocs != len(devices):
        raise ValueError(
            f"`nprocs={nprocs}` but `gpus` lists {len(devices)} GPU(s): each rank takes one GPU. "
            "Leave `nprocs` out to start one rank per GPU."
        )
    if whole_number(max_restarts) is None:
        raise TypeError(f"`max_restarts` must be an int; received {max_restarts!r}.")
    max_restarts = int(max_restarts)
    if max_restarts < 0:
        raise ValueError(f"`max_restarts` must be 0 or more; received {max_restarts}.")
    if backend is None:
        backend = "gloo" if devices is None else "nccl"
    threads = max(1, (os.cpu_count() or 1) // nprocs)
    # torch's launcher writes each rank's error file under a new /tmp/torchelastic_* folder and
    # leaves it there; a failure's message already holds the traceback, so the folder goes.
    with tempfile.TemporaryDirectory(prefix="kiln-launch-") as logs:
        config = LaunchConfig(
            min_nodes=1,
            max_nodes=1,
            nproc_per_node=nprocs,
            run_id=f"kiln-{uuid.uuid4().hex[:12]}",
            rdzv_backend="c10d",
            rdzv_endpoint=f"127.0.0.1:{free_port()}",
            max_restarts=max_restarts,
            monitor_interval=0.05,
            start_method="spawn",
            logs_specs=DefaultLogsSpecs(log_dir=logs),
        )
        results = elastic_launch(config, _run_rank)(fn, args, kwargs, backend, devices, threads)
    return results[0]


@contextlib.contextmanager
def single_process_group(backend: str = "gloo") -> Iterator[None]:
    """Initialise a process group of one rank in this process, for the duration of a `with`.

    For trying distributed code (`shard_model`, a sharded checkpoint) in a notebook or a test,
    and for loading a sharded checkpoint into one process. It refuses to nest in another group.

    Raises:
        RuntimeError: If a process group is initialised already.

    Example:
        >>> import torch.distributed as dist
        >>> with single_process_group():
        ...     dist.get_world_size()
        1
        >>> dist.is_initialized()
        False
    """
    if dist.is_initialized():
        raise RuntimeError(
            "A process group is initialised already in this process; use it rather than "
            "single_process_group()."
        )
    store = dist.HashStore()  # type: ignore[attr-defined]  # in torch, not in its stubs
    dist.init_process_group(backend, store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()
