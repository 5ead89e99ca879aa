"""First-batch diagnostics: inputs that do not fit, bad step outputs, unlogged monitors.

What lives here: checks that run once per `fit` (or once per pass), never per step, and the
messages that say what was received, what was expected and how to fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from kiln.data.batch import split_batch
from kiln.data.in_memory import Data
from kiln.loop.batch_step import StepOutput, to_step_output
from kiln.losses import LossFunction
from kiln.losses.checks import CLASSES, check_label_range

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


def _shapes(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return f"{tuple(obj.shape)} {str(obj.dtype).removeprefix('torch.')}"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{k!r}: {_shapes(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "(" + ", ".join(_shapes(v) for v in obj) + ")"
    return type(obj).__name__


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
            f"{_shapes(inputs)}. Fix: give the data the model's dtype, usually float32 "
            "(`x.float()`), or move the model to the data's dtype (`model.double()`)."
        )
    if not any(fragment in message for fragment in _SHAPE_ERRORS):
        return error
    layer = first_layer(model)
    expected = f" Its first layer, {layer[0]}, expects inputs of shape {layer[1]}." if layer else ""
    return ValueError(
        f"The model could not run on the first batch: {message}. The inputs have shape "
        f"{_shapes(inputs)}.{expected} Fix: make the data's features match the model's first "
        "layer (or the layer to the data), or reshape the inputs."
    )


def check_training_output(output: StepOutput, has_metrics: bool, method: str) -> None:
    """Raise a clear error if the first training step's output cannot be trained on."""
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
    """Raise a clear error if metrics are asked for but the step gives them nothing to use."""
    if has_metrics and (output.output is None or output.target is None):
        raise ValueError(
            f"The trainer has metrics, but `{method}` gives them no output and target. Return "
            "them in its dict: {'loss': loss, 'output': y_pred, 'target': y}; or log your own "
            "values from the step and drop `metrics=`."
        )


def logged_keys(output: StepOutput, metric_names: Iterable[str], validates: bool) -> set[str]:
    """Return the names an epoch will log, given the first training step's output."""
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
    """Check every class label of in-memory data at once, not only the first batch's."""
    if not isinstance(data, Data) or loss is None or loss.kind != CLASSES:
        return
    target, result = data.tensors[-1], output.output
    if len(data.tensors) > 1 and not target.is_floating_point() and isinstance(result, Tensor):
        check_label_range(loss.name, target, result.shape[1])


def run_first_step(
    trainer: Trainer, step: Callable[[Any, int], Any], name: str, batch: Any, batch_idx: int
) -> StepOutput:
    """Run a pass's first step: explain a model error, then check what the step returned."""
    try:
        output = to_step_output(step(batch, batch_idx), batch, name)
    except RuntimeError as error:
        explained = explain_model_error(error, trainer.model, batch)
        if explained is error:
            raise
        raise explained from error
    check_first_output(trainer, output, name)
    return output


def check_first_output(trainer: Trainer, output: StepOutput, method: str) -> None:
    """Check the first step of a pass, before any optimizer step is taken.

    In the training pass the validation data and the callbacks' monitored values are checked
    too, since validation runs only after the first epoch's steps.
    """
    state, metrics, loss = trainer.state, trainer.metrics, trainer.loss
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


def check_can_train(optimizer: Any, loss: LossFunction | None, defines_step: bool) -> None:
    """Raise `ValueError` if a trainer lacks what `fit` needs: an optimizer and a loss."""
    if optimizer is None:
        raise ValueError(
            "This trainer has no optimizer, so it cannot fit. Create it with one, e.g. "
            "`Trainer(model, loss=..., optimizer='adam')`."
        )
    if loss is None and not defines_step:
        raise ValueError(
            "The trainer has no loss and the model defines no `training_step`, so there is "
            "nothing to minimize. Pass `loss=` (such as 'cross_entropy' or 'mse'), or define "
            "`training_step(batch, batch_idx)` on the model."
        )
