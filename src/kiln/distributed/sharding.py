"""Each rank's part of the data: a `kiln.Data` or a `DataLoader` cut into per-rank shards.

The rule, the same for `Data` and loaders: every rank draws the same order of all samples
(the same seed and epoch), and rank `r` of `W` takes the samples at positions `r, r + W,
r + 2W, ...` of it, in batches of `batch_size`. Batch `k` of the `W` ranks together then covers
positions `k*B*W` to `(k+1)*B*W - 1`: exactly batch `k` of one process with `batch_size=B*W`
over the same order. As DDP averages the ranks' gradients, training on `W` ranks with batch `B`
equals training one process with batch `B*W` (for losses that are means over the batch).

Training data must give every rank the same number of equally sized batches (DDP waits for
every rank at every gradient reduction), so its last `N % W` positions are left out of each
epoch (nothing when `N` is a multiple of `W`; with shuffling, different samples each epoch), as
torch's `DistributedSampler(drop_last=True)` does. Evaluation data is not cut: every sample is
seen once, by one rank, and ranks may differ by one sample, so metrics equal one process's
exactly.

What lives here: `DataShard`, `RankSampler`, `shard_loader` and `shard`. What does not: agreeing
on the seed (`replicas.py`) and the data kinds `fit` accepts (`kiln.data.sources`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import (
    DataLoader,
    IterableDataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)
from torch.utils.data.distributed import DistributedSampler

from kiln.data.in_memory import Data, permutation


def _positions(total: int, rank: int, world_size: int, even: bool) -> range:
    used = total - total % world_size if even else total
    return range(rank, used, world_size)


class DataShard(Data):
    """Rank `rank`'s part of a `Data`; the options (batch size, shuffling, seed) stay the data's.

    Args:
        data: The whole data, the same on every rank.
        rank: This rank.
        world_size: The number of ranks.
        even: Leave out the last `N % world_size` samples of each pass, so that every rank has
            as many samples (training); `False` keeps them all (evaluation).

    Example:
        >>> import torch
        >>> data = Data(torch.arange(10), batch_size=2)
        >>> [batch.tolist() for batch in DataShard(data, rank=1, world_size=2, even=True)]
        [[1, 3], [5, 7], [9]]
    """

    def __init__(self, data: Data, rank: int, world_size: int, even: bool) -> None:
        # Not Data.__init__: the tensors and options are the whole data's, read through.
        self.data, self.rank, self.world_size, self.even = data, rank, world_size, even
        self._single = data._single
        self.epoch = data.epoch

    @property
    def tensors(self) -> list[Tensor]:
        """The whole data's tensors."""
        return self.data.tensors

    @tensors.setter
    def tensors(self, value: list[Tensor]) -> None:
        self.data.tensors = value

    @property
    def batch_size(self) -> int:
        """Samples per batch on this rank (the whole data's `batch_size`)."""
        return self.data.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.data.batch_size = value

    @property
    def shuffle(self) -> bool:
        """Whether the order changes at each pass (the whole data's option)."""
        return self.data.shuffle

    @shuffle.setter
    def shuffle(self, value: bool) -> None:
        self.data.shuffle = value

    @property
    def drop_last(self) -> bool:
        """Whether this rank's last, smaller batch is left out."""
        return self.data.drop_last

    @drop_last.setter
    def drop_last(self, value: bool) -> None:
        self.data.drop_last = value

    @property
    def seed(self) -> int:
        """The seed of the shuffling order, the whole data's (the same on every rank)."""
        return self.data.seed

    @seed.setter
    def seed(self, value: int) -> None:
        self.data.seed = value

    @property
    def num_samples(self) -> int:
        """The samples of this rank in one pass."""
        return len(_positions(self.data.num_samples, self.rank, self.world_size, self.even))

    def order(self) -> Tensor:
        """This rank's positions in the whole data's order of this pass."""
        total = self.data.num_samples
        base = permutation(total, self.seed, self.epoch) if self.shuffle else torch.arange(total)
        positions = _positions(total, self.rank, self.world_size, self.even)
        return base[positions.start : positions.stop : positions.step].to(self.device)


