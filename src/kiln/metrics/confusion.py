"""Confusion counts over a whole pass, and `ConfusionMatrix`, the metric that returns them.

What lives here: `ConfusionCounts`, the base of every metric read from a confusion matrix
(it counts, per batch, with one `bincount` into a tensor on the device: exact over the whole
pass, no Python per sample and no host synchronisation), and `ConfusionMatrix`. What does
not: precision, recall and F-scores (`fscore.py`), or how inputs are read (`inputs.py`).

The counts are a `(C + 1) x (C + 1)` grid (rows: true class, columns: predicted class) whose
last row and column count labels out of range; multilabel inputs give a `3 x 3` grid per label.
In memory that is `8 (C + 1)^2` bytes; the grid is what a checkpoint saves and what `sync` sums.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kiln.metrics.buffered import BufferedMetric
from kiln.metrics.inputs import (
    check_labels,
    check_options,
    decisions,
    out_of_range_error,
    resolve_task,
)
from kiln.metrics.sync import AllGather, AllReduce

_NORMALIZE = (None, "true", "pred", "all")


def _count(index: Tensor, size: int, name: str) -> Tensor:
    """How often each of `0 .. size - 1` occurs in `index`, without a host sync.

    Indices outside are counted in the last cell, which lies in the out-of-range row.
    """
    if index.device.type == "cpu":  # no device to wait for: check here, and raise at once
        try:
            counts = torch.bincount(index, minlength=size)  # refuses negative numbers
        except RuntimeError:
            counts = None
        if counts is not None and counts.numel() == size:
            return counts
        raise ValueError(
            f"{name}: some targets of the pass are out of range. Check the labels, or the "
            "metric's `num_classes`."
        )
    # CUDA's bincount reads the maximum back to size its result; a fixed-size scatter does not.
    index = torch.where((index >= 0) & (index < size), index, size - 1)
    counts = torch.zeros(size, dtype=torch.long, device=index.device)
    return counts.index_put_((index,), torch.ones_like(index), accumulate=True)


class ConfusionCounts(BufferedMetric):
    """The confusion counts of a pass; the base of metrics computed from them.

    Args:
        name: The logged name.
        task: `"binary"`, `"multiclass"`, `"multilabel"`, or `None` to read it from the
            shapes (multilabel is never guessed; see `kiln.metrics.inputs`).
        num_classes: Needed only when the outputs are predicted labels rather than scores.
        threshold: Decision threshold for binary and multilabel scores: 0.5 for
            probabilities, 0.0 for logits (named metrics follow the trainer's loss).

    Example:
        >>> import torch
        >>> counts = ConfusionCounts("counts")
        >>> counts.update(torch.tensor([[0.9, 0.1], [0.2, 0.8]]), torch.tensor([0, 0]))
        >>> counts.matrix()
        tensor([[1, 1],
                [0, 0]])
    """

    state_dtype = torch.long

    def __init__(
        self,
        name: str,
        task: str | None = None,
        num_classes: int | None = None,
        threshold: float = 0.5,
    ) -> None:
        check_options(task, num_classes)
        self.task = task
        self.num_classes = None if num_classes is None else int(num_classes)
        self.threshold = threshold
        super().__init__(name)

    def reset(self) -> None:
        """Forget the counts, and the task and classes read from the last pass."""
        super().reset()
        self._kind: tuple[str, int] | None = None
        self._offsets: Tensor | None = None  # per-label offsets of multilabel grids

    def _check_kind(self, task: str, classes: int, target: Tensor) -> None:
        """Hook for subclasses to refuse a task; called with the first batch's task."""

    def _check(self, output: Any, target: Any) -> None:
        """Read the batch's task; check the labels of the first batch of a pass."""
        task, classes = resolve_task(self.name, output, target, self.task, self.num_classes)
        if self._kind != (task, classes):
            if self._kind is not None:
                raise ValueError(
                    f"{self.name}: this batch is {task} with {classes} classes, but earlier "
                    f"batches of the pass were {self._kind[0]} with {self._kind[1]}."
                )
            self._check_kind(task, classes, target)
            check_labels(self.name, target, task, classes)
            self._kind = (task, classes)

    def _update(self, output: Tensor, target: Tensor) -> None:
        """Count the pairs of true and predicted labels of checked batches."""
        if self._kind is None:  # set by `_check`; tells the type checker
            raise RuntimeError("_update before _check")
        task, classes = self._kind
        truth, predicted = decisions(output, target, task, classes, self.threshold)
        if task == "multilabel":
            if self._offsets is None or self._offsets.device != truth.device:
                self._offsets = torch.arange(classes, device=truth.device) * 9
            index = (truth * 3 + predicted + self._offsets).reshape(-1)
            size = 9 * classes
        else:
            index = predicted.add(truth, alpha=classes + 1)
            size = (classes + 1) ** 2
        self._add(_count(index, size, self.name), index.numel())

    def matrix(self) -> Tensor:
        """The counts: `(C, C)` (rows true, columns predicted) or `(labels, 2, 2)`.

        Raises:
            ValueError: If no sample was seen, or some label was out of range.
        """
        grid = self._sums()
        if self._kind is None:  # counts restored from a checkpoint of an older kind
            raise ValueError(f"{self.name}: the saved counts do not say their task.")
        task, classes = self._kind
        if task == "multilabel":
            grid = grid.reshape(classes, 3, 3)
            valid = grid[:, :2, :2]
        else:
            grid = grid.reshape(classes + 1, classes + 1)
            valid = grid[:classes, :classes]
        outside = int(grid.sum() - valid.sum())  # the one read of the pass
        if outside:
            raise out_of_range_error(self.name, outside, task, classes)
        return valid

    def sync(self, all_reduce: AllReduce, all_gather: AllGather) -> None:
        """Sum the counts of every process (see `Metric.sync`)."""
        super().sync(all_reduce, all_gather)
        if self._kind is None and self._total is not None:  # saw nothing: take the others'
            width = self._total.numel()
            if self.task == "multilabel":
                self._kind = ("multilabel", width // 9)
            else:
                classes = round(width**0.5) - 1
                self._kind = ("binary" if self.task == "binary" else "multiclass", classes)
            self._total = self._total.reshape(-1)

    def state_dict(self) -> dict[str, Any]:
        """The counts so far, with the task and class count they were read as."""
        state = super().state_dict()
        state["kind"] = None if self._kind is None else list(self._kind)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from the counts `state_dict` returned."""
        super().load_state_dict(state)
        kind = state.get("kind")
        self._kind = None if kind is None else (str(kind[0]), int(kind[1]))

    def compute(self) -> Tensor:
        """The counts (see `matrix`)."""
        return self.matrix()


class ConfusionMatrix(ConfusionCounts):
    """The confusion matrix of a pass: `(C, C)` counts, rows true class, columns predicted.

    Binary inputs give `2 x 2`; multilabel inputs a `2 x 2` matrix per label,
    `(labels, 2, 2)`, as scikit-learn's `multilabel_confusion_matrix`. The value is not a
    single number, so the trainer does not log it with the epoch's numbers (history, CSV,
    progress): the pass tracker keeps it aside, in `PassTracker.tensors`, and the metric
    object keeps its last result as `metric.value` (on the CPU).

    Args:
        normalize: `None` for counts, or fractions over each true class (`"true"`), each
            predicted class (`"pred"`) or everything (`"all"`); a row or column with no
            sample gives zeros.
        task, num_classes, threshold, name: As for `ConfusionCounts`.

    Example:
        >>> import torch
        >>> metric = ConfusionMatrix()
        >>> metric.update(torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]]),
        ...               torch.tensor([0, 0, 1]))
        >>> metric.compute()
        tensor([[1, 1],
                [1, 0]])
    """

    def __init__(
        self,
        normalize: str | None = None,
        task: str | None = None,
        num_classes: int | None = None,
        threshold: float = 0.5,
        name: str = "confusion_matrix",
    ) -> None:
        if normalize not in _NORMALIZE:
            raise ValueError(
                f"`normalize` must be None, 'true', 'pred' or 'all'; received {normalize!r}."
            )
        self.normalize = normalize
        self.value: Tensor | None = None
        super().__init__(name, task, num_classes, threshold)

    def compute(self) -> Tensor:
        """The matrix, as counts or normalized; also kept as `self.value` (on the CPU)."""
        counts = self.matrix()
        if self.normalize is None:
            result = counts
        else:
            dims = {"true": (-1,), "pred": (-2,), "all": (-2, -1)}[self.normalize]
            totals = counts.sum(dims, keepdim=True).double()
            result = counts.double() / totals.clamp_min(1)
        self.value = result.cpu()
        return result
