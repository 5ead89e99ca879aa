"""Regression metrics: mean squared error, its root, and mean absolute error."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from kiln.metrics.base import Metric


def _difference(name: str, output: Any, target: Any) -> Tensor:
    if not isinstance(output, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{name} needs tensor outputs and targets.")
    if output.shape != target.shape:
        raise ValueError(
            f"{name}: the output's shape {tuple(output.shape)} differs from the target's "
            f"{tuple(target.shape)}, which would broadcast into a wrong value. Reshape the "
            "target, e.g. `y.view(-1, 1)`."
        )
    return output - target


class MeanSquaredError(Metric):
    """The mean of `(output - target) ** 2` over all elements.

    Example:
        >>> import torch
        >>> metric = MeanSquaredError()
        >>> metric.update(torch.zeros(2, 1), torch.full((2, 1), 3.0)); float(metric.compute())
        9.0
    """

    higher_is_better = False

    def __init__(self, name: str = "mse") -> None:
        super().__init__(name)

    def update(self, output: Any, target: Any) -> None:
        """Add the squared errors of one batch."""
        difference = _difference(self.name, output, target)
        self._add(difference.square().sum(), difference.numel())


class RootMeanSquaredError(MeanSquaredError):
    """The square root of the mean squared error over the whole pass.

    Example:
        >>> import torch
        >>> metric = RootMeanSquaredError()
        >>> metric.update(torch.zeros(2), torch.full((2,), 3.0)); float(metric.compute())
        3.0
    """

    def __init__(self, name: str = "rmse") -> None:
        super().__init__(name)

    def compute(self) -> Tensor:
        """Return the root of the mean squared error."""
        return super().compute().sqrt()


class MeanAbsoluteError(Metric):
    """The mean of `|output - target|` over all elements.

    Example:
        >>> import torch
        >>> metric = MeanAbsoluteError()
        >>> metric.update(torch.zeros(2), torch.tensor([1.0, -3.0])); float(metric.compute())
        2.0
    """

    higher_is_better = False

    def __init__(self, name: str = "mae") -> None:
        super().__init__(name)

    def update(self, output: Any, target: Any) -> None:
        """Add the absolute errors of one batch."""
        difference = _difference(self.name, output, target)
        self._add(difference.abs().sum(), difference.numel())
