"""A trainer's loss, optimizer and metrics, recorded as plain data and built again from it.

What lives here: `describe_loss`, `describe_optimizer` and `describe_metrics`, which write what
`trainer.save` can record by name (a loss or metric name, a torch loss class with its options, an
optimizer class with its parameter groups), and `rebuild_components`, which turns such records
back into `Trainer` arguments, or says which of them `kiln.load` must be given instead. What
does not: the model (`recipe.py`) and files (`trainer_file.py`).

Anything that is not recorded by name (a loss function, a metric object of one's own) leaves
a record with a `"problem"`, and `kiln.load` then needs that argument passed explicitly.
"""

from __future__ import annotations

import errno
import functools
import inspect
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from kiln.checkpoint.files import CheckpointError
from kiln.losses import LOSS_NAMES, LossFunction
from kiln.metrics import metric_spec
from kiln.optim.lookahead import Lookahead
from kiln.saving.recipe import find_class, import_path

#: Constructor arguments of torch losses that are deprecated aliases of `reduction`.
_DEPRECATED_LOSS_ARGUMENTS = ("size_average", "reduce")


def describe_loss(loss: LossFunction | None) -> dict[str, Any]:
    """Record a trainer's loss: by name, as a torch loss class with its options, or not at all.

    Example:
        >>> from kiln.losses import resolve_loss
        >>> describe_loss(resolve_loss("CrossEntropyLoss"))
        {'kind': 'name', 'name': 'cross_entropy'}
    """
    if loss is None:
        return {"kind": "none"}
    named = LOSS_NAMES.get(loss.name)
    if named is not None and loss.fn is named[0]:
        return {"kind": "name", "name": loss.name}
    fn = loss.fn
    if isinstance(fn, nn.modules.loss._Loss) and import_path(type(fn)) == (
        f"torch.nn:{type(fn).__name__}"
    ):
        arguments = _loss_arguments(fn)
        if arguments is not None:
            return {"kind": "torch", "class": type(fn).__name__, "arguments": arguments}
    return {"kind": "custom", "problem": f"the loss {loss.name} is not recorded by name"}


def _loss_arguments(fn: nn.Module) -> dict[str, Any] | None:
    """Read a torch loss's constructor arguments back from its attributes (class weights too)."""
    arguments: dict[str, Any] = {}
    for name in inspect.signature(type(fn)).parameters:
        if name in _DEPRECATED_LOSS_ARGUMENTS:
            continue
        value = getattr(fn, name, inspect.Parameter.empty)
        if isinstance(value, torch.Tensor):
            arguments[name] = value.detach().cpu().clone()
        elif type(value) in (type(None), bool, int, float, str):
            arguments[name] = value
        else:  # an option kept under another name, or a callable: cannot be recorded
            return None
    return arguments


def describe_optimizer(optimizer: torch.optim.Optimizer | None, model: nn.Module) -> dict[str, Any]:
    """Record an optimizer's class, its defaults and which parameters each group holds, by name.

    The hyperparameters and the state of each group travel in the optimizer's `state_dict`.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 1)
        >>> record = describe_optimizer(torch.optim.SGD(net.parameters(), lr=0.1), net)
        >>> record["target"], record["groups"], record["defaults"]["lr"]
        ('torch.optim:SGD', [['weight', 'bias']], 0.1)
    """
    if optimizer is None:
        return {"kind": "none"}
    if isinstance(optimizer, Lookahead):  # the inner optimizer, and how it is wrapped
        inner = describe_optimizer(optimizer.optimizer, model)
        wrapping = {"k": optimizer.k, "alpha": optimizer.alpha}
        return {**inner, "lookahead": wrapping} if inner["kind"] == "class" else inner
    target = import_path(type(optimizer))
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    groups = [[names.get(id(p)) for p in group["params"]] for group in optimizer.param_groups]
    takes_params = next(iter(inspect.signature(type(optimizer)).parameters), None) == "params"
    if not takes_params or target is None or any(None in group for group in groups):
        return {
            "kind": "custom",
            "problem": f"the optimizer {type(optimizer).__name__} is not recorded by name (its "
            "class cannot be imported by name or built from parameter groups, or it updates "
            "parameters outside the model)",
        }
    defaults = {
        key: value
        for key, value in optimizer.defaults.items()
        if isinstance(value, torch.Tensor)
        or type(value) in (type(None), bool, int, float, str)
        or (type(value) is tuple and all(type(item) in (int, float) for item in value))
    }
    return {"kind": "class", "target": target, "groups": groups, "defaults": defaults}


