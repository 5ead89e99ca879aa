"""Kept batches joined once, and their predicted classes, for every metric that kept them.

What lives here: `join`, which concatenates the batches a buffered metric kept, and
`predicted_classes`, the arg-max of joined scores (the predicted class of each row). What
does not: the buffering itself (`buffered.py`) or the counting (`classification.py`,
`confusion.py`).

The trainer gives every metric the same output and target tensors, and the buffered metrics
keep and count them at the same moments, so accuracy and F1 would each concatenate the same
batches and take the same arg-max. The last join is remembered (one entry, holding the
tensors it was made from, so that their identities cannot be reused while it is kept): a
second metric that counts the very same tensors gets the same joined tensors and, once the
first computed it, the same arg-max. The values are those of joining and reducing again:
the same operations on the same tensors.
"""

from __future__ import annotations

from operator import is_

import torch
from torch import Tensor


class Joined:
    """Batches concatenated: `output` and `target`, and the arg-max of `output` once asked for.

    Args:
        outputs: The kept outputs, in order (one of them is used as it is, not copied).
        targets: Their targets.

    Example:
        >>> import torch
        >>> joined = Joined([torch.zeros(2, 3), torch.ones(1, 3)], [torch.zeros(2), torch.ones(1)])
        >>> tuple(joined.output.shape), joined.target.tolist()
        ((3, 3), [0.0, 0.0, 1.0])
    """

    __slots__ = ("output", "outputs", "predicted", "target", "targets")

    def __init__(self, outputs: list[Tensor], targets: list[Tensor]) -> None:
        self.outputs, self.targets = outputs, targets
        single = len(outputs) == 1
        self.output = outputs[0] if single else torch.cat(outputs)
        self.target = targets[0] if single else torch.cat(targets)
        self.predicted: Tensor | None = None  # the arg-max over dim 1, once a metric asks

    def same(self, outputs: list[Tensor], targets: list[Tensor]) -> bool:
        """Whether `outputs` and `targets` are the very tensors this was joined from."""
        return (
            len(outputs) == len(self.outputs)
            and all(map(is_, outputs, self.outputs))
            and all(map(is_, targets, self.targets))
        )


class _Last:
    """The one remembered join (a slot, so that it can be replaced or forgotten)."""

    __slots__ = ("joined",)

    def __init__(self) -> None:
        self.joined: Joined | None = None


_LAST = _Last()


def join(outputs: list[Tensor], targets: list[Tensor]) -> Joined:
    """Concatenate kept batches, or return the last join if it was made of the same tensors.

    Example:
        >>> import torch
        >>> outputs, targets = [torch.zeros(2, 3), torch.ones(1, 3)], [torch.zeros(3)]
        >>> join(outputs, targets) is join(list(outputs), list(targets))
        True
    """
    last = _LAST.joined
    if last is not None and last.same(outputs, targets):
        return last
    joined = _LAST.joined = Joined(outputs, targets)
    return joined


def predicted_classes(output: Tensor) -> Tensor:
    """`output.argmax(1)`, taken once for all the metrics counting the last joined batches.

    The result is shared: callers must not change it in place. On the CPU it is read from
    `output.max(1)`, the same indices found faster.

    Example:
        >>> import torch
        >>> joined = join([torch.tensor([[0.1, 0.9], [0.8, 0.2]])], [torch.tensor([1, 0])])
        >>> predicted_classes(joined.output), predicted_classes(joined.output) is joined.predicted
        (tensor([1, 0]), True)
    """
    last = _LAST.joined
    if last is None or last.output is not output:
        return _argmax(output)
    if last.predicted is None:
        last.predicted = _argmax(output)
    return last.predicted


def _argmax(output: Tensor) -> Tensor:
    # Both give, per row, the first of the largest values, a NaN counting as the largest; on
    # the CPU, `max` finds it a quarter faster than `argmax` (fewer branches per element).
    return output.max(1).indices if output.device.type == "cpu" else output.argmax(1)


def forget() -> None:
    """Drop the remembered join (its tensors are freed with the metrics' own references).

    Example:
        >>> forget()
    """
    _LAST.joined = None
