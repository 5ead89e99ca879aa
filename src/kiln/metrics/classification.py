"""Classification metrics: accuracy, binary (one output column), multiclass and top-k."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from kiln.metrics.base import Metric


class Accuracy(Metric):
    """The fraction of samples whose predicted class is right, in [0, 1].

    With one output column (shape `(N,)` or `(N, 1)`) the prediction is `output > threshold`
    against targets 0/1. With several columns it is the arg-max, or with `top_k` the sample
    counts as right when its label is among the `top_k` highest scores. Targets may be labels
    or one-hot/probability rows of the output's shape.

    Args:
        top_k: How many of the highest scores may hold the label.
        threshold: Decision threshold for one output column: 0.5 for probabilities, 0.0 for
            logits. The trainer picks 0.0 when the loss is `bce_with_logits` and the metric is
            given by name.
        name: The logged name.

    Example:
        >>> import torch
        >>> metric = Accuracy(top_k=2, name="top2")
        >>> metric.update(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([1]))
        >>> float(metric.compute())
        1.0
    """

    higher_is_better = True

    def __init__(self, top_k: int = 1, threshold: float = 0.5, name: str = "accuracy") -> None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"`top_k` must be a positive integer; received {top_k!r}.")
        self.top_k = top_k
        self.threshold = threshold
        super().__init__(name)

    def update(self, output: Any, target: Any) -> None:
        """Count the right predictions of one batch."""
        if not isinstance(output, Tensor) or not isinstance(target, Tensor):
            raise TypeError(
                f"{self.name} needs tensor outputs and targets; received "
                f"{type(output).__name__} and {type(target).__name__}."
            )
        if output.dim() == 1 or output.shape[1] == 1:
            predicted = output.reshape(-1) > self.threshold
            truth = target.reshape(-1) > 0.5
            if predicted.shape != truth.shape:
                raise ValueError(
                    f"{self.name}: one output column of {len(predicted)} values cannot be "
                    f"compared with targets of shape {tuple(target.shape)}."
                )
            self._add((predicted == truth).sum(), truth.numel())
            return
        if target.is_floating_point() and target.shape == output.shape:
            target = target.argmax(1)
        expected = (output.shape[0], *output.shape[2:])
        if tuple(target.shape) != expected:
            raise ValueError(
                f"{self.name}: scores of shape {tuple(output.shape)} need one label per "
                f"sample, a target of shape {expected}; received {tuple(target.shape)}. "
                "Reshape the labels, e.g. `y.view(-1)`."
            )
        if self.top_k == 1:
            right = output.argmax(1) == target
        else:
            if self.top_k > output.shape[1]:
                raise ValueError(
                    f"{self.name}: top_k={self.top_k} exceeds the {output.shape[1]} classes."
                )
            right = (output.topk(self.top_k, 1).indices == target.unsqueeze(1)).any(1)
        self._add(right.sum(), target.numel())