class RankSampler(Sampler[int]):
    """The indices of one rank, under the rule of this module (no padding, unlike torch's).

    Args:
        total: Samples in the dataset.
        rank: This rank.
        world_size: The number of ranks.
        shuffle: Draw a new order at each epoch from `seed` (set the epoch with `set_epoch`).
        seed: The seed of the order, the same on every rank.
        even: Leave out the last `total % world_size` positions (training).

    Example:
        >>> list(RankSampler(5, rank=0, world_size=2, shuffle=False, seed=0, even=False))
        [0, 2, 4]
    """

    def __init__(
        self, total: int, rank: int, world_size: int, shuffle: bool, seed: int, even: bool
    ) -> None:
        self.total, self.rank, self.world_size = total, rank, world_size
        self.shuffle, self.seed, self.even, self.epoch = shuffle, seed, even, 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration follows."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        positions = _positions(self.total, self.rank, self.world_size, self.even)
        if not self.shuffle:
            return iter(positions)
        order = permutation(self.total, self.seed, self.epoch)
        return iter(order[positions.start : positions.stop : positions.step].tolist())

    def __len__(self) -> int:
        return len(_positions(self.total, self.rank, self.world_size, self.even))


def _loader_options(loader: DataLoader[Any]) -> dict[str, Any]:
    """The arguments that rebuild `loader` with another sampler."""
    options: dict[str, Any] = {
        "batch_size": loader.batch_size,
        "drop_last": loader.drop_last,
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "generator": loader.generator,
        "persistent_workers": loader.persistent_workers,
        "pin_memory_device": loader.pin_memory_device,
    }
    if loader.num_workers > 0:
        options["prefetch_factor"] = loader.prefetch_factor
    if hasattr(loader, "in_order"):
        options["in_order"] = loader.in_order
    return options


def shard_loader(
    loader: DataLoader[Any], rank: int, world_size: int, seed: int, even: bool
) -> DataLoader[Any]:
    """Return a `DataLoader` like `loader` whose sampler yields rank `rank`'s indices only.

    A loader with a `DistributedSampler` (or a `RankSampler`) is returned as it is: it is
    sharded already. So is one over an `IterableDataset`, which must yield each rank's part
    itself (for instance from `torch.distributed.get_rank()`), the same number of batches on
    every rank.

    Raises:
        ValueError: For a sampler other than the sequential and random ones torch makes for
            `shuffle=False` and `shuffle=True`, which kiln cannot cut into shards.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> loader = DataLoader(TensorDataset(torch.arange(6)), batch_size=2)
        >>> [batch.tolist() for batch, in shard_loader(loader, 1, 2, seed=0, even=True)]
        [[1, 3], [5]]
    """
    sampler = loader.sampler
    if isinstance(loader.dataset, IterableDataset) or isinstance(
        sampler, (DistributedSampler, RankSampler)
    ):
        return loader
    plain = isinstance(sampler, SequentialSampler) or (
        isinstance(sampler, RandomSampler)
        and not sampler.replacement
        and sampler.num_samples == len(sampler.data_source)
    )
    if loader.batch_size is None or not plain:
        kind = type(sampler).__name__ if loader.batch_size is not None else "batch_sampler"
        raise ValueError(
            f"Under torchrun kiln gives each rank its part of a DataLoader by replacing its "
            f"sampler, but this loader has a custom {kind}. Give it a "
            "`torch.utils.data.distributed.DistributedSampler` yourself (kiln then leaves it "
            "alone and calls its `set_epoch`), or use `shuffle=True`/`False`."
        )
    shuffle = isinstance(sampler, RandomSampler)
    total = len(loader.dataset)  # type: ignore[arg-type]
    ranks = RankSampler(total, rank, world_size, shuffle, seed, even)
    return DataLoader(loader.dataset, sampler=ranks, **_loader_options(loader))


def shard(batches: Iterable[Any], rank: int, world_size: int, seed: int, even: bool) -> Any:
    """Return rank `rank`'s part of `batches`: a `DataShard` of a `Data`, a sharded loader.

    Other iterables are returned as they are: they must yield each rank's part themselves.

    Example:
        >>> import torch
        >>> part = shard(Data(torch.arange(8), batch_size=2), 0, 2, seed=0, even=True)
        >>> [batch.tolist() for batch in part]
        [[0, 2], [4, 6]]
    """
    if world_size == 1:
        return batches
    if isinstance(batches, DataShard):
        batches = batches.data  # a Data sharded by an earlier `fit`
    if isinstance(batches, Data):
        return DataShard(batches, rank, world_size, even)
    if isinstance(batches, DataLoader):
        return shard_loader(batches, rank, world_size, seed, even)
    return batches
