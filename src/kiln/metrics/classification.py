"""Accuracy: binary (one output column), multiclass, top-k and multilabel.

What lives here: `Accuracy`, a sum of right decisions over a count, kept on the device. What
does not: metrics read from a confusion matrix (`fscore.py`) or from ranks (`auroc.py`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kiln.metrics.buffered import BufferedMetric
from kiln.metrics.inputs import check_options
from kiln.metrics.joined import predicted_classes
from kiln.options import whole_number


class Accuracy(BufferedMetric):
    """The fraction of samples whose predicted class is right, in [0, 1].

    With one output column (shape `(N,)` or `(N, 1)`) the prediction is `output > threshold`
    against targets 0/1. With several columns it is the arg-max, or with `top_k` the sample
    counts as right when its label is among the `top_k` highest scores. Targets may be labels
    or one-hot/probability rows of the output's shape. With `task="multilabel"` every
    output is one yes/no decision (`output > threshold`) against 0/1 targets of the same shape,
    and the value is the fraction of right decisions. Class labels equal to `ignore_index`
    (torch's -100, the padding of sequence work) are left out of the count, as cross-entropy
    leaves them out of the loss.

    Args:
        top_k: How many of the highest scores may hold the label.
        threshold: Decision threshold for one output column: 0.5 for probabilities, 0.0 for
            logits. The trainer picks 0.0 when the loss is `bce_with_logits` and the metric is
            given by name.
        task: `None` (read from the shapes), `"binary"`, `"multiclass"` or `"multilabel"`
            (never guessed: a one-hot target looks the same as a multilabel one).
        name: The logged name.
        ignore_index: A class label that is not counted (as in torch's cross-entropy), or
            `None` to count every target.

    Example:
        >>> import torch
        >>> metric = Accuracy(top_k=2, name="top2")
        >>> metric.update(torch.tensor([[3.0, 2.0, 1.0]]), torch.tensor([1]))
        >>> float(metric.compute())
        1.0
        >>> padded = Accuracy()  # the label -100 is padding: 1 right of the 2 counted
        >>> padded.update(torch.tensor([[2.0, 1.0]] * 3), torch.tensor([0, 1, -100]))
        >>> float(padded.compute())
        0.5
    """

    higher_is_better = True

    def __init__(
        self,
        top_k: int = 1,
        threshold: float = 0.5,
        name: str = "accuracy",
        task: str | None = None,
        ignore_index: int | None = -100,
    ) -> None:
        if whole_number(top_k) is None or top_k < 1:
            raise ValueError(f"`top_k` must be a positive integer; received {top_k!r}.")
        if ignore_index is not None and whole_number(ignore_index) is None:
            raise TypeError(f"`ignore_index` must be an int or None; received {ignore_index!r}.")
        check_options(task, None)
        self.top_k = int(top_k)
        self.threshold = threshold
        self.task = task
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        super().__init__(name)

    # The sums are `[right, ignored]`: the ignored targets are counted on the device, so that
    # leaving them out needs no read from it; the value is right / (count - ignored).

    def compute(self) -> Tensor:
        """The fraction of right decisions among the targets counted."""
        sums = self._sums()
        return sums[0] / (self._count - sums[1])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict`'s sums (a single sum, from before `ignore_index`, too)."""
        total = state["total"]
        if isinstance(total, Tensor) and total.dim() == 0:
            state = {**state, "total": torch.stack([total, torch.zeros_like(total)])}
        super().load_state_dict(state)

    def _count_right(self, right: Tensor, count: int, ignored: Tensor | None = None) -> None:
        right = right.sum()
        self._add(torch.stack([right, right.new_zeros(()) if ignored is None else ignored]), count)

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
            self._count_right((output > self.threshold) == truth, target.numel())
        elif output.dim() == 1 or output.shape[1] == 1:
            predicted = output.reshape(-1) > self.threshold
            self._count_right(predicted == (target.reshape(-1) > 0.5), predicted.numel())
        else:
            labels = not target.is_floating_point()
            if not labels and target.shape == output.shape:
                target = target.argmax(1)
            if self.top_k == 1:  # the arg-max is shared with F1 and the like (`joined.py`)
                right = predicted_classes(output) == target
            else:
                right = (output.topk(self.top_k, 1).indices == target.unsqueeze(1)).any(1)
            if labels and self.ignore_index is not None:  # no prediction equals -100: not right
                ignored = (target == self.ignore_index).sum()
                if 0 <= self.ignore_index < output.shape[1]:  # a class the model can predict
                    right = right & (target != self.ignore_index)
                self._count_right(right, target.numel(), ignored)
            else:
                self._count_right(right, target.numel())
