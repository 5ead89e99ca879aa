"""The step methods: what one batch computes (`StepOutput`), and the default computations.

What lives here: `StepOutput`, the reading of what a `training_step` returns (a loss tensor or a
dict with `"loss"` and other values), and what the trainer's step methods do when neither the
model nor a `Trainer` subclass defines them. What does not: backward, the optimizer step and
accumulation (`optimizer_step.py`), which the trainer owns, so a custom `training_step` never
has to repeat them.
"""

from __future__ import annotations

import sys
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


def returned_loss(output: Any) -> Tensor | None:
    """Return the loss a model computed itself, carried by its output, or `None`.

    An output carries a loss when it is a dict (or a Hugging Face `ModelOutput`) with a tensor
    under `"loss"`, or an object with a tensor `loss` attribute. A plain tensor carries none.

    Example:
        >>> import torch
        >>> returned_loss({"loss": torch.tensor(1.0), "logits": torch.zeros(2, 3)})
        tensor(1.)
        >>> returned_loss(torch.zeros(2)) is None
        True
    """
    if isinstance(output, Tensor):
        return None
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    return loss if isinstance(loss, Tensor) else None


def is_model_output(output: Any) -> bool:
    """Tell whether `output` is a Hugging Face `ModelOutput` (told apart without importing it).

    Example:
        >>> is_model_output({"logits": 1})
        False
    """
    return isinstance(output, Mapping) and type(output) is not dict and hasattr(output, "to_tuple")


#: Endings of the class names of causal language models, whose position `t` predicts token `t+1`.
_CAUSAL_ENDINGS = ("ForCausalLM", "LMHeadModel")

#: Whether each model class is a causal language model, decided once per class.
_CAUSAL: dict[type, bool] = {}


def is_causal_lm(model: nn.Module) -> bool:
    """Tell whether `model` is a causal language model (Hugging Face's `...ForCausalLM`).

    Such a model shifts its labels itself for the loss: position `t` of its logits predicts
    token `t + 1`. Read from the class (its name, its `loss_type`, and the causal classes that
    `transformers` lists when it is already imported), once per class.

    Example:
        >>> import torch
        >>> is_causal_lm(torch.nn.Linear(2, 2))
        False
    """
    kind = type(model)
    known = _CAUSAL.get(kind)
    if known is None:
        names: set[str] = set()
        auto = sys.modules.get("transformers.models.auto.modeling_auto")
        if auto is not None:
            listed = getattr(auto, "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", {})
            names = {name for value in listed.values() for name in _as_names(value)}
        known = (
            kind.__name__ in names
            or kind.__name__.endswith(_CAUSAL_ENDINGS)
            or getattr(model, "loss_type", None) == "ForCausalLM"
        )
        _CAUSAL[kind] = known
    return known


def _as_names(value: Any) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(str(name) for name in value)


def metric_inputs(model: nn.Module, output: Any, target: Any) -> tuple[Any, Any]:
    """Return the output and target a model that computes its own loss gives the metrics.

    The output is the model's `logits` (or the output itself when it has none). Token-level
    logits `(N, L, C)` against labels `(N, L)` become `(N, C, L)`, the layout of per-position
    classes, with no copy; for a causal language model they are aligned the way its loss is:
    `logits[:, :-1]` against `labels[:, 1:]` (position `t` predicts token `t + 1`). Labels of
    -100 (padding) are left out by the metrics that ignore them, such as accuracy.

    Example:
        >>> import torch
        >>> logits, labels = metric_inputs(torch.nn.Linear(2, 2), {"logits": torch.zeros(4, 6, 3)},
        ...                                torch.zeros(4, 6, dtype=torch.long))
        >>> tuple(logits.shape), tuple(labels.shape)
        ((4, 3, 6), (4, 6))
    """
    logits = (
        output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    )
    if not isinstance(logits, Tensor):
        return output, target
    if isinstance(target, Tensor) and target.dim() >= 2 and logits.dim() == target.dim() + 1:
        if is_causal_lm(model):
            logits, target = logits[:, :-1], target[:, 1:]
        logits = logits.movedim(-1, 1)
    return logits, target


def supervised_step(model: nn.Module, loss: LossFunction | None, batch: Any) -> StepOutput:
    """The default step method: `output = model(x)`, then `loss(output, y, w)` if there is a loss.

    A model that computes its own loss (a Hugging Face model given `labels`: its output carries
    a `loss`) is trained on that loss when the trainer has none; its metrics compare the
    output's `logits` with the batch's `labels` (see `metric_inputs`).

    Args:
        model: The network.
        loss: The loss, or `None` to use the loss the model returns, or compute outputs only
            (metrics may still use them).
        batch: `x`, `(x, y)` or `(x, w, y)`; a dict is the model's keyword inputs, `labels`
            among them.

    Returns:
        The loss, the batch size, the output and the target.
    """
    inputs, weight, target = split_batch(batch)
    output = call_model(model, inputs)
    size = batch_size_of(target if target is not None else inputs)
    if loss is not None:
        return StepOutput(loss(output, target, weight), size, output, target)
    value = None if isinstance(output, Tensor) else returned_loss(output)
    if value is None:
        return StepOutput(None, size, output, target)
    if target is None and isinstance(inputs, Mapping):
        target = inputs.get("labels")
    output, target = metric_inputs(model, output, target)
    return StepOutput(value, size, output, target)


def prediction_step(model: nn.Module, loss: LossFunction | None, batch: Any) -> Any:
    """The default prediction: the model's output on the batch's inputs.

    The output is post-processed by the loss when the loss defines `postproc` (the auto
    criterion turns logits into probabilities). Of a Hugging Face `ModelOutput`, the
    prediction is its `logits` where it has them.
    """
    inputs, _, _ = split_batch(batch)
    output = call_model(model, inputs)
    if is_model_output(output) and isinstance(output.get("logits"), Tensor):
        output = output["logits"]
    if loss is not None and loss.postproc is not None:
        output = loss.postproc(output)
    return output
