"""Regression metrics: mean squared error, its root, mean absolute error, and R2.

What lives here: the metrics of outputs compared element-wise with targets of the same shape.
Each keeps sums on the device (float64), so its epoch value is the one over the whole pass.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kiln.metrics.base import Metric


def _difference(name: str, output: Any, target: Any) -> Tensor:
    _check_shapes(name, output, target)
    difference: Tensor = output - target
    return difference


def _check_shapes(name: str, output: Any, target: Any) -> None:
    if not isinstance(output, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{name} needs tensor outputs and targets.")
    if output.shape != target.shape:
        raise ValueError(
            f"{name}: the output's shape {tuple(output.shape)} differs from the target's "
            f"{tuple(target.shape)}, which would broadcast into a wrong value. Reshape the "
            "target, e.g. `y.view(-1, 1)`."
        )


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


class R2Score(Metric):
    """The coefficient of determination, `1 - SS_res / SS_tot`, over the whole pass.

    For outputs `(N, K)` it is computed per column and averaged, as scikit-learn's
    `r2_score`; a column whose targets are all equal scores 1 if predicted exactly, else 0.
    The sums kept are, per column, of squared errors, targets and squared targets, so the
    value is exact over the pass and not a mean of batch values.

    Example:
        >>> import torch
        >>> metric = R2Score()
        >>> metric.update(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 3.0]))
        >>> metric.update(torch.tensor([3.0]), torch.tensor([2.0]))
        >>> float(metric.compute())
        0.0
    """

    higher_is_better = True

    def __init__(self, name: str = "r2") -> None:
        super().__init__(name)

    def update(self, output: Any, target: Any) -> None:
        """Add one batch's sums of squared errors, targets and squared targets."""
        _check_shapes(self.name, output, target)
        shape = (target.shape[0], -1) if target.dim() > 1 else (-1, 1)
        # float64 before subtracting and squaring: the total sum of squares subtracts two
        # large numbers, and the errors are then as exact as scikit-learn's.
        dtype = torch.float32 if target.device.type == "mps" else torch.float64
        rows = target.reshape(shape).to(dtype)
        errors = output.reshape(shape).to(dtype) - rows
        sums = torch.cat([errors.square().sum(0), rows.sum(0), rows.square().sum(0)])
        self._add(sums, rows.shape[0])

    def compute(self) -> Tensor:
        """The mean over columns of each column's R2."""
        residual, total, squares = self._sums().reshape(3, -1)
        spread = squares - total.square() / self._count  # sum of (y - mean) ** 2
        score = 1 - residual / spread.clamp_min(1e-300)
        # Below float64's resolution of the sums, the targets count as constant.
        constant = spread <= squares * 1e-12
        score = torch.where(constant, (residual == 0).to(score.dtype), score)
        return score.mean()
