"""In-memory data and dataset helpers: `Data`, `split`, `loader`.

What lives here: `Data`, which batches tensors by slicing (never a Python loop over samples),
`split`, which divides any dataset reproducibly, and `loader`, a `DataLoader` with sane defaults.
What does not: the meaning of a batch's parts (`batch.py`) and turning what `fit` receives into
batches (`sources.py`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar, overload

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from kiln.options import whole_number

TensorLike = Tensor | np.ndarray
_MIX = 0x9E3779B97F4A7C15  # an odd constant (the golden ratio in 64 bits) that spreads seeds
T = TypeVar("T")


def check_batch_size(batch_size: Any) -> int:
    """Return `batch_size` as an `int` if it is a positive integer (numpy's too).

    Raises:
        ValueError: Otherwise, naming the value received.

    Example:
        >>> check_batch_size(np.int64(8))
        8
    """
    size = whole_number(batch_size)
    if size is None or size <= 0:
        raise ValueError(f"`batch_size` must be a positive integer; received {batch_size!r}.")
    return size


def as_tensor(value: Any, name: str = "data") -> Tensor:
    """Turn a tensor or numpy array into a tensor; numpy floats become float32 like the model.

    Raises:
        TypeError: If `value` is neither a tensor nor a numpy array.
    """
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        if not value.flags.writeable:  # torch cannot share memory numpy forbids writing to
            value = value.copy()
        tensor = torch.from_numpy(np.ascontiguousarray(value))
        # Models are float32 by default; numpy's float64 would fail at the first layer.
        return tensor.float() if tensor.is_floating_point() else tensor
    raise TypeError(
        f"`{name}` must be a torch.Tensor or a numpy array; received {not_a_tensor(value)}."
    )


def not_a_tensor(value: Any) -> str:
    """Say what `value`, which kiln needed as a tensor, is, and how to make it one.

    Example:
        >>> not_a_tensor([0.5, 1.5])
        'a list. Fix: `torch.tensor(values)` or `np.asarray(values)`'
    """
    kind = type(value)
    library = kind.__module__.split(".")[0]
    if callable(getattr(value, "to_numpy", None)):  # pandas, polars, ...
        return f"a {library} {kind.__name__}. Fix: `.to_numpy()` it (numbers only)"
    if isinstance(value, str):
        if "/" in value or "\\" in value or value.rsplit(".", 1)[-1] in _FILE_SUFFIXES:
            return (
                f"the string {value[:60]!r}. kiln does not read files: load the numbers first "
                "(`np.loadtxt(path)`, `pandas.read_csv(path).to_numpy()`), or train on a CSV "
                "table with the command `kiln fit`"
            )
        return (
            f"the string {value[:40]!r}. Fix: give the values themselves as numbers (a column "
            "of a table: `df[column].to_numpy()`; text: encode it as numbers first)"
        )
    if isinstance(value, Mapping):
        return (
            "a dict. Fix: for a model with keyword inputs, give a torch Dataset whose items "
            "are `({'a': a, 'b': b}, y)`, or a tuple of tensors for a model with one input"
        )
    if isinstance(value, (list, tuple)) and any(
        isinstance(item, (Tensor, np.ndarray)) for item in value
    ):
        return (
            f"a {kind.__name__} of tensors. Fix: for a model with several inputs, give a torch "
            "Dataset whose items are `((x1, x2), y)`; for one input, `torch.stack(...)` them"
        )
    if isinstance(value, (list, tuple)):
        return f"a {kind.__name__}. Fix: `torch.tensor(values)` or `np.asarray(values)`"
    if value is None:
        return "None"
    article = "an" if kind.__name__[:1].lower() in "aeiou" else "a"
    return f"{article} {kind.__name__}. Fix: convert it with `torch.as_tensor(value)`"


#: File name suffixes that say a string names a file of data.
_FILE_SUFFIXES = {"csv", "tsv", "txt", "npy", "npz", "pt", "parquet", "json", "xlsx", "h5"}


def permutation(total: int, seed: int, epoch: int) -> Tensor:
    """Return the order of pass `epoch` of `total` samples shuffled from `seed` (on the CPU).

    `Data` and the distributed samplers draw from it, so every rank draws the same order.

    Example:
        >>> bool((permutation(5, seed=0, epoch=1) == permutation(5, seed=0, epoch=1)).all())
        True
    """
    # Mixed, so that no (seed, epoch) pair shares its order with a neighbouring seed's.
    generator = torch.Generator().manual_seed((seed * _MIX + epoch) % 2**63)
    return torch.randperm(total, generator=generator)


class Data:
    """Batches of in-memory tensors: one slice (or one gather when shuffled) per tensor.

    `Data((X, Y))` yields `(x, y)` batches, `Data((X, W, Y))` yields `(x, w, y)`, and a single
    tensor yields tensor batches. The tensors may live on the training device, so that no copy
    happens per batch. Changing `batch_size` takes effect at the next pass. With `shuffle=True`
    every pass, the first included, visits the samples in a permutation drawn from `seed` and the
    pass number, so the order is reproducible and a resumed run sees the same order.

    Args:
        tensors: A tensor or numpy array, or a tuple or list of them with equal first dimension.
        batch_size: Samples per batch.
        shuffle: Visit the samples in a new random order at each pass.
        drop_last: Leave out the last batch when it is smaller than `batch_size`.
        seed: Seed of the shuffling order; by default one drawn from torch's global generator,
            so that `kiln.seed_everything` makes it reproducible.

    Example:
        >>> import torch, kiln
        >>> data = kiln.Data((torch.randn(10, 3), torch.arange(10)), batch_size=4)
        >>> len(data), [tuple(x.shape) for x, y in data]
        (3, [(4, 3), (4, 3), (2, 3)])
        >>> data.batch_size = 5
        >>> len(data)
        2
    """

    def __init__(
        self,
        tensors: TensorLike | Sequence[TensorLike],
        batch_size: int = 64,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
    ) -> None:
        self._single = isinstance(tensors, (Tensor, np.ndarray))
        items = [tensors] if self._single else tensors
        if not isinstance(items, (list, tuple)) or len(items) == 0:
            raise TypeError(
                "`Data` takes a tensor, a numpy array, or a tuple of them such as `(X, Y)`; "
                f"received {type(tensors).__name__}."
            )
        self.tensors = [as_tensor(item, f"tensors[{i}]") for i, item in enumerate(items)]
        lengths = [len(t) if t.dim() > 0 else 0 for t in self.tensors]
        if len(set(lengths)) > 1:
            raise ValueError(
                f"All tensors given to `Data` must have the same length (first dimension); "
                f"received lengths {lengths}. Check that inputs and targets describe the same "
                "samples."
            )
        if lengths[0] == 0:
            raise ValueError(
                "`Data` received no samples (the tensors have length 0). Pass at least one sample."
            )
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        if seed is not None and (whole_number(seed) is None or not 0 <= seed < 2**63):
            raise ValueError(f"`seed` must be an integer in [0, 2**63); received {seed!r}.")
        self.seed = int(torch.randint(0, 2**62, (1,)).item()) if seed is None else int(seed)
        self.epoch = 0

    @property
    def batch_size(self) -> int:
        """Samples per batch; a new value takes effect at the next pass."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._batch_size = check_batch_size(value)

    def __len__(self) -> int:
        """Return the number of batches in one pass with the current `batch_size`."""
        rounding = math.floor if self.drop_last else math.ceil
        return max(int(rounding(self.num_samples / self.batch_size)), 0)

    @property
    def num_samples(self) -> int:
        """The number of samples."""
        return len(self.tensors[0])

    @property
    def device(self) -> torch.device:
        """The device the tensors live on."""
        return self.tensors[0].device

    def set_epoch(self, epoch: int) -> None:
        """Choose the pass whose order the next iteration follows (as `DistributedSampler`)."""
        self.epoch = epoch

    def order(self) -> Tensor | None:
        """Return the permutation of this pass, or `None` when not shuffling."""
        if not self.shuffle:
            return None
        return permutation(self.num_samples, self.seed, self.epoch).to(self.device)

    def __iter__(self) -> Iterator[Any]:
        """Yield the batches of one pass; a complete pass advances `epoch` by one."""
        return self.iterate()

    def iterate(self, start: int = 0) -> Iterator[Any]:
        """Yield the batches of one pass from batch number `start` (a resumed pass) on.

        Example:
            >>> import torch
            >>> [batch.tolist() for batch in Data(torch.arange(5), batch_size=2).iterate(1)]
            [[2, 3], [4]]
        """
        size, count = self.batch_size, len(self)
        order = self.order()
        tensors = self.tensors
        for offset in range(start * size, count * size, size):
            if order is None:
                parts = [t[offset : offset + size] for t in tensors]
            else:
                index = order[offset : offset + size]
                parts = [t.index_select(0, index) for t in tensors]
            yield parts[0] if self._single else tuple(parts)
        self.epoch += 1

    def subset(self, indices: Tensor | np.ndarray | Sequence[int]) -> Data:
        """Return a `Data` over the samples at `indices`, with the same options."""
        array = np.asarray(indices.cpu() if isinstance(indices, Tensor) else indices)
        if array.dtype == bool:
            raise TypeError(
                "`subset` takes sample indices, not a boolean mask: use `np.flatnonzero(mask)`."
            )
        index = torch.as_tensor(array, dtype=torch.long)
        picked = [t.index_select(0, index.to(t.device)) for t in self.tensors]
        return self._like(picked[0] if self._single else tuple(picked))

    def to(self, device: torch.device | str) -> Data:
        """Return a `Data` whose tensors live on `device` (for example the GPU)."""
        moved = [t.to(device) for t in self.tensors]
        return self._like(moved[0] if self._single else tuple(moved))

    def _like(self, tensors: Tensor | tuple[Tensor, ...]) -> Data:
        return Data(tensors, self.batch_size, self.shuffle, self.drop_last, self.seed)

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(t.shape)) for t in self.tensors)
        return (
            f"Data({shapes}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
            f"drop_last={self.drop_last})"
        )


