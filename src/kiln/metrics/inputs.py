"""Reading classification outputs and targets: binary, multiclass or multilabel.

What lives here: the rules, shared by the confusion-matrix metrics and AUROC, that say which
task a pair `(output, target)` is, the checks that reject shapes that cannot be meant, and the
conversion to predicted and true labels or to scores. What does not: accumulating anything.

The rules, in order:

- `task="multilabel"` (never guessed: a one-hot target looks the same): outputs `(N, L, ...)`
  scored per label against 0/1 targets of the same shape; a single label is binary.
- One output column, `(N,)` or `(N, 1)`: binary, predicted positive when above `threshold`.
- Integer outputs of the target's shape: predicted labels, which need `num_classes`.
- Otherwise multiclass: scores `(N, C, ...)` read by their arg-max, against labels
  `(N, ...)` or one-hot / probability rows of the output's shape.

A label out of range must never land in another class's count. The counting metrics give the
true labels an extra value `C` (an extra row) that stands for "out of range": on the CPU
labels beyond it are caught when counted, and on accelerators they are clamped into it, so
that no batch waits for the device; `compute` reports them. The first batch of a pass is
checked at once, so that a bad label is usually reported at that batch, not at the pass's end.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from kiln.metrics.joined import predicted_classes
from kiln.options import whole_number

TASKS = ("binary", "multiclass", "multilabel")


def check_options(task: Any, num_classes: Any) -> None:
    """Reject a task or class count that no input could match.

    Example:
        >>> check_options("multiclass", 3)
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"`task` must be one of {', '.join(TASKS)} or None; received {task!r}.")
    if num_classes is not None and (whole_number(num_classes) is None or num_classes < 2):
        raise ValueError(
            f"`num_classes` must be an integer of at least 2; received {num_classes!r}."
        )


def resolve_task(
    name: str, output: Any, target: Any, task: str | None, num_classes: int | None
) -> tuple[str, int]:
    """Return the task and its class (or label) count for one batch.

    Raises:
        TypeError: If the output or target is not a tensor.
        ValueError: If the shapes fit no task, or disagree with `task` or `num_classes`.

    Example:
        >>> resolve_task("f1", torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), None, None)
        ('multiclass', 3)
    """
    if not isinstance(output, Tensor) or not isinstance(target, Tensor):
        raise TypeError(
            f"{name} needs tensor outputs and targets; received {type(output).__name__} and "
            f"{type(target).__name__}."
        )
    _check_samples(name, output, target)
    one_column = output.dim() == 1 or output.shape[1] == 1
    if task == "multilabel" and not one_column:  # one label is a binary task
        if output.shape != target.shape:
            raise ValueError(
                f"{name}: multilabel outputs (N, labels) need targets of the same shape; "
                f"received {tuple(output.shape)} and {tuple(target.shape)}."
            )
        return task, output.shape[1]
    if not output.is_floating_point() and output.shape == target.shape:
        if task == "binary":
            return task, 2
        if num_classes is None:
            raise ValueError(
                f"{name}: the outputs are labels (integers of the target's shape), so the "
                "number of classes cannot be read from them. Pass `num_classes=`, or give the "
                "metric the scores (N, classes) instead."
            )
        return "multiclass", num_classes
    if one_column:
        if task == "multiclass":
            raise ValueError(
                f"{name}: task='multiclass' needs one score column per class; received "
                f"outputs of shape {tuple(output.shape)}."
            )
        if output.numel() != target.numel():
            raise ValueError(
                f"{name}: one output column of {output.shape[0]} values cannot be compared "
                f"with targets of shape {tuple(target.shape)}."
            )
        return "binary", 2
    if task == "binary":
        raise ValueError(
            f"{name}: task='binary' needs one output column, (N,) or (N, 1); received "
            f"{tuple(output.shape)}."
        )
    return "multiclass", _multiclass(name, output, target, num_classes)


def _check_samples(name: str, output: Tensor, target: Tensor) -> None:
    if output.dim() == 0 or output.shape[0] != (target.shape[0] if target.dim() else -1):
        raise ValueError(
            f"{name}: the output of shape {tuple(output.shape)} and the target of shape "
            f"{tuple(target.shape)} do not hold the same number of samples."
        )


def _multiclass(name: str, output: Tensor, target: Tensor, num_classes: int | None) -> int:
    """The class count of multiclass scores, once their target's shape is checked."""
    classes = output.shape[1]
    if num_classes is not None and num_classes != classes:
        raise ValueError(
            f"{name}: num_classes={num_classes}, but the outputs have {classes} columns."
        )
    expected = (output.shape[0], *output.shape[2:])
    if tuple(target.shape) != expected and target.shape != output.shape:
        raise ValueError(
            f"{name}: scores of shape {tuple(output.shape)} need one label per sample, a "
            f"target of shape {expected}, or one-hot rows of the output's shape; received "
            f"{tuple(target.shape)}. Reshape the labels, e.g. `y.view(-1)`."
        )
    return classes


