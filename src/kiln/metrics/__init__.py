"""Metrics: objects that accumulate a value over batches, and the names that build them.

What lives here: the `Metric` protocol (`reset`, `update`, `compute`, plus `state_dict` for
mid-pass resume and `sync` for several processes); accuracy (binary, multiclass, multilabel,
top-k); precision, recall and F-scores (macro, micro, binary) and the confusion matrix, from
counts over the whole pass; AUROC, ranked on the whole pass; MSE, RMSE, MAE and R2;
torchmetrics metrics through `TorchMetric`; and `resolve_metrics`, which reads names.
Epoch values are exact over the pass (not means of batch values), accumulated on the device
without a host sync per batch.
"""

from kiln.metrics.auroc import AUROC
from kiln.metrics.base import FunctionMetric, Metric
from kiln.metrics.classification import Accuracy
from kiln.metrics.confusion import ConfusionCounts, ConfusionMatrix
from kiln.metrics.external import TorchMetric
from kiln.metrics.fscore import F1, FBeta, Precision, Recall
from kiln.metrics.names import METRIC_NAMES, metric_spec, resolve_metrics
from kiln.metrics.regression import (
    MeanAbsoluteError,
    MeanSquaredError,
    R2Score,
    RootMeanSquaredError,
)

__all__ = [
    "AUROC",
    "F1",
    "METRIC_NAMES",
    "Accuracy",
    "ConfusionCounts",
    "ConfusionMatrix",
    "FBeta",
    "FunctionMetric",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "Metric",
    "Precision",
    "R2Score",
    "Recall",
    "RootMeanSquaredError",
    "TorchMetric",
    "metric_spec",
    "resolve_metrics",
]
