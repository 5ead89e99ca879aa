"""`Trainer.evaluate`: measuring the model on data, kept apart so that `trainer.py` holds the loop.

What lives here: `Evaluating`, the part of `Trainer` that turns data into an evaluation pass.
What does not: the pass itself (`Trainer._evaluate_pass`, shared with validation), and
prediction (`prediction.py`).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from kiln.data.sources import as_batches
from kiln.history import Evaluation

if TYPE_CHECKING:
    from collections.abc import Iterable

    from kiln.distributed.replicas import Replicas
    from kiln.loop.optimizer_step import Stepper


class Evaluating:
    """The `evaluate` method of `kiln.Trainer` (see there); not used on its own."""

    _replicas: Replicas
    _steps: Stepper
    _unchecked: set[str]

    def _evaluate_pass(self, batches: Iterable[Any], emit: bool) -> dict[str, float]:
        raise NotImplementedError  # the Trainer's

    def evaluate(self, data: Any, *, batch_size: int | None = None) -> Evaluation:
        """Measure the loss and metrics on `data`, with the model in eval mode.

        Under `torchrun`, each rank measures its part of the data and every rank returns the
        values over all of it (call it on every rank).

        Args:
            data: A `kiln.Data`, a `DataLoader`, a `Dataset`, or a tuple `(X, Y)`.
            batch_size: Samples per batch for tensors, arrays and Datasets (default 32).

        Returns:
            The values, by name without prefix: `evaluation.loss`, `evaluation.accuracy`.

        Example:
            >>> import torch, kiln
            >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu",
            ...                        progress=False)
            >>> sorted(trainer.evaluate((torch.randn(8, 2), torch.randn(8, 1))))
            ['loss']
        """
        batches = self._replicas.shard(as_batches(data, "data", batch_size, False), train=False)
        self._unchecked.add("validation")
        return Evaluation(self._evaluate_pass(batches, emit=False))

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return self._steps.autocast