def metric_flags(loss: LossFunction | None) -> dict[str, bool]:
    """How metrics given by name read the outputs, from the trainer's loss.

    A loss on logits (`bce_with_logits`, ...) means one-column outputs are logits; a binary
    cross-entropy means several columns are independent labels (multilabel).

    Example:
        >>> from kiln.losses import resolve_loss
        >>> metric_flags(resolve_loss("bce_with_logits"))
        {'logits': True, 'multilabel': True}
    """
    name = "" if loss is None else loss.name.lower()
    return {"logits": "logits" in name, "multilabel": name in ("bce", "bce_with_logits")}


def describe_metrics(
    metrics: Iterable[Any], logits: bool, multilabel: bool = False
) -> list[dict[str, Any]]:
    """Record each metric by the name that builds it again, or with a problem.

    Args:
        metrics: The trainer's metric objects.
        logits: Whether the trainer treats one-column outputs as logits (its loss's name).
        multilabel: Whether several output columns are independent labels.

    Example:
        >>> from kiln.metrics import resolve_metrics
        >>> describe_metrics(resolve_metrics({"acc5": "top5"}), logits=False)
        [{'name': 'acc5', 'spec': 'top5'}]
    """
    records = []
    for metric in metrics:
        spec = metric_spec(metric, logits, multilabel)
        if spec is None:
            records.append({"name": str(metric.name), "problem": f"the metric {metric.name}"})
        else:
            records.append({"name": str(metric.name), "spec": spec})
    return records


def _str_keys(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(key, str) for key in value)


def _names(groups: Any) -> bool:
    return isinstance(groups, list) and all(
        isinstance(group, list) and all(isinstance(name, str) for name in group) for group in groups
    )


def _wrapping(record: dict[str, Any]) -> bool:
    wrapping = record.get("lookahead")
    return wrapping is None or (
        isinstance(wrapping, dict)
        and all(type(wrapping.get(key)) in (int, float) for key in ("k", "alpha"))
    )


#: What each kind of record holds, as `describe_loss` and `describe_optimizer` write it.
_RECORD_CHECKS: dict[str, Any] = {
    "none": lambda record: True,
    "name": lambda record: isinstance(record.get("name"), str),
    "torch": lambda record: (
        isinstance(record.get("class"), str) and _str_keys(record.get("arguments"))
    ),
    "class": lambda record: (
        isinstance(record.get("target"), str)
        and _names(record.get("groups"))
        and _str_keys(record.get("defaults"))
        and _wrapping(record)
    ),
    "custom": lambda record: isinstance(record.get("problem"), str),
}


def check_records(records: Any, source: str) -> dict[str, Any]:
    """Return the loss, optimizer and metrics records read from `source`, once checked.

    Raises:
        CheckpointError: If they do not have the shape the `describe_*` functions write (a
            damaged file, or one not written by kiln).
    """
    loss, optimizer, metrics = (records.get(key) for key in ("loss", "optimizer", "metrics"))

    def valid(record: Any, kinds: tuple[str, ...]) -> bool:
        kind = record.get("kind") if isinstance(record, dict) else None
        return kind in kinds and bool(_RECORD_CHECKS[kind](record))

    entries_valid = isinstance(metrics, list) and all(
        isinstance(entry, dict)
        and isinstance(entry.get("name"), str)
        and isinstance(entry.get("spec", entry.get("problem")), str)
        for entry in metrics
    )
    if not (
        valid(loss, ("none", "name", "torch", "custom"))
        and valid(optimizer, ("none", "class", "custom"))
        and entries_valid
    ):
        raise CheckpointError(
            errno.EINVAL,
            f"The loss, optimizer or metrics recorded in {source} are damaged or were not "
            f"written by kiln (received {records!r:.300}). Pass them: kiln.load(path, loss=..., "
            "optimizer=..., metrics=...).",
        )
    return {"loss": loss, "optimizer": optimizer, "metrics": metrics}


