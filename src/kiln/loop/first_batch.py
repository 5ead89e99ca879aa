"""First-batch diagnostics: inputs that do not fit, bad step-method outputs, unlogged monitors.

What lives here: checks that run once per `fit` (or once per pass), never per batch, and the
messages that say what was received, what was expected and how to fix it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from kiln.data.batch import split_batch
from kiln.data.in_memory import Data
from kiln.loop.step_methods import StepOutput, to_step_output
from kiln.losses import LossFunction
from kiln.losses.checks import CLASSES, check_label_range, check_unit_interval, describe

if TYPE_CHECKING:
    from kiln.trainer import Trainer

#: Fragments of torch's messages for inputs that do not fit a layer.
_SHAPE_ERRORS = (
    "shapes cannot be multiplied",
    "size mismatch",
    "to have",
    "Given groups=",
    "Expected 3D",
    "Expected 4D",
    "Expected 2D",
    "must match the size",
    "input.size(-1) must be equal to input_size",
)
_DTYPE_ERRORS = ("dtype", "scalar type", "Expected object of", "Double", "Half")


def first_layer(model: nn.Module) -> tuple[str, str] | None:
    """Return the model's first layer with a fixed input size, and the inputs it expects."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return repr(module), f"(N, {module.in_features})"
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            dims = {nn.Conv1d: "L", nn.Conv2d: "H, W", nn.Conv3d: "D, H, W"}[type(module)]
            return repr(module), f"(N, {module.in_channels}, {dims})"
        if isinstance(module, nn.Embedding):
            return repr(module), f"integer indices below {module.num_embeddings}"
    return None


def explain_model_error(error: RuntimeError, model: nn.Module, batch: Any) -> Exception:
    """Return a `ValueError` explaining why the model could not run on the first batch.

    Errors that are not about the inputs' shape or dtype are returned as they are.
    """
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    inputs = split_batch(batch)[0]
    if any(fragment in message for fragment in _DTYPE_ERRORS):
        return ValueError(
            f"The model could not run on the first batch: {message}. The inputs are "
            f"{describe(inputs)}. Fix: give the data the model's dtype, usually float32 "
            "(`x.float()`), or move the model to the data's dtype (`model.double()`)."
        )
    if not any(fragment in message for fragment in _SHAPE_ERRORS):
        return error
    layer = first_layer(model)
    expected = f" Its first layer, {layer[0]}, expects inputs of shape {layer[1]}." if layer else ""
    return ValueError(
        f"The model could not run on the first batch: {message}. The inputs have shape "
        f"{describe(inputs)}.{expected} Fix: make the data's features match the model's first "
        "layer (or the layer to the data), or reshape the inputs."
    )


#: Fragments of Python's messages for a call with the wrong arguments.
_CALL_ERRORS = (
    "got an unexpected keyword argument",
    "required positional argument",
    "required keyword-only argument",
    "positional argument but",
    "positional arguments but",
    "got multiple values for argument",
)


def explain_call_error(error: TypeError, model: nn.Module, batch: Any) -> Exception:
    """Return a `TypeError` explaining why the model could not be called with a batch.

    Only errors raised by the call of the model itself (its `forward` refusing the arguments
    kiln made of the batch) are explained; others are returned as they are.
    """
    message = str(error).strip()
    forward = getattr(type(model).forward, "__qualname__", "forward")
    if not message.startswith(f"{forward}() ") or not any(f in message for f in _CALL_ERRORS):
        return error
    inputs = split_batch(batch)[0]
    if isinstance(batch, Mapping):
        keys = ", ".join(repr(key) for key in list(batch)[:6])
        return TypeError(
            f"The model could not be called with the first batch: {message}. The batch is a "
            f"dict ({keys}): kiln reads a dict as the model's keyword inputs alone, "
            "`model(**batch)`, with no target. Fix: have the dataset (or the DataLoader's "
            "`collate_fn`) return `(x, y)`, or `({'a': a, 'b': b}, y)` for keyword inputs; or "
            "define `training_step(batch, batch_idx)` (and `predict_step`) on the model to "
            "read the dict."
        )
    if isinstance(inputs, Mapping):
        how = "keyword inputs, `model(**x)`"
    elif isinstance(inputs, (list, tuple)):
        how = f"{len(inputs)} positional inputs, `model(*x)`"
    else:
        how = "one input, `model(x)`"
    return TypeError(
        f"The model could not be called with the first batch: {message}. kiln called it with "
        f"{how}, from the inputs {describe(inputs)} of a batch read as `x`, `(x, y)` or "
        "`(x, w, y)`. Fix: give the data the model's inputs (several inputs grouped: "
        "`((x1, x2), y)`), or define `training_step(batch, batch_idx)` on the model to unpack "
        "the batch itself."
    )