def _split_sizes(fractions: Sequence[float], total: int) -> list[int]:
    if len(fractions) < 2:
        raise ValueError(
            f"`split` needs at least two fractions, such as `split(ds, 0.8, 0.2)`; "
            f"received {tuple(fractions)}."
        )
    if any(not 0 < f < 1 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(
            f"`split` takes fractions between 0 and 1 that sum to 1; received {tuple(fractions)} "
            f"(sum {sum(fractions):g}). Example: `split(ds, 0.8, 0.1, 0.1, seed=0)`."
        )
    sizes = [round(f * total) for f in fractions[:-1]]
    if sum(sizes) > total:
        raise ValueError(
            f"`split` of {total} samples by {tuple(fractions)} rounds to sizes {sizes} that "
            "leave nothing for the last part; use fewer parts or more samples."
        )
    return [*sizes, total - sum(sizes)]


def split_indices(
    total: int, fractions: Sequence[float], seed: int = 0, stratify: Any = None
) -> list[np.ndarray]:
    """Return the index arrays of a reproducible split of `total` samples by `fractions`.

    With `stratify` (one label per sample), every class is split by the same fractions.
    """
    rng = np.random.RandomState(seed)
    if stratify is None:
        permutation = rng.permutation(total)
        bounds = np.cumsum([0, *_split_sizes(fractions, total)])
        return [permutation[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=False)]
    labels = np.asarray(stratify.cpu() if isinstance(stratify, Tensor) else stratify)
    if labels.shape[:1] != (total,):
        raise ValueError(
            f"`stratify` must hold one label per sample ({total}); received shape {labels.shape}."
        )
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        bounds = np.cumsum([0, *_split_sizes(fractions, len(members))])
        for part, a, b in zip(parts, bounds[:-1], bounds[1:], strict=False):
            part.append(members[a:b])
    return [rng.permutation(np.concatenate(part)) for part in parts]


@overload
def split(dataset: Data, *fractions: float, seed: int = 0, stratify: Any = None) -> list[Data]: ...
@overload
def split(
    dataset: Dataset[T], *fractions: float, seed: int = 0, stratify: Any = None
) -> list[Subset[T]]: ...
@overload
def split(dataset: Any, *fractions: float, seed: int = 0, stratify: Any = None) -> list[Any]: ...


def split(dataset: Any, *fractions: float, seed: int = 0, stratify: Any = None) -> list[Any]:
    """Split data into parts of the given fractions, the same way for the same seed.

    Part sizes are `round(fraction * N)`, the last part taking the remainder, and the indices
    come from `numpy.random.RandomState(seed).permutation(N)`.

    Compatibility: PyBlaze's `random_split`, part for part.

    Args:
        dataset: A `kiln.Data` (parts are `Data` with the same options), a torch `Dataset`
            (parts are `Subset`s), a tensor or numpy array, or a tuple of them (parts are tuples).
        *fractions: Fractions between 0 and 1 summing to 1.
        seed: Seed of the split.
        stratify: Optional labels, one per sample: each class is split by the same fractions.

    Returns:
        One part per fraction.

    Raises:
        ValueError: If the fractions do not sum to 1 or the dataset is empty.

    Example:
        >>> import torch, kiln
        >>> train, val = kiln.split((torch.randn(200, 2), torch.zeros(200)), 0.75, 0.25, seed=0)
        >>> len(train[0]), len(val[0])
        (150, 50)
    """
    if isinstance(dataset, Data):
        total = dataset.num_samples
    elif isinstance(dataset, (Tensor, np.ndarray)):
        total = len(dataset)
    elif isinstance(dataset, (tuple, list)) and dataset:
        lengths = [len(as_tensor(item, f"dataset[{i}]")) for i, item in enumerate(dataset)]
        if len(set(lengths)) > 1:
            raise ValueError(
                f"All items given to `split` must have the same length; received lengths {lengths}."
            )
        total = lengths[0]
    else:
        total = len(dataset)
    if total == 0:
        raise ValueError("`split` received an empty dataset; there is nothing to split.")
    parts = split_indices(total, fractions, seed, stratify)
    if any(len(index) == 0 for index in parts):
        raise ValueError(
            f"`split` of {total} samples by {tuple(fractions)} leaves a part empty (sizes "
            f"{[len(index) for index in parts]}); use larger fractions or more samples."
        )
    if isinstance(dataset, Data):
        return [dataset.subset(index) for index in parts]
    if isinstance(dataset, (Tensor, np.ndarray)):
        return [dataset[index] for index in parts]
    if isinstance(dataset, (tuple, list)):
        return [tuple(item[index] for item in dataset) for index in parts]
    return [Subset(dataset, index.tolist()) for index in parts]


def find_collate_fn(dataset: Any) -> Any:
    """Return the dataset's own `collate_fn`, looking through `Subset` wrappers, or `None`."""
    while dataset is not None:
        collate_fn = getattr(dataset, "collate_fn", None)
        if callable(collate_fn):
            return collate_fn
        dataset = getattr(dataset, "dataset", None)
    return None


def loader(
    dataset: Dataset[Any], batch_size: int = 64, shuffle: bool = False, **kwargs: Any
) -> DataLoader[Any]:
    """Return a torch `DataLoader` over `dataset` with sane defaults.

    The dataset's own `collate_fn` is used when it defines one (also through a `Subset`), and
    memory is pinned when a GPU is present so that copies to it can overlap computation.

    Args:
        dataset: Any map-style or iterable torch dataset.
        batch_size: Samples per batch.
        shuffle: Reshuffle at every epoch.
        **kwargs: Any other `DataLoader` argument; it wins over the defaults above.

    Example:
        >>> import torch, kiln
        >>> from torch.utils.data import TensorDataset
        >>> batches = kiln.loader(TensorDataset(torch.randn(10, 2)), batch_size=4)
        >>> len(batches)
        3
    """
    collate_fn = find_collate_fn(dataset)
    if collate_fn is not None:
        kwargs.setdefault("collate_fn", collate_fn)
    kwargs.setdefault("pin_memory", torch.cuda.is_available())
    size = None if batch_size is None else check_batch_size(batch_size)  # numpy's ints too
    return DataLoader(dataset, batch_size=size, shuffle=shuffle, **kwargs)