def rebuild_components(
    records: dict[str, Any],
    model: nn.Module,
    given: dict[str, Any],
    source: str,
    classes: tuple[type, ...] = (),
) -> dict[str, Any]:
    """Return the `loss`, `optimizer` and `metrics` arguments of the trainer that `load` builds.

    Each one given (not `None`) wins over its record, which is then not even looked at. A
    recorded optimizer comes back as a callable that builds it over the model's parameters,
    once the trainer has moved them; its class is found as the model's is (`find_class`:
    imported already, or in `classes`; a file never causes an import).

    Args:
        records: The saved `"loss"`, `"optimizer"` and `"metrics"` records.
        model: The rebuilt model.
        given: The `loss`, `optimizer` and `metrics` passed to `kiln.load`.
        source: The file, for messages.
        classes: Classes the caller allows the file to name (`kiln.load(..., classes=...)`).

    Raises:
        ValueError: If something was not recorded by name and not given: the message lists
            every argument to pass.
    """
    result = dict(given)
    missing = []
    if given["loss"] is None:
        result["loss"], problem = _loss_from(records["loss"], source)
        missing += [f"loss=... ({problem})"] if problem else []
    if given["optimizer"] is None:
        result["optimizer"], problem = _optimizer_from(records["optimizer"], model, source, classes)
        missing += [f"optimizer=... ({problem})"] if problem else []
    if given["metrics"] is None:
        entries = records["metrics"]
        unnamed = [entry["name"] for entry in entries if "spec" not in entry]
        if unnamed:
            missing.append(f"metrics=[...] (not recorded by name: {', '.join(unnamed)})")
        named = {entry["name"]: entry["spec"] for entry in entries if "spec" in entry}
        result["metrics"] = named or None
    if missing:
        raise ValueError(
            f"{source} was saved from a trainer whose parts could not all be recorded by name, "
            f"so they must be given again: pass kiln.load(path, {', '.join(missing)})."
        )
    return result


def _loss_from(record: dict[str, Any], source: str) -> tuple[Any, str | None]:
    if record["kind"] == "none":
        return None, None
    if record["kind"] == "name":
        return str(record["name"]), None
    if record["kind"] == "torch":
        target, instead = f"torch.nn:{record['class']}", "kiln.load(path, loss=...)"
        cls = find_class(target, nn.modules.loss._Loss, source, instead)
        return cls(**record["arguments"]), None
    return None, str(record["problem"])


def _optimizer_from(
    record: dict[str, Any], model: nn.Module, source: str, classes: tuple[type, ...]
) -> tuple[Any, str | None]:
    if record["kind"] == "none":
        return None, None
    if record["kind"] != "class":
        return None, str(record["problem"])
    instead = "kiln.load(path, optimizer=...)"
    cls = find_class(record["target"], torch.optim.Optimizer, source, instead, classes)
    build = functools.partial(_build_optimizer, cls, record, model, source)
    wrapping = record.get("lookahead")
    if isinstance(wrapping, dict):
        k, alpha = int(wrapping["k"]), float(wrapping["alpha"])
        return lambda _trainable=None: Lookahead(build(), k=k, alpha=alpha), None
    return build, None


def _build_optimizer(
    cls: type[torch.optim.Optimizer],
    record: dict[str, Any],
    model: nn.Module,
    source: str,
    _trainable: Any = None,
) -> torch.optim.Optimizer:
    """Build the recorded optimizer over the model's parameters, grouped as when it was saved."""
    parameters = dict(model.named_parameters())
    unknown = sorted({name for group in record["groups"] for name in group} - set(parameters))
    if unknown:
        raise ValueError(
            f"The optimizer in {source} updates parameters the model does not have "
            f"({', '.join(unknown[:10])}). Build the model as it was when saved, or pass "
            "kiln.load(path, optimizer=...)."
        )
    accepted = inspect.signature(cls).parameters
    # Only arguments this torch version's constructor takes; the saved state_dict then restores
    # every group's hyperparameters exactly.
    options = {key: value for key, value in record["defaults"].items() if key in accepted}
    groups = [{"params": [parameters[name] for name in group]} for group in record["groups"]]
    try:
        return cls(groups, **options)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"The optimizer {cls.__name__} recorded in {source} cannot be built again from its "
            f"parameter groups ({error}). Pass one: kiln.load(path, optimizer=...)."
        ) from error
