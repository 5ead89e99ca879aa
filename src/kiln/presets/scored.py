"""Training on a scaled loss while logging the unscaled one: the criterion trainer and the score.

A scaled criterion (such as `kiln.losses.MixedCriterion`) has two faces:
`criterion(output, target, weights)` is the scaled loss that backpropagation minimises, and
`criterion(..., unscaled=True)` the loss in the targets' own units, which says how good the
predictions are. Kiln logs both, each under its own name, so that nothing logged changes meaning:

- `loss` / `val_loss`: the scaled loss, what the optimizer minimises (as for any kiln loss);
- `unscaled_loss` / `val_unscaled_loss`: the unscaled loss, sample-weighted over the epoch;
- `score` / `val_score`: its square root, the epoch's score (an RMSE for regression columns;
  lower is better), which the auto preset's early stopping, LR decay, restarts, best file and
  best-N averaging watch.

What lives here: `CriterionTrainer`, a `kiln.Trainer` whose step method logs the unscaled loss
(the one place a subclass changes what happens to a batch: the loop is the same), and `Score`,
the callback that takes the square root of the epoch's mean. What does not: the criterion
(`kiln.losses.mixed`) and the preset (`auto.py`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from kiln.callbacks.base import Callback
from kiln.data.batch import batch_size_of, call_model, split_batch
from kiln.loop.step_methods import StepOutput, StepResult
from kiln.trainer import Trainer

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import Tensor

UNSCALED, SCORE = "unscaled_loss", "score"


def scaled_and_unscaled(
    criterion: Callable[..., Tensor], output: Any, target: Any, weight: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Return the criterion's scaled and unscaled loss of a batch.

    A criterion with a `both` method (`MixedCriterion`) computes the two at once; any other is
    called twice, the second time with `unscaled=True` and without a graph.

    Example:
        >>> import torch
        >>> def criterion(output, target, weights=None, unscaled=False):
        ...     return ((output - target) ** 2).mean() * (1.0 if unscaled else 0.5)
        >>> [float(v) for v in scaled_and_unscaled(criterion, torch.zeros(2), torch.ones(2), None)]
        [0.5, 1.0]
    """
    both = getattr(criterion, "both", None)
    if callable(both):
        scaled, unscaled = both(output, target, weight)
        return scaled, unscaled.detach()
    scaled = criterion(output, target, weight) if weight is not None else criterion(output, target)
    with torch.no_grad():
        unscaled = criterion(output, target, weight, unscaled=True)
    return scaled, unscaled


class CriterionTrainer(Trainer):
    """A `kiln.Trainer` for scaled criteria: backprop on the scaled loss, log both.

    The loss must be a criterion object called `criterion(output, target, weights=None,
    unscaled=False)` with a `postproc(pred)` (`kiln.losses.MixedCriterion`, or one's own).
    Each batch logs `unscaled_loss` beside the `loss`; add the `Score` callback for `score`.
    Everything else (the loop, batches `(x, y)` / `(x, w, y)`, callbacks, `predict` with
    `postproc`) is the `Trainer`'s.

    Example:
        >>> import torch
        >>> from kiln.losses import MixedCriterion
        >>> X = torch.randn(32, 3)
        >>> Y = torch.cat([100 * X[:, :1], (X[:, 1:2] > 0).float()], 1)
        >>> trainer = CriterionTrainer(torch.nn.Linear(3, 2), loss=MixedCriterion((X, Y)),
        ...                            callbacks=[Score()], device="cpu", progress=False)
        >>> history = trainer.fit((X, Y), val=(X, Y), epochs=2)
        >>> row = history.epochs[-1]
        >>> abs(row["val_score"] - row["val_unscaled_loss"] ** 0.5) < 1e-9
        True
    """

    def training_step(self, batch: Any, batch_idx: int) -> StepResult:
        """The supervised step method, logging the criterion's unscaled loss as `unscaled_loss`."""
        # A model with its own `training_step` keeps it (a few microseconds a batch, here).
        if callable(getattr(self.model, "training_step", None)) or self.loss is None:
            return super().training_step(batch, batch_idx)
        inputs, weight, target = split_batch(batch)
        output = call_model(self.model, inputs)
        scaled, unscaled = scaled_and_unscaled(self.loss.fn, output, target, weight)
        size = batch_size_of(target if target is not None else inputs)
        return StepOutput(scaled, size, output, target, {UNSCALED: unscaled})


class Score(Callback):
    """Log `score = sqrt(unscaled_loss)` and `val_score` after each pass.

    The square root is taken of the epoch's sample-weighted mean (over every `repeat_train` /
    `repeat_val` pass), not averaged over batches. Stateless: nothing to resume.

    Example:
        >>> import kiln
        >>> trainer = kiln.Trainer(kiln.MLP(2, [], 1), loss="mse", device="cpu", progress=False)
        >>> trainer.state.logs = {"unscaled_loss": 4.0}
        >>> Score().on_train_epoch_end(trainer)
        >>> trainer.state.logs["score"]
        2.0
    """

    def added_logs(self, keys: set[str]) -> set[str]:
        """The names this callback adds to the logs, given those the step methods log."""
        added = {SCORE} if UNSCALED in keys else set()
        return added | ({f"val_{SCORE}"} if f"val_{UNSCALED}" in keys else set())

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        """Add the training score."""
        _add_root(trainer.state.logs, UNSCALED, SCORE)

    def on_validation_end(self, trainer: Trainer) -> None:
        """Add the validation score."""
        _add_root(trainer.state.logs, f"val_{UNSCALED}", f"val_{SCORE}")


def _add_root(logs: dict[str, float], source: str, name: str) -> None:
    value = logs.get(source)
    if value is not None:
        logs[name] = math.sqrt(value) if value >= 0 else math.nan
