"""Metric names, and `resolve_metrics`, which reads the trainer's `metrics=` argument.

What lives here: the table of names (`acc`, `top1`..`top100`, `f1` and `fscore_macro`, `bin_f1`,
`precision`, `recall`, ...), `resolve_metrics`, and `metric_spec`, which finds the name that
builds a metric again (for `trainer.save`). What does not: the metrics themselves.

Names are matched without regard to case, spaces, hyphens or underscores (`F1-Score` is
`f1_score`); a metric is logged under the name as the user wrote it.

Compatibility: Poutyne's metric names build the same metrics.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from kiln.metrics.auroc import AUROC
from kiln.metrics.base import FunctionMetric, Metric
from kiln.metrics.classification import Accuracy
from kiln.metrics.confusion import ConfusionMatrix
from kiln.metrics.external import TorchMetric, is_torchmetrics, snake_case
from kiln.metrics.fscore import F1, Precision, Recall
from kiln.metrics.regression import (
    MeanAbsoluteError,
    MeanSquaredError,
    R2Score,
    RootMeanSquaredError,
)


def _scores(cls: type, average: str) -> Callable[[str], Metric]:
    return lambda name: cls(average=average, name=name)


METRIC_NAMES: dict[str, Callable[[str], Metric]] = {
    "accuracy": lambda name: Accuracy(name=name),
    "acc": lambda name: Accuracy(name=name),
    "binary_accuracy": lambda name: Accuracy(task="binary", name=name),
    "bin_acc": lambda name: Accuracy(task="binary", name=name),
    "f1": _scores(F1, "macro"),
    "f1_score": _scores(F1, "macro"),
    "fscore_macro": _scores(F1, "macro"),
    "f1_macro": _scores(F1, "macro"),
    "fscore_micro": _scores(F1, "micro"),
    "f1_micro": _scores(F1, "micro"),
    "bin_f1": _scores(F1, "binary"),
    "binary_f1": _scores(F1, "binary"),
    "bin_fscore": _scores(F1, "binary"),
    "precision": _scores(Precision, "macro"),
    "precision_macro": _scores(Precision, "macro"),
    "precision_micro": _scores(Precision, "micro"),
    "bin_precision": _scores(Precision, "binary"),
    "binary_precision": _scores(Precision, "binary"),
    "recall": _scores(Recall, "macro"),
    "recall_macro": _scores(Recall, "macro"),
    "recall_micro": _scores(Recall, "micro"),
    "bin_recall": _scores(Recall, "binary"),
    "binary_recall": _scores(Recall, "binary"),
    "auroc": lambda name: AUROC(name=name),
    "roc_auc": lambda name: AUROC(name=name),
    "roc_auc_score": lambda name: AUROC(name=name),
    "confusion_matrix": lambda name: ConfusionMatrix(name=name),
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "rmse": RootMeanSquaredError,
    "root_mean_squared_error": RootMeanSquaredError,
    "mae": MeanAbsoluteError,
    "mean_absolute_error": MeanAbsoluteError,
    "r2": R2Score,
    "r2_score": R2Score,
}
_TOP_K = re.compile(r"^top(\d+)(acc(uracy)?)?$")


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name.lower())


_BY_KEY = {_key(name): factory for name, factory in METRIC_NAMES.items()}


def _from_name(name: str, logits: bool, multilabel: bool) -> Metric:
    key = _key(name)
    top_k = _TOP_K.match(key)
    if top_k:
        return Accuracy(top_k=int(top_k.group(1)), name=name)
    if key not in _BY_KEY:
        known = ", ".join([*METRIC_NAMES, "top1", "top2", "..."])
        raise ValueError(
            f"Unknown metric {name!r}. Known names: {known}. You can also pass a Metric object, "
            "a torchmetrics metric, a function `fn(output, target)` returning a batch mean, "
            "or a dict {name: metric}."
        )
    metric = _BY_KEY[key](name)
    if logits and hasattr(metric, "threshold"):
        metric.threshold = 0.0
    if multilabel and hasattr(metric, "task") and metric.task is None:
        metric.task = "multilabel"
    return metric


def _is_metric_object(spec: Any) -> bool:
    return all(callable(getattr(spec, m, None)) for m in ("update", "compute", "reset"))


def _resolve_one(spec: Any, name: str | None, logits: bool, multilabel: bool) -> Any:
    if isinstance(spec, str):
        metric = _from_name(spec, logits, multilabel)
        if name is not None:
            metric.name = name
        return metric
    if is_torchmetrics(spec):
        return TorchMetric(spec, name)
    if _is_metric_object(spec):
        if name is not None:
            spec.name = name
        elif not isinstance(getattr(spec, "name", None), str):
            spec.name = snake_case(type(spec).__name__)
        return spec
    if callable(spec):
        return FunctionMetric(spec, name)
    raise TypeError(
        "Each metric must be a name, a Metric object or a function `fn(output, target)`; "
        f"received {type(spec).__name__}."
    )


def resolve_metrics(metrics: Any, logits: bool = False, multilabel: bool = False) -> list[Any]:
    """Return the metric objects that a `metrics=` argument describes.

    Args:
        metrics: `None`, a name, or a list of names, `Metric` objects (any object with
            `reset`, `update` and `compute`; a torchmetrics metric is wrapped in
            `TorchMetric`) and functions `fn(output, target)`; or a dict `{logged_name: metric}`.
        logits: Whether outputs are logits: named metrics then threshold one-column (and
            multilabel) outputs at 0 instead of 0.5.
        multilabel: Whether several output columns with targets of their shape are labels
            (a binary loss), not one-hot classes: named classification metrics then read them
            as multilabel. One output column stays binary either way.

    Raises:
        ValueError: For an unknown name or two metrics logged under the same name.
        TypeError: For an entry of no accepted kind.

    Example:
        >>> [m.name for m in resolve_metrics(["acc", "top3", "f1"])]
        ['acc', 'top3', 'f1']
    """
    if metrics is None:
        return []
    if isinstance(metrics, Mapping):
        resolved = [
            _resolve_one(spec, str(name), logits, multilabel) for name, spec in metrics.items()
        ]
    elif isinstance(metrics, (str, Metric)) or callable(metrics) or _is_metric_object(metrics):
        resolved = [_resolve_one(metrics, None, logits, multilabel)]
    else:
        resolved = [_resolve_one(spec, None, logits, multilabel) for spec in metrics]
    names = [metric.name for metric in resolved]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates or "loss" in names:
        clash = duplicates or ["loss"]
        raise ValueError(
            f"Two values would be logged under the same name: {', '.join(clash)}. Give metrics "
            "distinct names with a dict, e.g. metrics={'acc1': 'accuracy', 'acc5': 'top5'}."
        )
    return resolved


def _options(metric: Any) -> dict[str, Any]:
    """A metric's public settings: what two metrics built alike share."""
    return {
        key: value
        for key, value in vars(metric).items()
        if not key.startswith("_") and key not in ("name", "value")
    }


def metric_spec(metric: Any, logits: bool = False, multilabel: bool = False) -> str | None:
    """Return a name that builds `metric` again (with the same flags), or `None`.

    `trainer.save` records metrics by such names, so that `kiln.load` needs no code.

    Example:
        >>> metric_spec(F1(average="micro", name="my_f1"))
        'fscore_micro'
        >>> metric_spec(Precision(num_classes=3)) is None  # no name sets `num_classes`
        True
    """
    if not isinstance(metric, Metric) or not isinstance(metric.name, str):
        return None
    candidates = list(METRIC_NAMES)
    if type(metric) is Accuracy and metric.top_k > 1:
        candidates.append(f"top{metric.top_k}")
    for spec in candidates:
        rebuilt = _from_name(spec, logits, multilabel)
        if type(rebuilt) is type(metric) and _options(rebuilt) == _options(metric):
            return spec
    return None
