"""The step methods: what one batch computes (`StepOutput`), and the default computations.

What lives here: `StepOutput`, the reading of what a `training_step` returns (a loss tensor or a
dict with `"loss"` and other values), and what the trainer's step methods do when neither the
model nor a `Trainer` subclass defines them. What does not: backward, the optimizer step and
accumulation (`optimizer_step.py`), which the trainer owns, so a custom `training_step` never
has to repeat them.
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

#: Keys of a step method's dict that are not logged: the loss is logged as "loss", the others feed
#: the metrics.
RESERVED_KEYS = frozenset({"loss", "output", "target"})


@dataclass(slots=True)
class StepOutput:
    """What a training or validation step method produced for one batch.

    Args:
        loss: The scalar loss (with its graph in training), or `None` when there is none.
        size: Samples in the batch, the weight of this batch in the epoch means.
        output: The model's output, for the metrics.
        target: The batch's target, for the metrics.
        logs: Other values to log (such as a `score`): numbers, scalar tensors, or 1-D
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
        TypeError: If the method returned anything else (such as `None`).
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


def find_model_hooks(model: nn.Module) -> dict[str, Callable[..., Any] | None]:
    """Return the model's own `training_step`, `validation_step` and `predict_step` (or None).

    The trainer looks them up once per pass: a module's `__getattr__` for a missing name raises
    and catches an exception, microseconds that would otherwise be paid at every batch.
    """
    names = ("training_step", "validation_step", "predict_step")
    return {name: getattr(model, name, None) for name in names}


def supervised_step(model: nn.Module, loss: LossFunction | None, batch: Any) -> StepOutput:
    """The default step method: `output = model(x)`, then `loss(output, y, w)` if there is a loss.

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
