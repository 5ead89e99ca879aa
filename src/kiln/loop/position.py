"""Where a training pass stands, so that a checkpoint taken in the middle of an epoch continues it.

What lives here: `PassPosition`, which remembers the random generators as they were when the
epoch's data order was drawn, says how far the pass got, and on resume replays the data order
to the same batch. What does not: the rest of the trainer's state (`checkpoint/run.py`).

Why replay the generators: a `DataLoader` over a `RandomSampler` draws its order (and its
workers' seeds) from torch's global generator when the pass starts, and a dataset may draw its
augmentations from it batch by batch. Restoring the generators as they were when the epoch
started, iterating past the batches already done, then restoring them as they were at the save,
gives the uninterrupted run's batches and random numbers from there on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import torch

from kiln.data.in_memory import Data
from kiln.data.repeated import Repeated
from kiln.loop.tracking import PassTracker
from kiln.seed import get_rng_state, set_rng_state


class PassPosition:
    """The position of a trainer in its current training pass.

    Example:
        >>> import torch
        >>> from kiln import Data
        >>> from kiln.loop.tracking import PassTracker
        >>> position, tracker = PassPosition(), PassTracker([])
        >>> data = Data(torch.arange(6.0), batch_size=2, shuffle=True, seed=0)
        >>> batches, first = position.begin(data, tracker, torch.device("cpu"))
        >>> first, len(list(batches))
        (0, 3)
    """

    def __init__(self) -> None:
        self.epoch_rng: dict[str, Any] | None = None
        self.pending: dict[str, Any] | None = None
        #: The shuffling seed of the `Data` trained on (saved: a seed drawn at random when
        #: `fit` made the `Data` would differ in the resumed process), and one to restore.
        self.data_seed: int | None = None
        self.restored_data_seed: int | None = None

    def begin(
        self, batches: Iterable[Any], tracker: PassTracker, device: torch.device
    ) -> tuple[Iterator[Any], int]:
        """Start the pass over `batches`; return the batch iterator and the first batch's index.

        With a position restored from a checkpoint, the pass continues after the batches the
        saving run had done, with the tracker's sums and every generator as they were then.
        """
        data = batches.batches if isinstance(batches, Repeated) else batches
        if isinstance(data, Data):
            if self.restored_data_seed is not None:
                data.seed, self.restored_data_seed = self.restored_data_seed, None
            self.data_seed = data.seed
        pending, self.pending = self.pending, None
        if pending is None:
            self.epoch_rng = get_rng_state()
            return iter(batches), 0
        done = int(pending["batches"])
        self.epoch_rng = pending["epoch_rng"]
        set_rng_state(pending["epoch_rng"])
        if isinstance(batches, Data):  # slices its own order: nothing to load and throw away
            iterator = batches.iterate(start=done)
        else:
            iterator = iter(batches)
            skipped = sum(1 for _ in islice(iterator, done))
            if skipped < done:
                raise ValueError(
                    f"The checkpoint was saved after batch {done} of the epoch, but the data "
                    f"now yields only {skipped}. Resume with the same data."
                )
        tracker.load_state_dict(pending["tracker"], device)
        set_rng_state(pending["rng"])
        return iterator, done

    def state_dict(self, tracker: PassTracker) -> dict[str, Any]:
        """Return the position after the last completed batch, with the pass's sums so far.

        Exact when taken at `train_batch_end`, after the batch's optimizer step. The generators'
        current states are not included: the checkpoint holds them (`rng`), and `pending` gets
        them back under the same key.
        """
        return {
            "batches": tracker.batches,
            "epoch_rng": self.epoch_rng,
            "tracker": tracker.state_dict(),
        }
