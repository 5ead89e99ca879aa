"""Several passes over the data in one epoch: `kiln.repeat` and the `Repeated` it returns.

With random augmentation, the loss of one pass is noisy; averaging several passes in one epoch
steadies the learning curve.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from kiln import deprecation
from kiln.data.sources import num_batches, set_epoch
from kiln.options import whole_number


class Repeated:
    """One epoch made of `times` passes over `batches`, each pass in its own order.

    Pass `r` of epoch `e` is the data's pass number `e * times + r` (what `set_epoch` receives),
    so every pass of every epoch has a different shuffling order, reproducibly.

    Args:
        batches: The batches of one pass (a `Data`, a `DataLoader`, any iterable).
        times: Passes per epoch.

    Example:
        >>> import torch, kiln
        >>> data = Repeated(kiln.Data(torch.arange(4), batch_size=2), times=2)
        >>> len(data), [batch.tolist() for batch in data]
        (4, [[0, 1], [2, 3], [0, 1], [2, 3]])
    """

    def __init__(self, batches: Iterable[Any], times: int) -> None:
        self.batches, self.times, self.epoch = batches, times, 0

    def __len__(self) -> int:
        count = num_batches(self.batches)
        if count is None:
            raise TypeError("the repeated data has no length")
        return count * self.times

    def __iter__(self) -> Iterator[Any]:
        # Each pass starts from a seed drawn when the epoch starts. A `DataLoader` draws its
        # order (and its workers' seeds) from torch's generator when its pass starts, and
        # training draws from it too (dropout); a resumed epoch replays the batches before its
        # checkpoint without training, so a later pass would otherwise be ordered differently.
        seeds = torch.randint(0, 2**62, (self.times,)).tolist()
        for index, seed in enumerate(seeds):
            set_epoch(self.batches, self.epoch * self.times + index)
            with torch.random.fork_rng(devices=[]):  # the training's random numbers go on
                torch.default_generator.manual_seed(seed)
                iterator = iter(self.batches)
                first = next(iterator, iterator)  # the order is drawn with the first batch
            if first is not iterator:
                yield first
                yield from iterator


def repeat(data: Any, times: int) -> Repeated:
    """Make one epoch (or one validation) of `times` passes over `data`, each in its own order.

    Give the result to `Trainer.fit` as `train` or `val`. The logged values average all the
    passes.

    Args:
        data: Anything `fit` accepts as data: a `kiln.Data`, a `DataLoader`, a `Dataset`, or a
            tuple `(X, Y)`.
        times: Passes per epoch, a positive integer.

    Raises:
        ValueError: If `times` is not a positive integer.

    Example:
        >>> import torch, kiln
        >>> X, Y = torch.randn(8, 2), torch.randn(8, 1)
        >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu",
        ...                        progress=False)
        >>> _ = trainer.fit(kiln.repeat((X, Y), 3), epochs=1, batch_size=4)
        >>> trainer.state.step
        6
    """
    count = whole_number(times)
    if count is None or count < 1:
        raise ValueError(f"`times` must be a positive integer; received {times!r}.")
    return Repeated(data, count)


def unrepeated(data: Any, times: int | None) -> tuple[Any, int]:
    """Split what `fit` received into the data and its passes per epoch.

    `times` is the deprecated `repeat_train`/`repeat_val` of `fit` (None when not given).
    """
    if isinstance(data, Repeated):
        if times is not None:
            raise ValueError("Give the passes per epoch once: `kiln.repeat(data, n)` alone.")
        return data.batches, data.times
    if times is not None:
        deprecation.warn("fit(repeat_train=n) and fit(repeat_val=n)", "kiln.repeat(data, n)")
    return data, 1 if times is None else times
