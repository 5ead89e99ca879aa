"""Metrics from torchmetrics, used as they are.

What lives here: `TorchMetric`, which gives a `torchmetrics.Metric` what the trainer needs
(a name, the device of the outputs, `state_dict` for mid-pass resume), and `is_torchmetrics`,
which recognises one without importing torchmetrics (kiln does not depend on it).
What does not: kiln's own metrics.

torchmetrics combines its states across processes itself, inside `compute`, when
`torch.distributed` is initialised; `TorchMetric.sync` therefore does nothing. Its argument
checks read values back from the device on every `update`; a torchmetrics metric built with
`validate_args=False` avoids that.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from kiln.metrics.sync import AllGather, AllReduce


def is_torchmetrics(obj: Any) -> bool:
    """Whether `obj` is a `torchmetrics.Metric` (checked by its classes' modules, no import).

    Example:
        >>> is_torchmetrics(object())
        False
    """
    return any(
        cls.__name__ == "Metric" and cls.__module__.split(".")[0] == "torchmetrics"
        for cls in type(obj).__mro__
    )


def snake_case(name: str) -> str:
    """A class name as a logged name: `MulticlassF1Score` gives `multiclass_f1_score`.

    Example:
        >>> snake_case("BinaryAUROC"), snake_case("RunningMax")
        ('binary_auroc', 'running_max')
    """
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


class TorchMetric:
    """A torchmetrics metric as a kiln metric: `reset`, `update`, `compute`, `state_dict`.

    The trainer wraps a torchmetrics metric in this on its own (`metrics=[MulticlassF1Score(
    num_classes=10)]`); the original stays reachable as `.metric`. The metric moves to the
    outputs' device at its first update, and its states (tensors or lists of tensors) go
    through `state_dict`, which the module's own `state_dict` leaves out by default.

    Args:
        metric: The `torchmetrics.Metric`.
        name: The logged name; by default the class name in snake case.

    Example:
        >>> import torch
        >>> from kiln.metrics import Accuracy
        >>> wrapped = TorchMetric(Accuracy(), name="acc")  # any object with the same methods
        >>> wrapped.update(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
        >>> float(wrapped.compute())
        1.0
    """

    def __init__(self, metric: Any, name: str | None = None) -> None:
        self.metric = metric
        self.name = name or snake_case(type(metric).__name__)
        self.higher_is_better: bool | None = getattr(metric, "higher_is_better", None)
        self._device: torch.device | None = None

    def reset(self) -> None:
        """Forget everything accumulated (torchmetrics' `reset`)."""
        self.metric.reset()

    def update(self, output: Any, target: Any) -> None:
        """Update the wrapped metric, on the outputs' device."""
        device = output.device if isinstance(output, Tensor) else None
        if device is not None and device != self._device:
            if callable(getattr(self.metric, "to", None)):
                self.metric.to(device)
            self._device = device
        self.metric.update(output, target)

    def compute(self) -> Any:
        """The wrapped metric's value."""
        return self.metric.compute()

    def sync(self, all_reduce: AllReduce, all_gather: AllGather) -> None:
        """Nothing to do: torchmetrics synchronises itself in `compute`."""

    def _states(self) -> dict[str, Any]:
        state = getattr(self.metric, "metric_state", None)
        if isinstance(state, dict):
            return state
        return {key: getattr(self.metric, key) for key in getattr(self.metric, "_defaults", {})}

    def state_dict(self) -> dict[str, Any]:
        """The wrapped metric's states, on the CPU, and how many updates it has seen."""
        states: dict[str, Any] = {}
        for key, value in self._states().items():
            if isinstance(value, Tensor):
                states[key] = value.detach().cpu().clone()
            elif isinstance(value, list):
                states[key] = [item.detach().cpu().clone() for item in value]
            else:
                states[key] = value
        return {"states": states, "updates": int(getattr(self.metric, "_update_count", 0))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Give the wrapped metric back the states `state_dict` returned."""
        self.metric.reset()
        if callable(getattr(self.metric, "to", None)):
            self.metric.to("cpu")
        self._device = torch.device("cpu")
        for key, value in state["states"].items():
            setattr(self.metric, key, list(value) if isinstance(value, list) else value)
        if hasattr(self.metric, "_update_count"):
            self.metric._update_count = int(state["updates"])

    def __repr__(self) -> str:
        return f"TorchMetric({self.metric!r}, name={self.name!r})"
