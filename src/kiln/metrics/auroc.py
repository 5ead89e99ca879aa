"""`AUROC`: the area under the ROC curve, computed on the whole pass at once.

What lives here: `AUROC` (binary, multiclass one-vs-rest, multilabel; macro mean) and the
rank computation it rests on. What does not: reading inputs (`inputs.py`).

The area is the probability that a random positive scores above a random negative (ties count
one half), the Mann-Whitney statistic, which equals scikit-learn's `roc_auc_score`. It cannot
be summed over batches, so the metric keeps every score and target of the pass on the device
(a list of the batches' tensors, no copy per batch and no host sync) and ranks them at the end:
about `4 * N * C + 8 * N` bytes for N samples of C float32 scores (48 MB for a million samples
of 10 classes). A checkpoint saves them; `sync` gathers them from every process.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kiln.metrics.base import Metric
from kiln.metrics.inputs import check_labels, check_options, resolve_task, scores
from kiln.metrics.sync import AllGather, AllReduce, gather_across


def column_auroc(scores: Tensor, truth: Tensor) -> Tensor:
    """The AUROC of each column of `scores` (N, K) against booleans `truth` (N, K).

    A column whose targets are all positive or all negative has no AUROC: NaN.

    Example:
        >>> column_auroc(torch.tensor([[0.1], [0.4], [0.35], [0.8]]),
        ...              torch.tensor([[False], [False], [True], [True]]))
        tensor([0.7500], dtype=torch.float64)
    """
    n = scores.shape[0]
    ordered, order = scores.sort(0)
    position = torch.arange(n, device=scores.device).unsqueeze(1).expand_as(ordered)
    change = ordered[1:] != ordered[:-1]
    edge = torch.ones(1, ordered.shape[1], dtype=torch.bool, device=scores.device)
    starts = torch.cat([edge, change])  # the first of a run of equal scores
    ends = torch.cat([change, edge])  # the last of it
    first = torch.where(starts, position, 0).cummax(0).values
    last = torch.where(ends, position, n).flip(0).cummin(0).values.flip(0)
    rank = (first + last).double() / 2 + 1  # tied scores share their mean rank
    positive = truth.gather(0, order)
    positives = positive.sum(0).double()
    negatives = n - positives
    rank_sum = (rank * positive).sum(0)
    area = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    return torch.where((positives > 0) & (negatives > 0), area, float("nan"))


def _probabilities(rows: Tensor, logits: bool | None) -> Tensor:
    """Multiclass scores as probabilities: a softmax unless they already are probabilities."""
    if logits is None:  # rows of non-negative numbers summing to one are probabilities
        sums = rows.double().sum(1)
        logits = not (bool((rows >= 0).all()) and bool(((sums - 1).abs() < 1e-3).all()))
    return rows.double().softmax(1) if logits else rows.double()


class AUROC(Metric):
    """The area under the ROC curve over the whole pass, in [0, 1] (0.5 is chance).

    Binary scores `(N,)` or `(N, 1)` against 0/1 targets; multiclass scores `(N, C)` against
    labels, one class against the rest and averaged over the classes; multilabel
    (`task="multilabel"`) scores `(N, L)` against 0/1 targets, averaged over the labels. The
    mean leaves out classes whose targets in the pass are all positive or all negative (their
    area is undefined); with none left the value is NaN.

    Args:
        task: `"binary"`, `"multiclass"`, `"multilabel"`, or `None` to read it from shapes.
        logits: Whether multiclass scores are logits (a softmax turns them into
            probabilities, which the one-vs-rest areas need). `None`: rows of non-negative
            numbers summing to 1 are probabilities, others logits. Binary and multilabel
            scores may be either: a sigmoid keeps their order.
        name: The logged name.

    Example:
        >>> import torch
        >>> metric = AUROC()
        >>> metric.update(torch.tensor([0.1, 0.4]), torch.tensor([0, 0]))
        >>> metric.update(torch.tensor([0.35, 0.8]), torch.tensor([1, 1]))
        >>> float(metric.compute())
        0.75
    """

    higher_is_better = True

    def __init__(
        self, task: str | None = None, logits: bool | None = None, name: str = "auroc"
    ) -> None:
        check_options(task, None)
        self.task = task
        self.logits = logits
        super().__init__(name)

    def reset(self) -> None:
        """Forget the scores and targets kept so far."""
        super().reset()
        self._scores: list[Tensor] = []
        self._targets: list[Tensor] = []
        self._kind: tuple[str, int] | None = None
        self._restored_chunks = False  # the first chunks came from a checkpoint, on the CPU

    def update(self, output: Any, target: Any) -> None:
        """Keep one batch's scores and targets."""
        if isinstance(output, Tensor) and not output.is_floating_point():
            raise TypeError(
                f"{self.name} ranks scores, so it needs floating outputs; received "
                f"{output.dtype}. Pass the model's scores, not predicted labels."
            )
        task, classes = resolve_task(self.name, output, target, self.task, None)
        if self._kind != (task, classes):
            if self._kind is not None:
                raise ValueError(
                    f"{self.name}: this batch is {task} with {classes} classes, but earlier "
                    f"batches of the pass were {self._kind[0]} with {self._kind[1]}."
                )
            check_labels(self.name, target, task, classes)
            self._kind = (task, classes)
        rows, truth = scores(output, target, task)
        if rows.requires_grad:
            rows = rows.detach()
        if self._restored_chunks:  # continue on the device of the new batches
            self._scores = [chunk.to(rows.device) for chunk in self._scores]
            self._targets = [chunk.to(rows.device) for chunk in self._targets]
            self._restored_chunks = False
        self._scores.append(rows)
        self._targets.append(truth)
        self._count += rows.shape[0]

    def _columns(self) -> tuple[Tensor, Tensor]:
        """All scores and boolean targets of the pass as columns, checked."""
        if not self._scores or self._kind is None:
            raise ValueError(
                f"The metric {self.name!r} has seen no samples, so it has no value yet."
            )
        task, classes = self._kind
        rows, targets = torch.cat(self._scores), torch.cat(self._targets)
        if task == "multiclass":
            labels = targets.long()
            if bool(((labels < 0) | (labels >= classes) | (labels != targets)).any()):
                raise ValueError(
                    f"{self.name}: some targets of the pass are not labels 0 to {classes - 1}."
                )
            truth = torch.nn.functional.one_hot(labels, classes).bool()
            return _probabilities(rows, self.logits), truth
        if targets.is_floating_point():
            truth = targets > 0.5
        else:
            if bool(((targets != 0) & (targets != 1)).any()):
                raise ValueError(f"{self.name}: some targets of the pass are not 0 or 1.")
            truth = targets.bool()
        if task == "binary":
            return rows.unsqueeze(1), truth.unsqueeze(1)
        return rows, truth

    def compute(self) -> Tensor:
        """The area over the pass (the macro mean for several classes or labels)."""
        rows, truth = self._columns()
        return column_auroc(rows, truth).nanmean()

    def sync(self, all_reduce: AllReduce, all_gather: AllGather) -> None:
        """Gather the scores and targets of every process (see `Metric.sync`)."""
        self._begin_sync()
        rows = torch.cat(self._scores) if self._scores else None
        targets = torch.cat(self._targets) if self._targets else None
        rows = gather_across(rows, all_gather, "scores")
        targets = gather_across(targets, all_gather, "targets")
        if rows is None or targets is None:
            self._scores, self._targets, self._count = [], [], 0
            return
        if self._kind is None:  # this process saw nothing: read the kind from the others'
            wide = rows.dim() == 2
            task = "multilabel" if targets.dim() == 2 else ("multiclass" if wide else "binary")
            self._kind = (task, rows.shape[1] if wide else 2)
        self._scores, self._targets, self._count = [rows], [targets], rows.shape[0]

    def state_dict(self) -> dict[str, Any]:
        """The scores and targets so far, on the CPU, with the task they were read as."""
        return {
            "scores": torch.cat(self._scores).cpu() if self._scores else None,
            "targets": torch.cat(self._targets).cpu() if self._targets else None,
            "count": self._count,
            "kind": None if self._kind is None else list(self._kind),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from what `state_dict` returned."""
        self.reset()
        if state["scores"] is not None:
            self._scores, self._targets = [state["scores"]], [state["targets"]]
            self._restored_chunks = True
        self._count = int(state["count"])
        kind = state.get("kind")
        self._kind = None if kind is None else (str(kind[0]), int(kind[1]))
