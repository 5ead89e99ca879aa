"""Accuracy: binary (one output column), multiclass, top-k and multilabel.

What lives here: `Accuracy`, a sum of right decisions over a count, kept on the device. What
does not: metrics read from a confusion matrix (`fscore.py`) or from ranks (`auroc.py`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from kiln.metrics.buffered import BufferedMetric
from kiln.metrics.inputs import check_options
from kiln.metrics.joined import predicted_classes


class Accuracy(BufferedMetric):
    """The fraction of samples whose predicted class is right, in [0, 1].

    With one output column (shape `(N,)` or `(N, 1)`) the prediction is `output > threshold`
    against targets 0/1. With several columns it is the arg-max, or with `top_k` the sample
    counts as right when its label is among the `top_k` highest scores. Targets may be labels
    or one-hot/probability rows of the output's shape. With `task="multilabel"` every
    output is one yes/no decision (`output > threshold`) against 0/1 targets of the same shape,
    and the value is the fraction of right decisions (TorchFusion's `Accuracy(topK=k)` is
    `Accuracy(top_k=k)`, Poutyne's `top5` the name `"top5"`).

    Args:
        top_k: How many of the highest scores may hold the label.
        threshold: Decision threshold for one output column: 0.5 for probabilities, 0.0 for
            logits. The trainer picks 0.0 when the loss is `bce_with_logits` and the metric is
            given by name.
        task: `None` (read from the shapes), `"binary"`, `"multiclass"` or `"multilabel"`
            (never guessed: a one-hot target looks the same as a multilabel one).
        name: The logged name.

    Example:
        >>> import torch
        >>> metric = Accuracy(top_k=2, name="top2")
        >>> metric.update(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([1]))
        >>> float(metric.compute())
        1.0
    """

    higher_is_better = True

    def __init__(
        self,
        top_k: int = 1,
        threshold: float = 0.5,
        name: str = "accuracy",
        task: str | None = None,
    ) -> None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"`top_k` must be a positive integer; received {top_k!r}.")
        check_options(task, None)
        self.top_k = top_k
        self.threshold = threshold
        self.task = task
        super().__init__(name)

    def _check(self, output: Any, target: Any) -> None:
        """Reject a batch whose types or shapes cannot be meant (reads nothing back)."""
        if not isinstance(output, Tensor) or not isinstance(target, Tensor):
            raise TypeError(
                f"{self.name} needs tensor outputs and targets; received "
                f"{type(output).__name__} and {type(target).__name__}."
            )
        if self.task == "multilabel":
            if output.shape != target.shape:
                raise ValueError(
                    f"{self.name}: multilabel outputs need 0/1 targets of the same shape; "
                    f"received {tuple(output.shape)} and {tuple(target.shape)}."
                )
            return
        one_column = output.dim() == 1 or output.shape[1] == 1
        if self.task is not None and one_column != (self.task == "binary"):
            raise ValueError(
                f"{self.name}: task={self.task!r} needs "
                f"{'one output column' if self.task == 'binary' else 'a column per class'}; "
                f"received outputs of shape {tuple(output.shape)}."
            )
        if one_column:
            if output.numel() != target.numel():
                raise ValueError(
                    f"{self.name}: one output column of {output.numel()} values cannot be "
                    f"compared with targets of shape {tuple(target.shape)}."
                )
            return
        expected = (output.shape[0], *output.shape[2:])
        one_hot = target.is_floating_point() and target.shape == output.shape
        if not one_hot and tuple(target.shape) != expected:
            raise ValueError(
                f"{self.name}: scores of shape {tuple(output.shape)} need one label per "
                f"sample, a target of shape {expected}; received {tuple(target.shape)}. "
                "Reshape the labels, e.g. `y.view(-1)`."
            )
        if self.top_k > output.shape[1]:
            raise ValueError(
                f"{self.name}: top_k={self.top_k} exceeds the {output.shape[1]} classes."
            )

    def _update(self, output: Tensor, target: Tensor) -> None:
        """Count the right predictions of checked batches."""
        if self.task == "multilabel":
            truth = target > 0.5 if target.is_floating_point() else target == 1
            self._add(((output > self.threshold) == truth).sum(), target.numel())
        elif output.dim() == 1 or output.shape[1] == 1:
            predicted = output.reshape(-1) > self.threshold
            self._add((predicted == (target.reshape(-1) > 0.5)).sum(), predicted.numel())
        else:
            if target.is_floating_point() and target.shape == output.shape:
                target = target.argmax(1)
            if self.top_k == 1:  # the arg-max is shared with F1 and the like (`joined.py`)
                right = predicted_classes(output) == target
            else:
                right = (output.topk(self.top_k, 1).indices == target.unsqueeze(1)).any(1)
            self._add(right.sum(), target.numel())
