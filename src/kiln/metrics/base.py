"""The `Metric` base class and `FunctionMetric`, which turns a per-batch function into one.

What lives here: the state every summing metric shares (a sum and a sample count kept on the
device, saved by `state_dict` for mid-pass resume, combined across processes by `sync`). What
does not: the metrics themselves (`classification.py`, `regression.py`, `confusion.py`, ...)
and the collectives (`sync.py` states their contract; `kiln.distributed` provides them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from kiln.metrics.sync import AllGather, AllReduce, sum_across


class Metric:
    """A value accumulated over the batches of a pass: `reset`, `update`, `compute`.

    Subclasses keep their sums as tensors on the output's device, so updating never waits for
    the device; `compute` returns a 0-dim tensor, read once per epoch.

    Args:
        name: The key under which the value is logged (`val_` is prefixed in validation).

    Example:
        >>> import torch
        >>> from kiln.metrics import Accuracy
        >>> metric = Accuracy()
        >>> metric.update(torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 0]))
        >>> float(metric.compute())
        0.5
    """

    #: Whether a larger value is better, used by callbacks whose `mode` is "auto".
    higher_is_better: bool | None = None
    #: The dtype of the sums; `None` means float64 (float32 on Apple's MPS, which has no
    #: float64). Counting metrics use int64, exact at any length.
    state_dtype: torch.dtype | None = None

    def __init__(self, name: str) -> None:
        self.name = name
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._total: Tensor | None = None
        self._count = 0
        self._restored: Tensor | None = None  # sums from a checkpoint, moved at the next `_add`
        self._synced = False

    def update(self, output: Any, target: Any) -> None:
        """Accumulate one batch."""
        raise NotImplementedError(f"{type(self).__name__} must implement `update`.")

    def _add(self, total: Tensor, count: int) -> None:
        # In-place on our own tensor: no allocation, and no host sync. The trainer passes
        # detached outputs, so detaching again (one more kernel call per batch) is rarely needed.
        if total.requires_grad:
            total = total.detach()
        if self._total is None:
            # float64 keeps long sums exact; Apple's MPS has no float64.
            dtype = self.state_dtype or (
                torch.float32 if total.device.type == "mps" else torch.float64
            )
            # Not an inference tensor, even in an evaluation: sums may grow outside that mode
            # (buffered metrics count kept batches when the value is read).
            with torch.inference_mode(False):
                if self._restored is None:
                    self._total = total.to(dtype, copy=True)
                else:  # the same addition the saving run made next, on the output's device
                    self._total = self._restored.to(total.device, dtype, copy=True)
                    self._total += total
                    self._restored = None
        else:
            self._total += total
        self._count += count

    def _sums(self) -> Tensor:
        """The sums so far (restored ones included); raises if there are none."""
        if self._total is None:
            self._total, self._restored = self._restored, None
        if self._total is None or self._count == 0:
            raise ValueError(
                f"The metric {self.name!r} has seen no samples, so it has no value yet."
            )
        return self._total

    def compute(self) -> Tensor:
        """Return the value over everything accumulated since the last `reset`."""
        return self._sums() / self._count

    def sync(self, all_reduce: AllReduce, all_gather: AllGather) -> None:
        """Replace this process's state by the state of all processes together.

        Called on every rank at the end of a pass, after the last `update` and before
        `compute`, by the distributed helper; then `compute` gives the value over the whole
        data, exactly as one process that saw it all. Sums and counts are summed; metrics that
        need the whole set (AUROC) gather it. See `kiln.metrics.sync` for the two functions.

        Raises:
            ValueError: If the state was already synchronized since the last `reset` (a second
                sum would count every sample once more).

        Example:
            >>> import torch
            >>> from kiln.metrics import Accuracy
            >>> metric = Accuracy()
            >>> metric.update(torch.tensor([[2.0, 1.0]]), torch.tensor([0]))
            >>> metric.sync(lambda t: t * 2, lambda t: t)  # two ranks that saw the same
            >>> float(metric.compute()), metric.state_dict()["count"]
            (1.0, 2)
        """
        self._begin_sync()
        total = self._restored if self._total is None else self._total
        total, self._count = sum_across(total, self._count, all_reduce, all_gather)
        if total is not None and self.state_dtype is not None:
            total = total.to(self.state_dtype)
        self._total, self._restored = total, None

    def _begin_sync(self) -> None:
        if self._synced:
            raise ValueError(
                f"The metric {self.name!r} already holds the state of all processes; sync it "
                "once per pass, after its last update (reset starts a new pass)."
            )
        self._synced = True

    def state_dict(self) -> dict[str, Any]:
        """Return the sums so far, so a checkpoint taken in the middle of a pass can go on."""
        total = self._restored if self._total is None else self._total
        saved = None if total is None else total.to("cpu", copy=True)  # not a view of ours
        return {"total": saved, "count": self._count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from the sums `state_dict` returned."""
        self._total, self._restored = None, state["total"]
        self._count = int(state["count"])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class FunctionMetric(Metric):
    """A metric from a function `fn(output, target)` that returns the mean over a batch.

    The epoch value is the mean of the batch values weighted by batch size.

    Args:
        fn: The function; its result may be a tensor or a number.
        name: The logged name; by default the function's `__name__`.

    Example:
        >>> import torch
        >>> metric = FunctionMetric(lambda out, y: (out - y).abs().max(), name="max_error")
        >>> metric.update(torch.zeros(4), torch.ones(4)); float(metric.compute())
        1.0
    """

    def __init__(self, fn: Callable[[Any, Any], Any], name: str | None = None) -> None:
        self.fn = fn
        super().__init__(name or str(getattr(fn, "__name__", type(fn).__name__)))

    def update(self, output: Any, target: Any) -> None:
        """Add the function's value on this batch, weighted by the batch size."""
        value = self.fn(output, target)
        size = len(target) if target is not None and hasattr(target, "__len__") else 1
        if not isinstance(value, Tensor):
            value = torch.tensor(float(value))
        self._add(value * size, size)
