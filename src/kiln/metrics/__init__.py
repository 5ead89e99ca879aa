"""Metrics: objects that accumulate a value over batches, and the names that build them.

What lives here: the `Metric` protocol (`reset`, `update`, `compute`), accuracy (binary,
multiclass, top-k), MSE, RMSE and MAE, and `resolve_metrics`. Epoch values are exact
sample-weighted results, accumulated on the device without a host sync per step.
"""

from kiln.metrics.base import FunctionMetric, Metric
from kiln.metrics.classification import Accuracy
from kiln.metrics.names import METRIC_NAMES, resolve_metrics
from kiln.metrics.regression import MeanAbsoluteError, MeanSquaredError, RootMeanSquaredError

__all__ = [
    "METRIC_NAMES",
    "Accuracy",
    "FunctionMetric",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "Metric",
    "RootMeanSquaredError",
    "resolve_metrics",
]
