"""How a pass walks its data: several passes in one epoch, and the dataset's `switch_state`.

What lives here: `repeated`, the batches of an epoch of one or several passes, `start_epoch`,
which tells the data which epoch starts, and `switching`, which calls a dataset's
`switch_state()` before each batch is made. What does not: the repeated passes themselves
(`data/repeated.py`), turning what `fit` receives into batches (`data/sources.py`) and the data
position of a resumed pass (`position.py`), which works on a `Repeated` like on any other
iterable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kiln.data.repeated import Repeated
from kiln.data.sources import set_epoch


def repeated(batches: Iterable[Any], times: int) -> Iterable[Any]:
    """Return `batches` itself for one pass an epoch, else a `Repeated` of `times` passes."""
    return batches if times == 1 else Repeated(batches, times)


def start_epoch(batches: Iterable[Any], epoch: int) -> None:
    """Tell the data (or its sampler) which epoch starts, so each epoch has its own order."""
    if isinstance(batches, Repeated):
        batches.epoch = epoch
    else:
        set_epoch(batches, epoch)


def find_switch_state(batches: Any) -> Callable[[], Any] | None:
    """Return the data's `switch_state` method, or None when no part of the data defines one.

    Looked up on the batches themselves (a `Data` subclass), then on the dataset behind them
    (`DataLoader.dataset`), then on the datasets that one wraps (`Subset.dataset`, from a split).

    Example:
        >>> import torch, kiln
        >>> find_switch_state(kiln.Data(torch.arange(4))) is None
        True
    """
    seen: Any = batches.batches if isinstance(batches, Repeated) else batches
    for _ in range(8):  # a few levels of wrapping; a cycle of `.dataset` cannot loop forever
        if seen is None:
            return None
        switch = getattr(seen, "switch_state", None)
        if callable(switch):
            return switch  # type: ignore[no-any-return]
        seen = getattr(seen, "dataset", None)
    return None


def switching(
    batches: Iterable[Any], switch: Callable[[], Any], remaining: int | None = None
) -> Iterator[Any]:
    """Yield the batches, calling `switch()` before each one is made.

    The batch is made when the iterator is asked for it, so the call comes first: a dataset
    can, for instance, make each batch all positives or all negatives. With `remaining` (the
    number of batches left), the data is not asked once more after the last one; without it,
    `switch()` is called once more at the end, to find that the data is exhausted.

    Example:
        >>> calls = []
        >>> list(switching(iter("ab"), lambda: calls.append("switch"), remaining=2)), calls
        (['a', 'b'], ['switch', 'switch'])
    """
    iterator = iter(batches)
    if remaining is not None:
        for _ in range(remaining):
            switch()
            batch = next(iterator, iterator)
            if batch is iterator:  # exhausted early
                return
            yield batch
        return
    while True:
        switch()
        batch = next(iterator, iterator)
        if batch is iterator:
            return
        yield batch


def with_switch_state(
    iterator: Iterable[Any], batches: Any, count: int | None, first: int
) -> Iterable[Any]:
    """Return `iterator`, calling the data's `switch_state()` before each batch if it has one.

    Args:
        iterator: The batches of the pass, from batch `first` on.
        batches: The data they come from, where `switch_state` is looked for.
        count: Batches in the whole pass, or None when unknown.
        first: The index of the iterator's first batch (a resumed pass starts later).

    Example:
        >>> import torch, kiln
        >>> data = kiln.Data(torch.arange(4), batch_size=2)
        >>> with_switch_state(data, data, 2, 0) is data  # no switch_state: unchanged
        True
    """
    switch = find_switch_state(batches)
    if switch is None:
        return iterator
    return switching(iterator, switch, None if count is None else count - first)