def explain_first_error(error: Exception, model: nn.Module, batch: Any) -> Exception:
    """Return the clear error for an exception raised on a pass's first batch, or `error`."""
    if isinstance(error, RuntimeError):
        return explain_model_error(error, model, batch)
    if isinstance(error, TypeError):
        return explain_call_error(error, model, batch)
    return error


def check_training_output(output: StepOutput, has_metrics: bool, method: str) -> None:
    """Raise a clear error if the first training batch's output cannot be trained on."""
    loss = output.loss
    if loss is None:
        raise ValueError(
            f"`{method}` returned no loss. Return the loss tensor, or a dict with a 'loss' key."
        )
    if not isinstance(loss, Tensor):
        raise TypeError(f"The loss must be a tensor; `{method}` gave {type(loss).__name__}.")
    if loss.dim() != 0:
        raise ValueError(
            f"The loss must be a single number (a 0-dim tensor); `{method}` gave a tensor of "
            f"shape {tuple(loss.shape)}. Reduce it, e.g. `loss.mean()`."
        )
    if not loss.requires_grad:
        raise ValueError(
            "The loss does not depend on any trainable parameter, so nothing can be learned: "
            "was it computed under torch.no_grad(), detached, or are all parameters frozen?"
        )
    check_metric_inputs(output, has_metrics, method)


def check_metric_inputs(output: StepOutput, has_metrics: bool, method: str) -> None:
    """Raise a clear error if metrics are asked for but the step method gives them nothing."""
    if has_metrics and (output.output is None or output.target is None):
        raise ValueError(
            f"The trainer has metrics, but `{method}` gives them no output and target. Return "
            "them in its dict: {'loss': loss, 'output': y_pred, 'target': y}; or log your own "
            "values from the step method and drop `metrics=`."
        )


def logged_keys(output: StepOutput, metric_names: Iterable[str], validates: bool) -> set[str]:
    """Return the names an epoch will log, given the first training batch's output."""
    names = {"loss", *metric_names}
    for key, value in (output.logs or {}).items():
        names.add(key)
        if isinstance(value, Tensor) and value.dim() == 1:
            names.update(f"{key}_{index}" for index in range(1, len(value)))
    keys = {"epoch", "lr", "time", *names}
    if validates:
        keys.update(f"val_{name}" for name in names)
    return keys


def check_monitors(callbacks: Iterable[Any], keys: set[str], validates: bool) -> None:
    """Raise `ValueError` if a callback monitors a value that will never be logged."""
    for callback in callbacks:
        monitor = getattr(callback, "monitor", None)
        if not isinstance(monitor, str) or monitor in keys:
            continue
        hint = (
            " It is a validation value, but `fit` received no validation data: pass `val=`."
            if monitor.startswith("val_") and not validates
            else ""
        )
        raise ValueError(
            f"{type(callback).__name__}(monitor={monitor!r}) names a value that is never "
            f"logged.{hint} Logged values: {', '.join(sorted(keys))}."
        )


def check_all_labels(loss: LossFunction | None, output: StepOutput, data: Any) -> None:
    """Check every target of in-memory data at once, not only the first batch's.

    Class labels must lie in the output's classes (those the loss ignores, such as -100, are
    skipped); binary cross-entropy targets must lie in [0, 1].
    """
    if not isinstance(data, Data) or loss is None or len(data.tensors) < 2:
        return
    target, result = data.tensors[-1], output.output
    if loss.kind == CLASSES:
        if not target.is_floating_point() and isinstance(result, Tensor) and result.dim() > 1:
            check_label_range(loss.name, target, result.shape[1], loss.ignore_index)
    elif loss.unit_interval:
        check_unit_interval(loss.name, target)


def check_ignored_labels(loss: LossFunction | None, metrics: Iterable[Any]) -> None:
    """Raise `ValueError` if a metric would count the targets the loss ignores.

    A metric with an `ignore_index` (accuracy) skips torch's -100 by default; a loss that
    ignores another label (`nn.CrossEntropyLoss(ignore_index=0)`) needs the metric told so.
    """
    if loss is None or loss.ignore_index is None or loss.ignore_index == -100:
        return
    for metric in metrics:
        if getattr(metric, "ignore_index", None) == -100:
            raise ValueError(
                f"The loss {loss.name} ignores the targets labelled {loss.ignore_index} (its "
                f"`ignore_index`), but the metric {metric.name!r} would count them (it ignores "
                f"-100). Pass it as `kiln.metrics.{type(metric).__name__}(ignore_index="
                f"{loss.ignore_index}, name={metric.name!r})` in `metrics=`."
            )


def run_first_batch(
    trainer: Trainer, method: Callable[[Any, int], Any], name: str, batch: Any, batch_idx: int
) -> StepOutput:
    """Run a step method on a pass's first batch: explain a model error, check the output."""
    try:
        output = to_step_output(method(batch, batch_idx), batch, name)
    except (RuntimeError, TypeError) as error:
        explained = explain_first_error(error, trainer.model, batch)
        if explained is error:
            raise
        raise explained from error
    if output.loss is None and trainer.state.stage == "train" and trainer.loss is None:
        check_returned_loss(output, batch, trainer.defines("training_step"))
    check_first_output(trainer, output, name)
    return output


