"""Metrics of table predictions in the original label space, their table, and writing CSV.

What lives here: per-target metrics with NumPy (regression: RMSE, MAE, R²; binary: accuracy,
log loss, ROC AUC; multiclass: accuracy, log loss), the text table `kiln fit` and
`kiln evaluate` print, and `write_csv` for `kiln predict`. What does not: metrics during training
(`kiln.metrics`), which work on the network's encoded outputs.

Example:
    >>> import numpy as np
    >>> regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))["mae"]
    0.6666666666666666
"""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from kiln.tables.spec import TableSpec, regression_values

_EPSILON = 1e-15  # probabilities are clipped to [eps, 1 - eps] in the log loss


def regression_metrics(target: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Return the RMSE, MAE and R² (1 - squared error / variance) of `predicted`.

    Example:
        >>> import numpy as np
        >>> regression_metrics(np.array([0.0, 2.0]), np.array([0.0, 2.0]))
        {'rmse': 0.0, 'mae': 0.0, 'r2': 1.0}
    """
    error = predicted - target
    variance = float(np.mean((target - target.mean()) ** 2))
    mse = float(np.mean(error**2))
    r2 = 1.0 - mse / variance if variance > 0 else float("nan")
    return {"rmse": float(np.sqrt(mse)), "mae": float(np.mean(np.abs(error))), "r2": r2}


def classification_metrics(target: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Return the accuracy, log loss and (for two classes) ROC AUC of class probabilities.

    Args:
        target: Class indices, `(rows,)`.
        probabilities: `(rows, classes)`.

    Example:
        >>> import numpy as np
        >>> p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
        >>> classification_metrics(np.array([0, 1, 1]), p)["accuracy"]
        0.6666666666666666
    """
    target = target.astype(np.int64)
    chosen = probabilities[np.arange(len(target)), target]
    values = {
        "accuracy": float(np.mean(probabilities.argmax(axis=1) == target)),
        "log_loss": float(-np.mean(np.log(np.clip(chosen, _EPSILON, 1 - _EPSILON)))),
    }
    if probabilities.shape[1] == 2:
        values["auc"] = roc_auc(target, probabilities[:, 1])
    return values


def roc_auc(target: np.ndarray, score: np.ndarray) -> float:
    """Return the area under the ROC curve: the chance a positive outranks a negative.

    Ties count one half (average ranks). NaN when one class is absent.

    Example:
        >>> import numpy as np
        >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
        0.75
    """
    positive = target == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    distinct, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1  # 1-based rank of each distinct score
    average_rank = first_rank + (counts - 1) / 2
    ranks = average_rank[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def target_metrics(
    spec: TableSpec, targets: np.ndarray, outputs: np.ndarray
) -> dict[str, dict[str, float]]:
    """Return metrics per target, in the original label space, over rows where it is present.

    Args:
        spec: The columns.
        targets: Encoded targets, `(rows, targets)`, NaN where missing.
        outputs: Post-processed outputs (see `TableSpec.decode`).
    """
    metrics: dict[str, dict[str, float]] = {}
    start = 0
    for j, (column, (kind, width)) in enumerate(zip(spec.targets, spec.output_layout, strict=True)):
        block = outputs[:, start : start + width].astype(np.float64)
        start += width
        present = ~np.isnan(targets[:, j])
        target, block = targets[present, j].astype(np.float64), block[present]
        if not present.any():
            continue
        if kind == "regression":
            truth = target * column["std"] + column["mean"]
            predicted = regression_values(column, block[:, 0])
            metrics[column["name"]] = regression_metrics(truth, predicted)
            continue
        if kind == "binary":
            block = np.stack([1.0 - block[:, 0], block[:, 0]], axis=1)
        metrics[column["name"]] = classification_metrics(target, block)
    return metrics


def format_metrics(parts: dict[str, dict[str, dict[str, float]]]) -> str:
    """Return a text table: a row per target and data part, a column per metric.

    Args:
        parts: `{part: {target: {metric: value}}}`, such as `{"train": ..., "val": ...}`.

    Example:
        >>> print(format_metrics({"val": {"y": {"rmse": 1.5, "r2": 0.25}}}))
        target  data  rmse    r2
        y       val   1.5000  0.2500
    """
    names: list[str] = []
    for per_target in parts.values():
        for values in per_target.values():
            names += [name for name in values if name not in names]
    rows = [["target", "data", *names]]
    for part, per_target in parts.items():
        for target, values in per_target.items():
            shown = [f"{values[n]:.4f}" if n in values else "" for n in names]
            rows.append([target, part, *shown])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def write_csv(columns: dict[str, np.ndarray], path: str | os.PathLike[str] | None) -> None:
    """Write equal-length columns as CSV to `path`, or to standard output for `None` or `"-"`.

    Numbers are written in their shortest exact form, missing labels as empty cells.

    Example:
        >>> import numpy as np
        >>> write_csv({"y": np.array([0.5, 2.0]), "c": np.array(["a", None], dtype=object)}, "-")
        y,c
        0.5,a
        2.0,
    """
    texts = [_as_text(values) for values in columns.values()]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(columns))
    writer.writerows(zip(*texts, strict=True))
    if path is None or str(path) == "-":
        sys.stdout.write(buffer.getvalue())
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(buffer.getvalue(), encoding="utf-8")


def _as_text(values: np.ndarray) -> list[Any]:
    if values.dtype == object:
        return ["" if v is None else str(v) for v in values]
    return [str(v) for v in values.astype(np.float64).tolist()]
