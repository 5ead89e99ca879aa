"""Batches: what their parts mean, how to feed them to a model, and how to move them.

What lives here: the batch formats kiln understands (`x`, `(x, y)`, `(x, w, y)`, with `x` a
tensor, a list or tuple of tensors, or a dict of tensors), and small functions over nested
batches. What does not: where batches come from (`in_memory.py`, `sources.py`) or what the step
methods compute from them (`loop/step_methods.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn


def rebuild_sequence(like: Any, items: Any) -> Any:
    """Return a list or tuple of the same type as `like` holding `items` (namedtuples too)."""
    return type(like)(*items) if hasattr(like, "_fields") else type(like)(items)


def split_batch(batch: Any) -> tuple[Any, Tensor | None, Tensor | None]:
    """Return `(inputs, weight, target)` of a batch; a missing part is `None`.

    A tensor or a dict is inputs alone; a sequence of one item is `(inputs,)`, of two items
    `(inputs, target)`, of three items `(inputs, weight, target)`.

    Args:
        batch: One batch as it comes from the data.

    Returns:
        The inputs (a tensor, a list or tuple of tensors, or a dict), the weights and the target.

    Raises:
        ValueError: If the batch is a sequence of more than three items.

    Example:
        >>> import torch
        >>> x, w, y = split_batch((torch.ones(2, 3), torch.zeros(2)))
        >>> w is None, tuple(y.shape)
        (True, (2,))
    """
    kind = type(batch)
    if (kind is tuple or kind is list) and 1 < len(batch) < 4:  # the usual case, checked first
        return (batch[0], None, batch[1]) if len(batch) == 2 else (batch[0], batch[1], batch[2])
    if isinstance(batch, (Tensor, Mapping)):
        return batch, None, None
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        if len(batch) == 1:
            return batch[0], None, None
        if len(batch) == 2:
            return batch[0], None, batch[1]
        if len(batch) == 3:
            return batch[0], batch[1], batch[2]
        raise ValueError(
            f"A batch of {len(batch)} items cannot be read: kiln expects `x`, `(x, y)` or "
            "`(x, w, y)`. For a model with several inputs, group them: `((x1, x2), y)`; or "
            "give the model a `training_step(batch, batch_idx)` that unpacks the batch itself."
        )
    return batch, None, None


def call_model(model: nn.Module, inputs: Any) -> Any:
    """Call `model(*inputs)` for a list or tuple, `model(**inputs)` for a dict, else `model(x)`."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (list, tuple)):
        return model(*inputs)
    return model(inputs)


def first_tensor(obj: Any) -> Tensor | None:
    """Return the first tensor found in a nested batch (depth first), or `None`."""
    if isinstance(obj, Tensor):
        return obj
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for item in obj:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def batch_size_of(batch: Any) -> int:
    """Return the number of samples in a batch: the first dimension of its first tensor."""
    tensor = first_tensor(batch)
    if tensor is None or tensor.dim() == 0:
        return 1
    return int(tensor.shape[0])


def to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor of a nested batch (lists, tuples, dicts) to `device`.

    Example:
        >>> import torch
        >>> batch = {"x": torch.ones(2), "extra": [torch.zeros(1), "label"]}
        >>> to_device(batch, torch.device("cpu"))["extra"][1]
        'label'
    """
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        return {key: to_device(value, device, non_blocking) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return rebuild_sequence(obj, [to_device(value, device, non_blocking) for value in obj])
    return obj


def is_on_device(obj: Any, device: torch.device) -> bool:
    """Tell whether every tensor of a nested batch already lives on `device`."""
    if isinstance(obj, Tensor):
        return obj.device == device
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return all(is_on_device(item, device) for item in obj)
    return True


def on_device(batches: Iterable[Any], device: torch.device) -> Iterator[Any]:
    """Yield the batches on `device`; data already there (decided from the first) is not copied.

    Example:
        >>> import torch
        >>> batches = [torch.zeros(2), torch.ones(2)]
        >>> [b.device.type for b in on_device(batches, torch.device("cpu"))]
        ['cpu', 'cpu']
    """
    move = None
    for batch in batches:
        if move is None:
            move = not is_on_device(batch, device)
        yield to_device(batch, device, non_blocking=device.type == "cuda") if move else batch


def slice_batch(obj: Any, start: int, stop: int) -> Any:
    """Take samples `start:stop` of every tensor in a nested batch (one slice per tensor)."""
    if isinstance(obj, Tensor):
        return obj[start:stop]
    if isinstance(obj, Mapping):
        return {key: slice_batch(value, start, stop) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return rebuild_sequence(obj, [slice_batch(value, start, stop) for value in obj])
    return obj


def concat_outputs(outputs: list[Any]) -> Any:
    """Concatenate per-batch outputs along the first dimension, keeping their structure."""
    first = outputs[0]
    if isinstance(first, Tensor):
        return torch.cat(outputs)
    if isinstance(first, Mapping):
        return {key: concat_outputs([out[key] for out in outputs]) for key in first}
    if isinstance(first, (list, tuple)):
        return rebuild_sequence(
            first, [concat_outputs(list(parts)) for parts in zip(*outputs, strict=False)]
        )
    return outputs