def _bounded(labels: Tensor, classes: int) -> Tensor:
    """Labels as int64 in [0, classes], where `classes` stands for any label out of range."""
    labels = labels.long() if labels.dtype != torch.long else labels
    # -1 and everything below it, and `classes` and above, both land on `classes`.
    return labels.clamp(-1, classes).remainder_(classes + 1)


def _columns_last(values: Tensor) -> Tensor:
    """(N, C, d1, ...) as rows (N * d1 * ..., C)."""
    return values if values.dim() == 2 else values.movedim(1, -1).reshape(-1, values.shape[1])


def decisions(
    output: Tensor, target: Tensor, task: str, classes: int, threshold: float
) -> tuple[Tensor, Tensor]:
    """Return `(truth, predicted)` int64 labels.

    Binary and multiclass give 1-D labels. Predicted labels are always in `[0, classes)`, or
    bounded as the module docstring says when the outputs are labels themselves; true labels
    are left as given (the caller counts those out of range). Multilabel gives rows
    `(M, labels)` of 0/1, bounded (2 marks a target that is neither).

    Example:
        >>> decisions(torch.tensor([0.2, 0.9]), torch.tensor([0, 3]), "binary", 2, 0.5)
        (tensor([0, 3]), tensor([0, 1]))
    """
    if task == "multilabel":
        predicted = _columns_last(output) > threshold
        truth = _columns_last(target)
        truth = truth > 0.5 if truth.is_floating_point() else _bounded(truth, 2)
        return truth.long(), predicted.long()
    if not output.is_floating_point():  # predicted labels, which could land in a wrong cell
        truth = target.reshape(-1)
        return truth.long(), _bounded(output.reshape(-1), classes)
    if task == "binary":
        predicted = (output.reshape(-1) > threshold).long()
        truth = target.reshape(-1)
        return ((truth > 0.5) if truth.is_floating_point() else truth).long(), predicted
    predicted = predicted_classes(output)  # shared with accuracy (`joined.py`)
    if target.shape == output.shape:
        target = target.argmax(1)
    # Scores (N, C) against labels (N,), the common case, need no reshape or cast: each
    # skipped call is a few microseconds per count on a small model.
    if predicted.dim() != 1:
        predicted, target = predicted.reshape(-1), target.reshape(-1)
    return (target if target.dtype == torch.long else target.long()), predicted


def scores(output: Tensor, target: Tensor, task: str) -> tuple[Tensor, Tensor]:
    """Return `(scores, truth)`: rows of scores `(M, C)` (1-D when binary) and their targets.

    The targets are left as given (labels, or 0/1 per label) for `compute` to check.

    Example:
        >>> scores(torch.tensor([[0.2], [0.9]]), torch.tensor([0, 1]), "binary")
        (tensor([0.2000, 0.9000]), tensor([0, 1]))
    """
    if task == "binary":
        return output.reshape(-1), target.reshape(-1)
    if task == "multilabel":
        return _columns_last(output), _columns_last(target)
    if target.shape == output.shape:
        target = target.argmax(1)
    return _columns_last(output), target.reshape(-1)


def check_labels(name: str, target: Tensor, task: str, classes: int) -> None:
    """Raise at once if a target is no label of the task (one host read: the first batch).

    Raises:
        ValueError: For a label outside `[0, classes)` (0/1 for binary and multilabel
            integer targets), or a fractional label.

    Example:
        >>> check_labels("f1", torch.tensor([0, 2]), "multiclass", 3)
    """
    if task == "multiclass" and target.dim() > 0 and target.is_floating_point():
        if target.shape[-1] == classes and target.dim() > 1:
            return  # one-hot rows, read by their arg-max
        bad = (target < 0) | (target >= classes) | (target != target.floor())
    elif target.is_floating_point() or target.dtype == torch.bool:
        return  # 0/1 read as `> 0.5`
    else:
        bad = (target < 0) | (target >= (classes if task == "multiclass" else 2))
    if bool(bad.any()):
        value = target[bad][0].item()
        expected = f"labels 0 to {classes - 1}" if task == "multiclass" else "0 or 1"
        padding = (
            " -100 is the label torch's cross-entropy ignores (padding); this metric counts "
            "every target: use 'accuracy', which skips it, or measure without the padding."
            if value == -100
            else " Check the labels, or the metric's `num_classes`."
        )
        raise ValueError(
            f"{name}: a {task} target holds {value!r}, but it must hold {expected}.{padding}"
        )


def out_of_range_error(name: str, count: int, task: str, classes: int) -> ValueError:
    """The error `compute` raises for labels out of range counted during the pass.

    Example:
        >>> str(out_of_range_error("f1", 2, "multiclass", 3))[:45]
        'f1: 2 targets or predicted labels of the pass'
    """
    expected = f"labels 0 to {classes - 1}" if task == "multiclass" else "0 or 1"
    return ValueError(
        f"{name}: {count} targets or predicted labels of the pass were not {expected}. "
        "Check the labels, or the metric's `num_classes`."
    )
