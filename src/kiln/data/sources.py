"""Turning what `fit`, `evaluate` and `predict` receive into an iterable of batches.

What lives here: the accepted kinds of data (`Data`, `DataLoader`, `Dataset`, tensors and
arrays) and the hold-out split for `fit(val=0.1)`. What does not: batching itself (`in_memory.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from kiln.data.batch import rebuild_sequence, slice_batch
from kiln.data.in_memory import Data, as_tensor, check_batch_size, loader, not_a_tensor, split

#: Samples per batch when `fit` receives raw tensors or a Dataset and no `batch_size`.
DEFAULT_BATCH_SIZE = 32

#: Seed of the split behind `fit(val=fraction)`: fixed, so every run holds out the same samples.
HOLDOUT_SEED = 0

ACCEPTED = (
    "a kiln.Data, a torch DataLoader, a torch Dataset, a Hugging Face `datasets.Dataset`, a "
    "tensor or numpy array, or a tuple `(X, Y)` / `(X, W, Y)` of them"
)


def is_hf_dataset(data: Any) -> bool:
    """Tell whether `data` is a Hugging Face `datasets.Dataset` (without importing `datasets`).

    Example:
        >>> is_hf_dataset([1, 2])
        False
    """
    module = type(data).__module__
    return (
        (module == "datasets" or module.startswith("datasets."))
        and hasattr(data, "with_format")
        and hasattr(data, "__getitem__")
        and hasattr(data, "__len__")
    )


def torch_formatted(data: Any) -> Any:
    """Return a `datasets.Dataset` whose rows are dicts of tensors (`with_format("torch")`).

    A dataset already formatted (by the user, for torch or otherwise) is returned as it is.
    """
    if getattr(data, "format", {}).get("type") is None:
        return data.with_format("torch")
    return data


def _is_raw(data: Any) -> bool:
    if isinstance(data, (Tensor, np.ndarray)):
        return True
    return (
        isinstance(data, (tuple, list))
        and len(data) > 0
        and all(isinstance(item, (Tensor, np.ndarray)) for item in data)
    )


def as_batches(data: Any, name: str, batch_size: int | None, shuffle: bool) -> Iterable[Any]:
    """Return an iterable of batches for `data`, one of the accepted kinds.

    Args:
        data: The data as given to `fit`, `evaluate` or `predict`.
        name: The argument's name, for error messages.
        batch_size: Samples per batch for raw tensors and Datasets; must be `None` for a
            `Data` or a `DataLoader`, which carry their own.
        shuffle: Shuffle raw tensors and Datasets (training data).

    Raises:
        TypeError: If `data` is of no accepted kind.
        ValueError: If `data` is empty, or `batch_size` is given for data that has its own.
    """
    if isinstance(data, (Data, DataLoader)):
        if batch_size is not None:
            raise ValueError(
                f"`batch_size={batch_size}` cannot apply to `{name}`, a {type(data).__name__} "
                "that carries its own batch size. Set it there, e.g. `data.batch_size = 64`."
            )
        sized = isinstance(data, DataLoader) and not isinstance(data.dataset, IterableDataset)
        if sized and len(data.dataset) == 0:  # type: ignore[arg-type, union-attr]
            raise ValueError(f"`{name}` is a DataLoader over an empty dataset.")
        return data
    size = DEFAULT_BATCH_SIZE if batch_size is None else check_batch_size(batch_size)
    if _is_raw(data):
        return Data(data, batch_size=size, shuffle=shuffle)
    if is_hf_dataset(data):  # a map-style dataset of dict rows: batches are dicts of tensors
        data = torch_formatted(data)
        if len(data) == 0:
            raise ValueError(f"`{name}` is an empty dataset; it has no samples to use.")
        return loader(data, batch_size=size, shuffle=shuffle)
    if isinstance(data, Dataset):
        if not isinstance(data, IterableDataset) and len(data) == 0:  # type: ignore[arg-type]
            raise ValueError(f"`{name}` is an empty dataset; it has no samples to use.")
        # An iterable dataset yields samples in its own order; DataLoader rejects shuffle for it.
        return loader(
            data, batch_size=size, shuffle=shuffle and not isinstance(data, IterableDataset)
        )
    if isinstance(data, (tuple, list)) and len(data) == 0:
        raise ValueError(f"`{name}` is an empty {type(data).__name__}; pass `(X, Y)`.")
    if isinstance(data, tuple) or (
        isinstance(data, list) and any(isinstance(item, (Tensor, np.ndarray)) for item in data)
    ):
        roles = {2: ("X", "Y"), 3: ("X", "W", "Y")}.get(len(data))
        index, item = next(
            (i, item) for i, item in enumerate(data) if not isinstance(item, (Tensor, np.ndarray))
        )
        role = f"`{roles[index]}`" if roles else f"item {index}"
        raise TypeError(
            f"`{name}` is a {type(data).__name__} of {len(data)} items, whose {role} is "
            f"{not_a_tensor(item)}. Each part of `(X, Y)` or `(X, W, Y)` must be a tensor or "
            "numpy array with one row per sample."
        )
    raise TypeError(f"`{name}` must be {ACCEPTED}; received {not_a_tensor(data)}.")


def hold_out(train: Any, fraction: float) -> tuple[Any, Any]:
    """Split `train` into training and validation parts, the same way on every run.

    Raises:
        ValueError: If `fraction` is not between 0 and 1.
        TypeError: If `train` is a DataLoader, which cannot be split.
    """
    if not 0 < fraction < 1:
        raise ValueError(
            f"`val` as a number is the fraction of `train` held out for validation and must be "
            f"between 0 and 1; received {fraction!r}."
        )
    if isinstance(train, DataLoader):
        raise TypeError(
            "`val` as a fraction needs data kiln can split, but `train` is a DataLoader. "
            "Split the dataset first: `train_ds, val_ds = kiln.split(dataset, 0.9, 0.1)`."
        )
    if is_hf_dataset(train):  # its parts are Subsets of dict rows of tensors
        train = torch_formatted(train)
    train_part, val_part = split(train, 1 - fraction, fraction, seed=HOLDOUT_SEED)
    if isinstance(val_part, Data):
        val_part.shuffle = False
    return train_part, val_part


def set_epoch(batches: Iterable[Any], epoch: int) -> None:
    """Tell the data (or its sampler) which epoch starts, so each epoch has its own order."""
    if isinstance(batches, Data):
        batches.set_epoch(epoch)
    elif isinstance(batches, DataLoader):
        for part in (batches.sampler, getattr(batches, "batch_sampler", None)):
            set_part_epoch = getattr(part, "set_epoch", None)
            if callable(set_part_epoch):
                set_part_epoch(epoch)


def num_batches(batches: Iterable[Any]) -> int | None:
    """Return how many batches one pass yields, or `None` when unknown."""
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:
        return None


#: Samples per batch when `predict` receives raw inputs and no `batch_size`.
DEFAULT_PREDICT_BATCH_SIZE = 256


def _as_input_tree(inputs: Any) -> Any:
    if isinstance(inputs, (Tensor, np.ndarray)):
        return as_tensor(inputs, "inputs")
    if isinstance(inputs, Mapping):
        return {key: _as_input_tree(value) for key, value in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return rebuild_sequence(inputs, [_as_input_tree(value) for value in inputs])
    raise TypeError(
        "`predict` takes tensors or arrays (alone, in a tuple or list, or in a dict), or "
        f"{ACCEPTED}; received {not_a_tensor(inputs)}."
    )


def iterate_inputs(inputs: Any, batch_size: int | None) -> Iterable[Any]:
    """Return the batches `predict` runs on.

    Data, loaders and datasets give batches in the training format. Raw inputs (a tensor, a
    tuple or list of tensors for several model inputs, a dict of tensors for keyword inputs) are
    sliced along their first dimension, and a tuple or list is wrapped as `(inputs,)` so that it
    is read as several inputs, not as `(x, y)`.

    Raises:
        ValueError: If the tensors of raw inputs differ in length.
    """
    if isinstance(inputs, (Data, DataLoader, Dataset)) or is_hf_dataset(inputs):
        return as_batches(inputs, "inputs", batch_size, shuffle=False)
    tree = _as_input_tree(inputs)
    lengths = {len(t) for t in _leaves(tree)}
    if len(lengths) != 1:
        raise ValueError(
            f"All input tensors given to `predict` must have the same length; received lengths "
            f"{sorted(lengths)}."
        )
    size = DEFAULT_PREDICT_BATCH_SIZE if batch_size is None else check_batch_size(batch_size)
    total = lengths.pop()
    wrap = isinstance(tree, (list, tuple))
    return (
        (slice_batch(tree, start, start + size),)
        if wrap
        else slice_batch(tree, start, start + size)
        for start in range(0, total, size)
    )


def _leaves(tree: Any) -> list[Tensor]:
    if isinstance(tree, Tensor):
        return [tree]
    values = tree.values() if isinstance(tree, Mapping) else tree
    return [leaf for value in values for leaf in _leaves(value)]
