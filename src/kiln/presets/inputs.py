"""What the auto preset does to its data: accepted forms, the split, batches, the criterion.

What lives here: turning `train`'s `dataset` into a torch Dataset, the reproducible
train/validation split, batches (a `kiln.Data` for plain in-memory tensors, else a DataLoader)
and the reading of the `criterion=` argument. What does not: the preset (`auto.py`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset, TensorDataset

from kiln.data.in_memory import Data, loader
from kiln.losses.mixed import CLASSES, MixedCriterion

#: The seed of the train/validation split: the same samples validate on every run.
SPLIT_SEED = 42


def to_tensor(values: Any) -> Tensor:
    """Return `values` as a tensor; numpy's float64 becomes float32, as networks expect.

    Example:
        >>> to_tensor(np.zeros(2)).dtype, to_tensor(np.arange(2)).dtype
        (torch.float32, torch.int64)
    """
    tensor = values if isinstance(values, Tensor) else torch.as_tensor(np.asarray(values))
    return tensor.float() if tensor.dtype == torch.float64 else tensor  # numpy's default


def as_dataset(dataset: Any) -> Any:
    """Return a torch Dataset: as it is, or a `TensorDataset` of a tuple or a `kiln.Data`.

    Raises:
        TypeError: For anything else.

    Example:
        >>> len(as_dataset((np.zeros((5, 2)), np.ones(5))))
        5
    """
    if isinstance(dataset, Data):
        dataset = dataset.tensors
    if isinstance(dataset, (tuple, list)) and 2 <= len(dataset) <= 3:
        return TensorDataset(*(to_tensor(t) for t in dataset))
    if isinstance(dataset, Dataset):
        return dataset
    raise TypeError(
        "AutoTrainer: `dataset` must be a torch Dataset of (input, target) or (input, weight, "
        f"target) items, or a tuple (X, Y) / (X, W, Y) of tensors; received "
        f"{type(dataset).__name__}."
    )


def resolve_criterion(criterion: Any, dataset: Any, verbose: bool) -> Any:
    """Return the criterion `train(criterion=...)` names, built on `dataset` where needed.

    Raises:
        ValueError: For an unknown name.
        TypeError: For an object that is not a criterion (no `postproc`).

    Example:
        >>> resolve_criterion("multiclass", None, verbose=False)
        MixedCriterion(kinds=['classes'])
    """
    if isinstance(criterion, str):
        if criterion == "auto":
            return MixedCriterion(dataset, verbose=verbose)
        if criterion in ("multiclass", "multilabel"):
            weights = getattr(dataset, "class_weights", None)
            return MixedCriterion(kinds=[CLASSES], class_weights=weights)
        raise ValueError(
            f"AutoTrainer: unknown criterion {criterion!r}; expected 'auto', 'multiclass' "
            "('multilabel'), a criterion object or a criterion class."
        )
    if isinstance(criterion, type):
        criterion = criterion(dataset)
    if not callable(criterion) or not callable(getattr(criterion, "postproc", None)):
        raise TypeError(
            "AutoTrainer: a criterion must be called `criterion(output, target, weights=None, "
            "unscaled=False)` and have a `postproc(pred)` method; received "
            f"{type(criterion).__name__}."
        )
    return criterion


def split(dataset: Any, train_prop: float, shuffle: bool) -> tuple[Any, Any]:
    """Split `dataset`: `int(len * train_prop)` samples train, the rest validate.

    With `shuffle`, the samples `torch.utils.data.random_split` picks with a generator seeded
    with 42 (the same on every run, so retraining never validates on trained samples); else the
    first ones train.

    Compatibility: PytorchTrainer's split, so its runs validate on the same samples.

    Raises:
        ValueError: If either part would be empty.

    Example:
        >>> train, val = split(list(range(10)), 0.8, shuffle=False)
        >>> train.indices, val.indices
        ([0, 1, 2, 3, 4, 5, 6, 7], [8, 9])
    """
    total = len(dataset)
    count = int(total * train_prop)
    if count < 1 or count >= total:
        raise ValueError(
            f"AutoTrainer.train: {total} samples with train_prop={train_prop} leave "
            f"{count} for training and {total - count} for validation; both need at least one."
        )
    if shuffle:
        # What torch.utils.data.random_split(dataset, [count, rest], generator) draws.
        generator = torch.Generator().manual_seed(SPLIT_SEED)
        order = torch.randperm(total, generator=generator).tolist()
        train_rows, val_rows = order[:count], order[count:]
    else:
        train_rows, val_rows = list(range(count)), list(range(count, total))
    return Subset(dataset, train_rows), Subset(dataset, val_rows)


def batches(part: Subset[Any], batch_size: int, shuffle: bool, workers: int) -> Any:
    """Return the batches of a part of a dataset: a `kiln.Data` or a DataLoader.

    A plain `TensorDataset` without workers becomes a `kiln.Data` (one gather per batch);
    anything else a DataLoader (with the dataset's `collate_fn`).

    Example:
        >>> part = Subset(TensorDataset(torch.zeros(6, 2), torch.ones(6)), [0, 2, 4])
        >>> type(batches(part, 2, shuffle=True, workers=0)).__name__
        'Data'
    """
    source = part.dataset
    plain = type(source).__getitem__ is TensorDataset.__getitem__  # no per-item code to run
    if isinstance(source, TensorDataset) and plain and workers == 0:
        rows = torch.as_tensor(part.indices)
        return Data(tuple(t[rows] for t in source.tensors), batch_size=batch_size, shuffle=shuffle)
    return loader(part, batch_size=batch_size, shuffle=shuffle, num_workers=workers)
