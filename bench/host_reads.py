"""Count the host reads a callback makes during `fit`: the device synchronisations it causes.

On an accelerator, reading a tensor's value on the host (`.item()`, `float(t)`, `.cpu()`,
`.tolist()`, ...) waits for every kernel queued before it. kiln's loggers promise at most one
such read per logging interval (an epoch, or `batch_interval` steps), never one per step. This
module checks that promise on any machine, the CPU included, where nothing actually waits:

- `watch(callback)` wraps the `on_*` methods of one callback instance. While they run, a
  `TorchFunctionMode` sees every torch call they make and counts the reads of tensors that would
  live on the model's device, noting the trainer's step count at each.
- Reads of tensors already on the host are free and not counted: what a read returned (`.cpu()`,
  `.numpy()`), tensors made from Python values (`torch.tensor([...])` without a `device`), and
  whatever is computed from those alone. Everything else, the trainer's outputs included, counts
  as a device tensor; a tensor made with an explicit `device=` is taken to live on the device.
- Only the watched callback's own calls count: the trainer's reads (on the CPU it reads each
  batch's loss to check it is finite) and other callbacks' are not seen.

`check_table()` runs the check for each of kiln's loggers and returns it as a Markdown table;
`bench/overhead.py` prints it, and `tests/bench/test_host_reads.py` asserts it.

Example:
    >>> import torch, kiln
    >>> reads = watch(kiln.callbacks.LRMonitor())
    >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu", progress=False,
    ...                        callbacks=[reads.callback])
    >>> _ = trainer.fit((torch.randn(8, 2), torch.randn(8, 1)), epochs=2, batch_size=4)
    >>> reads.steps  # LRMonitor reads the optimizer's numbers, never a tensor
    []
"""

from __future__ import annotations

import functools
import io
import math
import os
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

import kiln
from kiln.callbacks import (
    CSVLogger,
    LRMonitor,
    MLflowLogger,
    ProgressBar,
    TensorBoard,
    TextLog,
    WandbLogger,
)

#: Tensor methods and functions that hand a device tensor's value to the host.
READS = frozenset(
    {"item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__"}
    | {"__format__", "__repr__", "__str__", "__array__", "equal", "allclose", "is_nonzero"}
    | {"nonzero", "unique", "masked_select"}  # their result's size depends on the values
)

#: The reads whose result is a copy on the host.
COPIES = frozenset({"cpu", "to", "numpy"})


def _tensors(values: Iterable[Any]) -> list[torch.Tensor]:
    leaves, _ = tree_flatten(list(values))
    return [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]


