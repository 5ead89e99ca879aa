"""Precision, recall and F-scores, computed once from a whole pass's confusion counts.

What lives here: `Precision`, `Recall`, `FBeta` and `F1`, each with `average` "macro" (the mean
over classes), "micro" (from the counts summed over classes) or "binary" (the positive class of
a binary task). What does not: the counting (`confusion.py`).

Because the counts cover the whole pass, the value is the one over the whole set, as
scikit-learn computes it on all the predictions at once; it is not a mean of batch values.
A macro mean leaves out the classes that occur neither as a target nor as a prediction in the
pass (scikit-learn's rule for class labels); a ratio with nothing to divide counts as 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kiln.metrics.confusion import ConfusionCounts

_AVERAGES = ("macro", "micro", "binary")


def _divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1e-300), 0.0)


class _ClassScore(ConfusionCounts):
    """A score from the true positives, false positives and false negatives of each class."""

    higher_is_better = True

    def __init__(
        self,
        name: str,
        average: str,
        task: str | None,
        num_classes: int | None,
        threshold: float,
    ) -> None:
        if average not in _AVERAGES:
            raise ValueError(
                f"`average` must be 'macro', 'micro' or 'binary'; received {average!r}."
            )
        self.average = average
        super().__init__(name, task, num_classes, threshold)

    def _check_kind(self, task: str, classes: int, target: Tensor) -> None:
        if self.average == "binary" and task != "binary":
            raise ValueError(
                f"{self.name}: average='binary' scores the positive class of a binary task, "
                f"but the inputs are {task}. Use average='macro' or 'micro'."
            )

    def _score(self, tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        raise NotImplementedError

    def compute(self) -> Tensor:
        """The score over the pass, a 0-dim float64 tensor."""
        counts = self.matrix().double()
        if counts.dim() == 3:  # multilabel: one 2 x 2 matrix per label
            tp, fp, fn = counts[:, 1, 1], counts[:, 0, 1], counts[:, 1, 0]
        else:
            tp = counts.diagonal()
            fp, fn = counts.sum(0) - tp, counts.sum(1) - tp
        if self.average == "binary":
            return self._score(tp[1], fp[1], fn[1])
        if self.average == "micro":
            return self._score(tp.sum(), fp.sum(), fn.sum())
        present = (tp + fp + fn) > 0
        scores = self._score(tp, fp, fn)
        return (scores * present).sum() / present.sum().clamp_min(1)


class Precision(_ClassScore):
    """The fraction of predicted positives that are right: `tp / (tp + fp)`.

    Args:
        average: "macro" (mean over classes), "micro" (over all decisions) or "binary"
            (the positive class of a binary task).
        task, num_classes, threshold: How inputs are read (see `ConfusionCounts`).
        name: The logged name.

    Example:
        >>> import torch
        >>> metric = Precision(average="binary")
        >>> metric.update(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([1, 0, 1]))
        >>> float(metric.compute())
        0.5
    """

    def __init__(
        self,
        average: str = "macro",
        task: str | None = None,
        num_classes: int | None = None,
        threshold: float = 0.5,
        name: str = "precision",
    ) -> None:
        super().__init__(name, average, task, num_classes, threshold)

    def _score(self, tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        return _divide(tp, tp + fp)


class Recall(_ClassScore):
    """The fraction of actual positives that are found: `tp / (tp + fn)`.

    Args:
        average: "macro", "micro" or "binary" (see `Precision`).
        task, num_classes, threshold: How inputs are read (see `ConfusionCounts`).
        name: The logged name.

    Example:
        >>> import torch
        >>> metric = Recall(average="binary")
        >>> metric.update(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([1, 0, 1]))
        >>> float(metric.compute())
        0.5
    """

    def __init__(
        self,
        average: str = "macro",
        task: str | None = None,
        num_classes: int | None = None,
        threshold: float = 0.5,
        name: str = "recall",
    ) -> None:
        super().__init__(name, average, task, num_classes, threshold)

    def _score(self, tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        return _divide(tp, tp + fn)


class FBeta(_ClassScore):
    """The F-beta score: `(1 + b^2) tp / ((1 + b^2) tp + b^2 fn + fp)`.

    It is the weighted harmonic mean of precision and recall, recall counting `beta` times as
    much as precision; 0 for a class with no true positive.

    Args:
        beta: The weight of recall; must be positive.
        average: "macro", "micro" or "binary" (see `Precision`).
        task, num_classes, threshold: How inputs are read (see `ConfusionCounts`).
        name: The logged name.

    Example:
        >>> import torch
        >>> metric = FBeta(beta=2.0, average="binary")
        >>> metric.update(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([1, 0, 1]))
        >>> round(float(metric.compute()), 4)
        0.5
    """

    def __init__(
        self,
        beta: float = 1.0,
        average: str = "macro",
        task: str | None = None,
        num_classes: int | None = None,
        threshold: float = 0.5,
        name: str = "fbeta",
    ) -> None:
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
            raise ValueError(f"`beta` must be a positive number; received {beta!r}.")
        self.beta = float(beta)
        super().__init__(name, average, task, num_classes, threshold)

    def _score(self, tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
        weight = self.beta**2
        return _divide((1 + weight) * tp, (1 + weight) * tp + weight * fn + fp)


class F1(FBeta):
    """The F1 score, the harmonic mean of precision and recall (`FBeta` with `beta=1`).

    Args:
        average: "macro" (the default), "micro" or "binary" (see `Precision`).
        task, num_classes, threshold: How inputs are read (see `ConfusionCounts`).
        name: The logged name.

    Example:
        >>> import torch
        >>> metric = F1()
        >>> metric.update(torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]]),
        ...               torch.tensor([0, 1, 0]))
        >>> round(float(metric.compute()), 4)  # classes 0 and 1 both score 2/3
        0.6667
    """

    def __init__(
        self,
        average: str = "macro",
        task: str | None = None,
        num_classes: int | None = None,
        threshold: float = 0.5,
        name: str = "f1",
    ) -> None:
        super().__init__(1.0, average, task, num_classes, threshold, name)
