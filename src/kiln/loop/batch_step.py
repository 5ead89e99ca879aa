"""What one step computes: the `StepOutput` contract and the default supervised step.

What lives here: `StepOutput`, the reading of what a `training_step` returns (a loss tensor or a
dict with `"loss"` and other values), the supervised step used when the model defines none, and
`StepMethods`, the three step methods of `Trainer` that a subclass may override. What does not:
backward, optimizer steps and accumulation (`optimizer_step.py`), which the trainer owns, so a
custom step never has to repeat them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

from torch import Tensor, nn

from kiln.data.batch import batch_size_of, call_model, split_batch
from kiln.losses import LossFunction

#: What a step method may return: a `StepOutput`, the loss, or a dict with "loss".
StepResult = Union["StepOutput", Tensor, dict[str, Any]]

#: Keys of a step's dict that are not logged: the loss is logged as "loss", the others feed
#: the metrics.
RESERVED_KEYS = frozenset({"loss", "output", "target"})


@dataclass(slots=True)
class StepOutput:
    """What a training or validation step produced for one batch.

    Args:
        loss: The scalar loss (with its graph in training), or `None` when there is none.
        size: Samples in the batch, the weight of this batch in the epoch means.
        output: The model's output, for the metrics.
        target: The batch's target, for the metrics.
        logs: Other values to log (such as QuNet's `score`): numbers, scalar tensors, or 1-D
            tensors whose items are logged as `name`, `name_1`, `name_2`, ...

    Example:
        >>> import torch
        >>> StepOutput(torch.tensor(0.5), size=32).size
        32
    """

    loss: Tensor | None
    size: int
    output: Any = None
    target: Any = None
    logs: dict[str, Any] | None = None


def to_step_output(returned: Any, batch: Any, method: str) -> StepOutput:
    """Read what a step method returned: a `StepOutput`, a loss tensor or a dict.

    A dict holds `"loss"` and may hold `"output"` and `"target"` (for the metrics) and any other
    values to log.

    Raises:
        TypeError: If the step returned anything else (such as `None`).
    """
    if isinstance(returned, StepOutput):
        return returned
    if isinstance(returned, Tensor):
        return StepOutput(returned, batch_size_of(batch))
    if isinstance(returned, Mapping):
        logs = {key: value for key, value in returned.items() if key not in RESERVED_KEYS}
        return StepOutput(
            returned.get("loss"),
            batch_size_of(batch),
            returned.get("output"),
            returned.get("target"),
            logs or None,
        )
    raise TypeError(
        f"`{method}` must return the loss (a scalar tensor) or a dict such as "
        f"{{'loss': loss, 'score': accuracy}}; it returned {type(returned).__name__}."
    )


def find_model_steps(model: nn.Module) -> dict[str, Callable[..., Any] | None]:
    """Return the model's own `training_step`, `validation_step` and `predict_step` (or None).

    The trainer looks them up once per pass: a module's `__getattr__` for a missing name raises
    and catches an exception, microseconds that would otherwise be paid at every step.
    """
    names = ("training_step", "validation_step", "predict_step")
    return {name: getattr(model, name, None) for name in names}


def supervised_step(model: nn.Module, loss: LossFunction | None, batch: Any) -> StepOutput:
    """The default step: `output = model(x)`, then `loss(output, y, w)` when there is a loss.

    Args:
        model: The network.
        loss: The loss, or `None` to compute outputs only (metrics may still use them).
        batch: `x`, `(x, y)` or `(x, w, y)`.

    Returns:
        The loss, the batch size, the output and the target.
    """
    inputs, weight, target = split_batch(batch)
    output = call_model(model, inputs)
    value = None if loss is None else loss(output, target, weight)
    return StepOutput(
        value, batch_size_of(target if target is not None else inputs), output, target
    )


def prediction_step(model: nn.Module, loss: LossFunction | None, batch: Any) -> Any:
    """The default prediction: the model's output on the batch's inputs.

    The output is post-processed by the loss when the loss defines `postproc` (the auto
    criterion turns logits into probabilities).
    """
    inputs, _, _ = split_batch(batch)
    output = call_model(model, inputs)
    if loss is not None and loss.postproc is not None:
        output = loss.postproc(output)
    return output


class StepMethods:
    """The step methods of `kiln.Trainer`, the one place to override what happens to a batch.

    A `Trainer` subclass may override `training_step`, `validation_step` and `predict_step`
    (TorchFusion's custom trainer); the trainer keeps autocast, backward, accumulation, the
    optimizer and the callbacks. Not used on its own.
    """

    model: nn.Module
    loss: LossFunction | None
    _model_steps: dict[str, Callable[..., Any] | None]

    def defines(self, method: str) -> bool:
        """Whether the model, or a subclass of Trainer, provides its own `method`."""
        overridden = getattr(type(self), method) is not getattr(StepMethods, method)
        return overridden or callable(getattr(self.model, method, None))

    def training_step(self, batch: Any, batch_idx: int) -> StepResult:
        """Compute the loss of one training batch (the trainer then runs backward and the step).

        By default: the model's own `training_step` when it has one, else `loss(model(x), y)`.
        Override it in a subclass to change what happens to a batch; return the loss, a dict
        with `"loss"` (and `"output"`/`"target"` for metrics, and other values to log), or a
        `StepOutput`.
        """
        model_step = self._model_steps["training_step"]
        if model_step is not None:
            return model_step(batch, batch_idx)  # type: ignore[no-any-return]
        return supervised_step(self.model, self.loss, batch)

    def validation_step(self, batch: Any, batch_idx: int) -> StepResult:
        """Compute the loss and values of one validation or evaluation batch.

        Runs with the model in eval mode and without gradients. By default: the model's
        `validation_step` when it has one, else `training_step`.
        """
        model_step = self._model_steps["validation_step"]
        if model_step is not None:
            return model_step(batch, batch_idx)  # type: ignore[no-any-return]
        return self.training_step(batch, batch_idx)

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        """Return the predictions for one batch.

        By default: the model's `predict_step` when it has one, else the model's output on the
        batch's inputs, post-processed by the loss where the loss defines `postproc`.
        """
        model_step = self._model_steps["predict_step"]
        if model_step is not None:
            return model_step(batch, batch_idx)
        return prediction_step(self.model, self.loss, batch)
