"""The `Metric` base class and `FunctionMetric`, which turns a per-batch function into one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


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

    def __init__(self, name: str) -> None:
        self.name = name
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._total: Tensor | None = None
        self._count = 0
        self._restored: Tensor | None = None  # sums from a checkpoint, moved at the next `_add`

    def update(self, output: Any, target: Any) -> None:
        """Accumulate one batch."""
        raise NotImplementedError(f"{type(self).__name__} must implement `update`.")

    def _add(self, total: Tensor, count: int) -> None:
        # In-place on our own tensor: no allocation, and no host sync. The trainer passes
        # detached outputs, so detaching again (one more kernel call per step) is rarely needed.
        if total.requires_grad:
            total = total.detach()
        if self._total is None:
            # float64 keeps long sums exact; Apple's MPS has no float64.
            dtype = torch.float32 if total.device.type == "mps" else torch.float64
            if self._restored is None:
                self._total = total.to(dtype, copy=True)
            else:  # the same addition the saving run made next, on the output's device
                self._total = self._restored.to(total.device, dtype, copy=True)
                self._total += total
                self._restored = None
        else:
            self._total += total
        self._count += count

    def compute(self) -> Tensor:
        """Return the value over everything accumulated since the last `reset`."""
        if self._total is None:
            self._total, self._restored = self._restored, None
        if self._total is None or self._count == 0:
            raise ValueError(
                f"The metric {self.name!r} has seen no samples, so it has no value yet."
            )
        return self._total / self._count

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