def _is_read(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if name in READS:
        return True
    if name != "to":  # `.to("cpu")` reads; `.to(trainer.device)` or `.to(torch.float64)` does not
        return False
    target = kwargs.get("device", args[1] if len(args) > 1 else None)
    return isinstance(target, str) and target.startswith("cpu")


@dataclass
class HostReads:
    """What `watch` returns: the watched callback and the step count at each of its reads."""

    callback: Any
    #: `trainer.state.step` when each read happened, in order (0 before the first step).
    steps: list[int] = field(default_factory=list)
    #: The host tensors seen, by id (a WeakSet would compare tensors with `==`).
    _host: dict[int, weakref.ref[torch.Tensor]] = field(default_factory=dict)
    _trainer: Any = None

    def on_host(self, tensor: torch.Tensor) -> bool:
        """Tell whether `tensor` is known to be on the host already."""
        ref = self._host.get(id(tensor))
        return ref is not None and ref() is tensor

    def per_interval(self, interval: int) -> int:
        """Return the most reads in any interval of `interval` steps (0 for none at all).

        A read at step `s` falls in interval `ceil(s / interval)`: interval 1 holds steps 1 to
        `interval` and what ran right after the last of them (an epoch's end, say); reads
        before the first step fall in interval 0.
        """
        counts = Counter(math.ceil(step / interval) for step in self.steps)
        return max(counts.values(), default=0)


class _Mode(TorchFunctionMode):
    """Sees each torch call of a watched callback; counts the reads of device tensors."""

    def __init__(self, reads: HostReads) -> None:
        super().__init__()
        self.reads = reads

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        inputs = _tensors([args, kwargs])
        on_host = all(self.reads.on_host(tensor) for tensor in inputs)
        name = getattr(func, "__name__", "")
        read = _is_read(name, args, kwargs)
        if read and not on_host:
            self.reads.steps.append(int(self.reads._trainer.state.step))
        result = func(*args, **kwargs)
        copied = read and name in COPIES  # `nonzero` and the like keep their result on the device
        if copied or (on_host and (inputs or kwargs.get("device") is None)):
            for tensor in _tensors([result]):
                self.reads._host[id(tensor)] = weakref.ref(tensor)
        return result


def watch(callback: Any) -> HostReads:
    """Count the host reads that `callback`'s `on_*` methods make (call before the `Trainer`).

    The methods are replaced on this instance only: the trainer calls the wrapped ones.
    """
    reads = HostReads(callback)
    for name in dir(type(callback)):
        method = getattr(callback, name)
        if name.startswith("on_") and callable(method):

            @functools.wraps(method)
            def wrapped(trainer: Any, method: Callable[[Any], None] = method) -> None:
                reads._trainer = trainer
                with _Mode(reads):
                    method(trainer)

            setattr(callback, name, wrapped)
    return reads


# ------------------------------------------------------------------------------------------
# The check of kiln's loggers

EPOCHS, SAMPLES, BATCH, BATCH_INTERVAL = 3, 80, 8, 4  # 8 training steps per epoch (val=0.2)


@dataclass(frozen=True)
class Check:
    """One logger to check: how to build it, and its logging interval in steps."""

    label: str
    make: Callable[[Path], Any]
    interval: str  # "epoch", or a number of steps
    needs: str | None = None  # the optional package it needs


def _quiet_bar() -> ProgressBar:
    return ProgressBar(file=io.StringIO())  # its lines would interleave with the report


def _mlflow(folder: Path) -> MLflowLogger:
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 hides its file store
    return MLflowLogger(tracking_uri=(folder / "mlruns").as_uri())


def _wandb(folder: Path) -> WandbLogger:
    settings = {"silent": True, "console": "off"}  # nothing printed, nothing sent
    return WandbLogger(project="host-reads", dir=folder, mode="offline", settings=settings)


CHECKS = (
    Check("`ProgressBar()` (off a terminal: a line per epoch)", lambda d: _quiet_bar(), "epoch"),
    Check("`CSVLogger(path)`", lambda d: CSVLogger(d / "log.csv"), "epoch"),
    Check(
        "`CSVLogger(path, batch_granularity=True)` (a row per step)",
        lambda d: CSVLogger(d / "batches.csv", batch_granularity=True),
        "1",
    ),
    Check("`TextLog(path)`", lambda d: TextLog(d / "log.txt"), "epoch"),
    Check("`LRMonitor()`", lambda d: LRMonitor(), "epoch"),
    Check("`LRMonitor(interval='step')`", lambda d: LRMonitor(interval="step"), "1"),
    Check("`TensorBoard(dir)`", lambda d: TensorBoard(d / "tb"), "epoch", "tensorboard"),
    Check(
        f"`TensorBoard(dir, batch_interval={BATCH_INTERVAL})`",
        lambda d: TensorBoard(d / "tb_batch", batch_interval=BATCH_INTERVAL),
        str(BATCH_INTERVAL),
        "tensorboard",
    ),
    Check("`MLflowLogger(tracking_uri=...)` (file store)", _mlflow, "epoch", "mlflow"),
    Check("`WandbLogger(mode='offline')`", _wandb, "epoch", "wandb"),
)


def available(package: str | None) -> bool:
    """Tell whether the optional `package` can be imported (`None`: nothing needed)."""
    import importlib.util

    return package is None or importlib.util.find_spec(package) is not None


def run_check(check: Check, folder: Path) -> tuple[HostReads, int]:
    """Fit a small MLP with `check`'s logger alone; return its reads and the steps per epoch."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    reads = watch(check.make(folder))
    trainer = kiln.Trainer(
        model,
        loss="cross_entropy",
        metrics=["accuracy", "f1"],
        device="cpu",
        progress=False,
        callbacks=[reads.callback],
    )
    x, y = torch.randn(SAMPLES, 4), torch.randint(0, 3, (SAMPLES,))
    trainer.fit((x, y), val=0.2, epochs=EPOCHS, batch_size=BATCH)
    return reads, trainer.state.step // EPOCHS


def check_table(folder: Path) -> str:
    """Run every check whose package is installed; return the results as a Markdown table."""
    lines = [
        "| Logger, alone | Logging interval | Steps | Reads of device tensors | Most reads in "
        "one interval | Target | Result |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for index, check in enumerate(CHECKS):
        if not available(check.needs):
            lines.append(f"| {check.label} | not run: the {check.needs} package is missing |")
            continue
        reads, per_epoch = run_check(check, folder / str(index))
        steps = int(check.interval) if check.interval.isdigit() else per_epoch
        unit = "an epoch" if check.interval == "epoch" else f"{steps} step(s)"
        most = reads.per_interval(steps)
        lines.append(
            f"| {check.label} | {unit} | {per_epoch * EPOCHS} | {len(reads.steps)} | {most} "
            f"| <= 1 | {'pass' if most <= 1 else 'FAIL'} |"
        )
    return "\n".join(lines)
