"""Checks of a loss's first batch: shapes that would broadcast, label types and ranges.

What lives here: the messages that explain why an output and a target cannot meet in a loss,
and how to fix it. They run on the first batch of each pass, never per step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

CLASSES = "classes"
"""Losses whose target is a class index per sample (cross-entropy, NLL)."""
ELEMENTWISE = "elementwise"
"""Losses that compare output and target element by element (MSE, BCE, ...)."""
OTHER = "other"
"""Losses kiln does not check."""


def _shape(tensor: Tensor) -> str:
    return str(tuple(tensor.shape))


def check_loss_inputs(name: str, kind: str, output: Any, target: Any) -> None:
    """Raise `ValueError` if `output` and `target` cannot meet in the loss `name`.

    Raises:
        ValueError: For a missing target, shapes that would broadcast silently, float labels
            for a classification loss, integer targets for a regression loss, or labels out of
            range.
    """
    if target is None:
        raise ValueError(
            f"The loss {name} needs a target, but the batch has none. Batches must be `(x, y)` "
            "or `(x, w, y)`; for a model that computes its own loss, define "
            "`training_step(batch, batch_idx)` on it and pass `loss=None`."
        )
    if not isinstance(output, Tensor) or not isinstance(target, Tensor):
        return
    if kind == CLASSES:
        _check_classes(name, output, target)
    elif kind == ELEMENTWISE:
        _check_elementwise(name, output, target)


def _check_elementwise(name: str, output: Tensor, target: Tensor) -> None:
    if output.shape != target.shape:
        fix = (
            f"reshape the target with `y.view({', '.join(['-1', *map(str, output.shape[1:])])})`"
            if output.numel() == target.numel()
            else "make the model's output and the target the same shape"
        )
        raise ValueError(
            f"The loss {name} compares output and target element by element, but the model's "
            f"output has shape {_shape(output)} and the target {_shape(target)}: torch would "
            f"broadcast them and compute a wrong loss without a warning. Fix: {fix} "
            "(targets of shape (N,) against outputs of shape (N, 1) need `y.view(-1, 1)`)."
        )
    if not target.is_floating_point():
        raise ValueError(
            f"The loss {name} expects float targets; received {target.dtype}. "
            "Convert them with `y.float()`."
        )


def _check_classes(name: str, output: Tensor, target: Tensor) -> None:
    if output.dim() < 2:
        raise ValueError(
            f"The loss {name} expects one score per class, an output of shape (N, classes); "
            f"the model's output has shape {_shape(output)}. For a yes/no target use "
            "loss='bce_with_logits' with an output of shape (N, 1)."
        )
    if target.is_floating_point():
        if target.shape == output.shape:
            return  # class probabilities, which cross-entropy accepts
        raise ValueError(
            f"The loss {name} expects integer class labels of shape "
            f"{_shape(output[:, 0])}; received float targets of shape {_shape(target)}. "
            "Convert them with `y.long()` (or give class probabilities of the output's shape)."
        )
    if target.dtype not in (torch.long, torch.uint8):
        raise ValueError(
            f"The loss {name} expects class labels of dtype int64; received {target.dtype}. "
            "Convert them with `y.long()`."
        )
    expected = (output.shape[0], *output.shape[2:])
    if tuple(target.shape) != expected:
        fix = "`y.view(-1)`" if target.numel() == output.shape[0] else "one label per sample"
        raise ValueError(
            f"The loss {name} expects one class label per sample, a target of shape "
            f"{expected}; received {_shape(target)}. Fix: {fix}."
        )
    check_label_range(name, target, output.shape[1])


def check_label_range(name: str, target: Tensor, num_classes: int) -> None:
    """Raise `ValueError` if a class label lies outside `0 .. num_classes - 1`."""
    if target.numel() == 0:
        return
    low, high = int(target.min()), int(target.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        fix = (
            "Check the labels: class labels count from 0, so none can be negative."
            if bad < 0
            else f"Check the labels, or give the model's last layer {high + 1} outputs."
        )
        raise ValueError(
            f"The loss {name} got the class label {bad}, but the model's output has "
            f"{num_classes} classes, so labels must lie in 0..{num_classes - 1}. {fix}"
        )
