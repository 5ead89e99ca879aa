"""The `Trainer`'s tools around training: the learning-rate schedule, the LR finder, a summary.

What lives here: `TrainerTools`, the part of `Trainer` that looks at or prepares a run without
being the loop: `trainer.schedules` (QuNet's `set/add/clear` of learning-rate curves),
`trainer.lr_find(...)` and `trainer.summary(...)`. What does not: the schedules themselves
(`kiln.optim`, `kiln.callbacks.LRScheduler`), the range test (`lr_finder.py`) and the table
(`summary.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kiln.callbacks.lr_scheduler import LRScheduler
from kiln.tools.lr_finder import LRFinderResult, lr_find
from kiln.tools.summary import ModelSummary, summary

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch
    from torch import nn

    from kiln.trainer import Trainer


class TrainerTools:
    """The schedule, LR finder and summary methods of `kiln.Trainer`; not used on its own."""

    model: nn.Module
    device: torch.device
    callbacks: Any  # a CallbackList; a list assigned to it replaces the callbacks

    @property
    def schedules(self) -> LRScheduler:
        """The trainer's learning-rate schedule, added (first in the callbacks) when it has none.

        QuNet's `set/add/clear` of schedules: `trainer.schedules.set(kiln.optim.WarmupCosine(
        ...))` replaces the curves, `.add(...)` chains one more, `.clear()` removes them, and
        `.plot(...)` draws the planned curve. It is the trainer's `kiln.callbacks.LRScheduler`.

        Example:
            >>> import torch, kiln
            >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", optimizer="sgd",
            ...                        lr=0.1, device="cpu", progress=False)
            >>> trainer.schedules.set(kiln.optim.LinearSchedule(lr1=0.1, lr2=0.01, epochs=3))
            >>> history = trainer.fit((torch.randn(8, 2), torch.randn(8, 1)), epochs=4)
            >>> [round(lr, 3) for lr in history.lr]
            [0.1, 0.07, 0.04, 0.01]
        """
        for callback in self.callbacks:
            if isinstance(callback, LRScheduler):
                return callback
        scheduler = LRScheduler()
        # First, so that a StepCheckpoint (put last) saves the schedule of the same step.
        self.callbacks = [scheduler, *self.callbacks]
        return scheduler

    def lr_find(self, train: Any, **options: Any) -> LRFinderResult:
        """Run a learning-rate range test on `train`; the trainer is left exactly as it was.

        The options (`start_lr`, `end_lr`, `num_steps`, `mode`, `smooth`, `diverge`,
        `batch_size`, `callbacks`) are those of `kiln.lr_find`.

        Example:
            >>> import torch, kiln
            >>> X, Y = torch.randn(64, 2), torch.randn(64, 1)
            >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", optimizer="sgd",
            ...                        device="cpu", progress=False)
            >>> result = trainer.lr_find((X, Y), num_steps=20)
            >>> result.suggestion < 10, trainer.state.step
            (True, 0)
        """
        return lr_find(self._trainer_itself(), train, **options)

    def summary(
        self,
        input_size: Sequence[int] | Sequence[Sequence[int]],
        batch_size: int = 1,
        dtypes: Any = None,
    ) -> ModelSummary:
        """Describe the model's layers: input and output shapes, parameters, multiply-adds.

        TorchFusion's `model.summary((1, 28, 28))`: `input_size` excludes the batch dimension
        (a list of sizes for a model with several inputs); `print` the result for the table.

        Example:
            >>> import kiln
            >>> trainer = kiln.Trainer(kiln.MLP(4, [8], 2), device="cpu", progress=False)
            >>> trainer.summary((4,)).total_params
            58
        """
        return summary(
            self.model, input_size, batch_size=batch_size, device=self.device, dtypes=dtypes
        )

    def _trainer_itself(self) -> Trainer:
        return self  # type: ignore[return-value]  # TrainerTools is only ever a Trainer's base
