"""Checks of a loss's first batch: shapes that would broadcast, label types and ranges.

What lives here: the messages that explain why an output and a target cannot meet in a loss,
and how to fix it. They run on the first batch of each pass, never per batch.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def describe(obj: Any) -> str:
    """Describe a nested output or batch part by its shapes and dtypes, for messages.

    Example:
        >>> describe((torch.zeros(2, 3), {"h": torch.zeros(2)}))
        "((2, 3) float32, {'h': (2,) float32})"
    """
    if isinstance(obj, Tensor):
        return f"{_shape(obj)} {str(obj.dtype).removeprefix('torch.')}"
    if isinstance(obj, Mapping):
        return "{" + ", ".join(f"{k!r}: {describe(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        shown = ", ".join(describe(v) for v in list(obj)[:4])
        return "(" + shown + (", ..." if len(obj) > 4 else "") + ")"
    return type(obj).__name__


def check_loss_inputs(
    name: str,
    kind: str,
    output: Any,
    target: Any,
    *,
    ignore_index: int | None = None,
    unit_interval: bool = False,
    torch_loss: str | None = None,
) -> None:
    """Raise a clear error if `output` and `target` cannot meet in the loss `name`.

    Args:
        name: The loss's name, for messages.
        kind: `CLASSES`, `ELEMENTWISE` or `OTHER` (not checked).
        output: The model's output on the first batch.
        target: The batch's target.
        ignore_index: A class label the loss skips (torch's `ignore_index`, -100 by default
            for cross-entropy and NLL): not checked against the class range.
        unit_interval: The targets must lie in [0, 1] (binary cross-entropy).
        torch_loss: For torch's own losses, which take one tensor as output and as target,
            how a fix calls it (`F.mse_loss`): a tuple or dict output is then refused.

    Raises:
        ValueError: For a missing target, shapes that would broadcast silently, float labels
            for a classification loss, integer targets for a regression loss, labels out of
            range, or binary targets outside [0, 1].
        TypeError: With `torch_loss`, for an output or target that is not a tensor (a model
            returning a tuple, a list of labels).
    """
    if target is None:
        raise ValueError(
            f"The loss {name} needs a target, but the batch has none. Batches must be `(x, y)` "
            "or `(x, w, y)`; for a model that computes its own loss, define "
            "`training_step(batch, batch_idx)` on it and pass `loss=None`."
        )
    if torch_loss is not None:
        _check_tensors(name, output, target, torch_loss)
    if not isinstance(output, Tensor) or not isinstance(target, Tensor):
        return
    if kind == CLASSES:
        _check_classes(name, output, target, ignore_index)
    elif kind == ELEMENTWISE:
        _check_elementwise(name, output, target)
        if unit_interval:
            check_unit_interval(name, target)


def _check_tensors(name: str, output: Any, target: Any, call: str) -> None:
    if not isinstance(output, Tensor):
        kind = "a dict" if isinstance(output, Mapping) else f"a {type(output).__name__}"
        pick = "output['logits']" if isinstance(output, Mapping) else "output[0]"
        raise TypeError(
            f"The loss {name} takes the model's output as one tensor, but the model returned "
            f"{kind}: {describe(output)}. Fix: return only the tensor the loss compares from "
            "`forward` (or give the model a `training_step`), or pass a loss that picks it, "
            f"such as `loss=lambda output, y: {call}({pick}, y)` (with your own index or key)."
        )
    if not isinstance(target, Tensor):
        raise TypeError(
            f"The loss {name} takes the target as a tensor, but the batch's target is a "
            f"{type(target).__name__}: {describe(target)}. Fix: make the dataset return "
            "tensors or numbers as targets (a DataLoader turns numbers into a tensor), e.g. "
            "`torch.as_tensor(labels)`."
        )


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


def _check_classes(name: str, output: Tensor, target: Tensor, ignore_index: int | None) -> None:
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
    check_label_range(name, target, output.shape[1], ignore_index)


def check_label_range(
    name: str, target: Tensor, num_classes: int, ignore_index: int | None = None
) -> None:
    """Raise `ValueError` if a class label lies outside `0 .. num_classes - 1`.

    Labels equal to `ignore_index` (padding, which the loss skips) are not checked.
    """
    if ignore_index is not None:
        target = target[target != ignore_index]
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


def check_unit_interval(name: str, target: Tensor) -> None:
    """Raise `ValueError` if a binary cross-entropy target lies outside [0, 1].

    Example:
        >>> check_unit_interval("bce", torch.tensor([0.0, 0.3, 1.0]))
    """
    if target.numel() == 0 or not target.is_floating_point():
        return
    low, high = float(target.min()), float(target.max())
    if low >= 0 and high <= 1:
        return
    bad = low if low < 0 else high
    labels = bool((target == target.round()).all())
    fix = (
        "For class labels 0..C-1 use loss='cross_entropy' with C outputs and `y.long()`; "
        "for 0/1 labels written otherwise (such as -1/1), map them to 0/1."
        if labels
        else "Scale the targets into [0, 1], or use a regression loss such as 'mse'."
    )
    raise ValueError(
        f"The loss {name} expects targets between 0 and 1 (a 0/1 label or a probability per "
        f"output); the target holds {bad:g}, and torch would compute a meaningless loss "
        f"without an error. {fix}"
    )