def check_returned_loss(output: StepOutput, batch: Any, has_step_method: bool) -> None:
    """Raise a clear `ValueError` when a trainer with no loss got none from its model either.

    A model that computes its own loss (a Hugging Face model) does so only when the batch holds
    its `labels`; the error says what the model returned and what the batch held.
    """
    if has_step_method:
        return
    returned = output.output
    kind = type(returned).__name__
    if isinstance(returned, Mapping):
        fields = ", ".join(str(key) for key in returned)
        what = f"{kind} ({fields or 'empty'})"
    else:
        what = describe(returned) if isinstance(returned, Tensor) else kind
    keys = (
        f"the batch is a dict of {', '.join(repr(key) for key in batch)}"
        if isinstance(batch, Mapping)
        else "the batch is not a dict of keyword inputs"
    )
    raise ValueError(
        f"The trainer has no loss, and the model returned {what} with no `loss`, so there is "
        f"nothing to minimize; {keys}. A Hugging Face model computes its loss only when the "
        "batch holds `labels`. Fix: put `labels` in every batch (for a causal language model, "
        "the input ids with padding as -100, as `DataCollatorForLanguageModeling(tokenizer, "
        "mlm=False)` makes them; for classification, each sample's class), or pass `loss=` "
        "with batches `(x, y)`, or define `training_step(batch, batch_idx)` on the model."
    )


def run_first_prediction(trainer: Trainer, batch: Any) -> Any:
    """Run `predict_step` on the first batch of `predict`, explaining what goes wrong.

    The same explanations as `fit` and `evaluate` give: inputs of the wrong shape or dtype for
    the model, a batch the model cannot be called with.
    """
    try:
        return trainer.predict_step(batch, 0)
    except (RuntimeError, TypeError) as error:
        explained = explain_first_error(error, trainer.model, batch)
        if explained is error:
            raise
        raise explained from error


def check_first_output(trainer: Trainer, output: StepOutput, method: str) -> None:
    """Check the output of a pass's first batch, before any optimizer step is taken.

    In the training pass the validation data and the callbacks' monitored values are checked
    too, since validation runs only after the first epoch's training pass.
    """
    state, metrics, loss = trainer.state, trainer.metrics, trainer.loss
    check_ignored_labels(loss, metrics)
    if state.stage != "train":
        check_metric_inputs(output, bool(metrics), method)
        check_all_labels(loss, output, state.data)
        return
    check_training_output(output, bool(metrics), method)
    validates = state.val_data is not None
    callbacks = list(trainer.callbacks)
    keys = logged_keys(output, [metric.name for metric in metrics], validates)
    for callback in callbacks:  # values callbacks add to the logs (EMA's val_ema_loss, ...)
        added = getattr(callback, "added_logs", None)
        if callable(added):
            keys |= added(keys)
    if validates and trainer.defines("validation_step"):
        # Its values are known only once it runs: leave validation monitors unchecked.
        monitors = (getattr(callback, "monitor", None) for callback in callbacks)
        keys.update(m for m in monitors if isinstance(m, str) and m.startswith("val_"))
    check_monitors(callbacks, keys, validates)
    for data in (state.data, state.val_data):
        check_all_labels(loss, output, data)


def returns_own_loss(model: nn.Module | None) -> bool:
    """Tell whether `model` may compute its own loss: its `forward` takes `labels`.

    Hugging Face models do (they return a `loss` when given `labels`); whether one really
    does is decided on the first batch (`check_returned_loss`).

    Example:
        >>> import torch
        >>> returns_own_loss(torch.nn.Linear(2, 1))
        False
    """
    forward = getattr(model, "forward", None)
    if forward is None:
        return False
    try:
        return "labels" in inspect.signature(forward).parameters
    except (TypeError, ValueError):  # a builtin or C function: no signature to read
        return False


def check_can_train(
    optimizer: Any, loss: LossFunction | None, has_step_method: bool, model: nn.Module | None = None
) -> None:
    """Raise `ValueError` if a trainer lacks what `fit` needs: an optimizer and a loss.

    A trainer with no loss may still train a `model` that computes its own loss (one whose
    `forward` takes `labels`, such as a Hugging Face model); the first batch decides.
    """
    if optimizer is None:
        raise ValueError(
            "This trainer has no optimizer, so it cannot fit. Create it with one, e.g. "
            "`Trainer(model, loss=..., optimizer='adam')`."
        )
    if loss is None and not has_step_method and not returns_own_loss(model):
        raise ValueError(
            "The trainer has no loss and the model defines no `training_step`, so there is "
            "nothing to minimize. Pass `loss=` (such as 'cross_entropy' or 'mse'), or define "
            "`training_step(batch, batch_idx)` on the model."
        )
