"""Metric names, and `resolve_metrics`, which reads the trainer's `metrics=` argument."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from kiln.metrics.base import FunctionMetric, Metric
from kiln.metrics.classification import Accuracy
from kiln.metrics.regression import MeanAbsoluteError, MeanSquaredError, RootMeanSquaredError

METRIC_NAMES: dict[str, Callable[[str], Metric]] = {
    "accuracy": lambda name: Accuracy(name=name),
    "acc": lambda name: Accuracy(name=name),
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "rmse": RootMeanSquaredError,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
}
_TOP_K = re.compile(r"^top_?(\d+)(_acc(uracy)?)?$")


def _from_name(name: str, logits: bool) -> Metric:
    key = name.strip().lower()
    top_k = _TOP_K.match(key)
    if top_k:
        return Accuracy(top_k=int(top_k.group(1)), name=name)
    if key not in METRIC_NAMES:
        known = ", ".join([*METRIC_NAMES, "top2", "top3", "..."])
        raise ValueError(
            f"Unknown metric {name!r}. Known names: {known}. You can also pass a Metric object, "
            "a function `fn(output, target)` returning a batch mean, or a dict {name: metric}."
        )
    metric = METRIC_NAMES[key](name)
    if logits and isinstance(metric, Accuracy):
        metric.threshold = 0.0
    return metric


def _is_metric_object(spec: Any) -> bool:
    return all(callable(getattr(spec, m, None)) for m in ("update", "compute", "reset"))


def _resolve_one(spec: Any, name: str | None, logits: bool) -> Any:
    if isinstance(spec, str):
        metric = _from_name(spec, logits)
        if name is not None:
            metric.name = name
        return metric
    if _is_metric_object(spec):
        if name is not None:
            spec.name = name
        elif not isinstance(getattr(spec, "name", None), str):
            spec.name = _snake_case(type(spec).__name__)
        return spec
    if callable(spec):
        return FunctionMetric(spec, name)
    raise TypeError(
        "Each metric must be a name, a Metric object or a function `fn(output, target)`; "
        f"received {type(spec).__name__}."
    )


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def resolve_metrics(metrics: Any, logits: bool = False) -> list[Any]:
    """Return the metric objects that a `metrics=` argument describes.

    Args:
        metrics: `None`, a name, or a list of names, `Metric` objects (any object with
            `reset`, `update` and `compute`, such as a torchmetrics metric) and functions
            `fn(output, target)`; or a dict `{logged_name: metric}`.
        logits: Whether one-column outputs are logits (then named accuracies threshold at 0).

    Raises:
        ValueError: For an unknown name or two metrics logged under the same name.
        TypeError: For an entry of no accepted kind.

    Example:
        >>> [m.name for m in resolve_metrics(["acc", "top3"])]
        ['acc', 'top3']
    """
    if metrics is None:
        return []
    if isinstance(metrics, Mapping):
        resolved = [_resolve_one(spec, str(name), logits) for name, spec in metrics.items()]
    elif isinstance(metrics, (str, Metric)) or callable(metrics) or _is_metric_object(metrics):
        resolved = [_resolve_one(metrics, None, logits)]
    else:
        resolved = [_resolve_one(spec, None, logits) for spec in metrics]
    names = [metric.name for metric in resolved]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates or "loss" in names:
        clash = duplicates or ["loss"]
        raise ValueError(
            f"Two values would be logged under the same name: {', '.join(clash)}. Give metrics "
            "distinct names with a dict, e.g. metrics={'acc1': 'accuracy', 'acc5': 'top5'}."
        )
    return resolved
