"""Deciding the kind of each column of a table, and learning what encodes it.

What lives here: the rules (and their thresholds) that make a feature numeric or categorical
and a target regression, binary or multiclass, and the statistics each kind needs, as the plain
dicts `TableSpec` keeps. What does not: encoding values with them (`spec.py`).

Feature kinds and their encoding:

- **numeric** (numbers): centred on the training median, divided by a robust spread (the
  distance between the quartiles, or half the range where the quartiles coincide) and clipped
  smoothly, `x / sqrt(1 + (x / 3) ** 2)`, so that outliers stay within about 3 while the bulk
  of the values keeps its shape (RealMLP's preprocessing). A missing value becomes the median
  (0), and a column that had missing values in training gets a 0/1 missing-indicator input.
- **categorical** (text, or whole numbers with at most `CATEGORICAL_MAX_INTEGERS` distinct
  values): a vocabulary of the training labels, with slot 0 for labels unseen in training and
  for missing values. Up to `ONE_HOT_MAX` slots: one 0/1 input per slot; more: an index into a
  learned embedding of `embedding_dim(slots)` numbers (a one-hot layer that wide would be mostly
  zeros and would give rare labels as many weights as common ones).

Target kinds: **regression** (numbers with more than two distinct values, unless whole numbers
with at most `MULTICLASS_MAX_INTEGERS` of them; standardised for training, unscaled on output
and kept within the range seen in training, as RealMLP does),
**binary** (exactly two distinct values of any kind, mapped to 0 and 1 in `label_order`) and
**multiclass** (text with more than two labels, or few whole numbers: class indices for
cross-entropy). A given kind (the command's `--kind col=categorical`) overrides these rules.

Labels (a vocabulary, a target's classes) are `as_labels` texts in `label_order`: by value
when all are numbers (2 before 10), else as text; encoding looks each label up by its text, so
any saved order works.

Example:
    >>> import numpy as np
    >>> from kiln.tables.read import Table
    >>> table = Table(["n"], {"n": np.array([1.0, 2.0, 2.0, np.nan])}, "memory")
    >>> infer_feature(table, "n", None)
    {'name': 'n', 'kind': 'categorical', 'vocabulary': ['1', '2'], 'encoding': 'onehot', 'dim': 3}
    >>> infer_target(table, "n", None)
    {'name': 'n', 'kind': 'binary', 'labels': ['1', '2']}
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from kiln.tables.read import (
    Table,
    TableError,
    as_labels,
    as_numbers,
    is_missing,
    label_order,
    shown,
)

if TYPE_CHECKING:
    import torch

#: What `smooth_clip` takes and returns: numpy arrays or torch tensors (named for the type
#: checker only: column kinds need no torch).
Clippable = TypeVar("Clippable", np.ndarray, "torch.Tensor")

#: Whole-number features with at most this many distinct values are categorical.
CATEGORICAL_MAX_INTEGERS = 10
#: Whole-number targets with 3 to this many distinct values are multiclass.
MULTICLASS_MAX_INTEGERS = 10
#: Vocabularies with at most this many slots (the unknown slot included) are one-hot encoded.
ONE_HOT_MAX = 16
FEATURE_KINDS = ("numeric", "categorical")
TARGET_KINDS = ("regression", "binary", "multiclass")


def embedding_dim(slots: int) -> int:
    """Return the embedding width for a vocabulary of `slots` slots: about its square root, <= 16.

    Example:
        >>> embedding_dim(17), embedding_dim(100), embedding_dim(10_000)
        (4, 10, 16)
    """
    return min(16, max(2, round(math.sqrt(slots))))


def robust_scaling(values: np.ndarray) -> tuple[float, float]:
    """Return `(center, spread)` of `values`: the median, and the distance between the quartiles.

    Where the quartiles coincide (a column mostly of one value), the spread is half the range;
    for a constant or empty column, 1.

    Example:
        >>> robust_scaling(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
        (3.0, 2.0)
        >>> robust_scaling(np.array([0.0, 0.0, 0.0, 0.0, 8.0]))
        (0.0, 4.0)
    """
    if not len(values):
        return 0.0, 1.0
    low, center, high = np.quantile(values, [0.25, 0.5, 0.75])
    spread = float(high - low)
    if not spread > 0:
        spread = float(values.max() - values.min()) / 2
    return float(center), spread if spread > 0 else 1.0


def smooth_clip(values: Clippable) -> Clippable:
    """Return `values / sqrt(1 + (values / 3) ** 2)`: near the identity around 0, below 3 in size.

    `values` is a numpy array (a table's encoding) or a torch tensor (`RobustScale`).

    Example:
        >>> smooth_clip(np.array([0.0, 1.0, 30.0])).round(3).tolist()
        [0.0, 0.949, 2.985]
    """
    return values / (1 + (values / 3) ** 2) ** 0.5


def numbers_of(table: Table, name: str) -> np.ndarray:
    """Return column `name` as numbers, or raise a `TableError` if it holds text.

    Example:
        >>> import numpy as np
        >>> numbers_of(Table(["c"], {"c": np.array(["a"], dtype=object)}, "t.csv"), "c")
        Traceback (most recent call last):
        ...
        kiln.tables.read.TableError: Column 'c' of t.csv holds text such as 'a', ...
    """
    numbers = as_numbers(table, name)
    if numbers is None:
        example = next(v for v in as_labels(table, name) if v is not None)
        raise TableError(
            f"Column {name!r} of {table.source} holds text such as {shown(example)}, where numbers "
            "are expected (it held numbers in training, or was declared numeric)."
        )
    return np.asarray(numbers, dtype=np.float64)


def _check_kind(name: str, kind: str | None, allowed: tuple[str, ...], role: str) -> None:
    if kind is not None and kind not in allowed:
        raise TableError(
            f"--kind {name}={kind}: a {role} column's kind is one of {', '.join(allowed)}."
        )


def infer_feature(table: Table, name: str, kind: str | None) -> dict[str, Any]:
    """Return the spec of feature `name`: its kind (`kind` when given) and encoding statistics.

    Raises:
        TableError: If the column mixes numbers and text, or `kind` does not fit it.
    """
    _check_kind(name, kind, FEATURE_KINDS, "feature")
    numbers = None if kind == "categorical" else as_numbers(table, name)
    if kind == "numeric" and numbers is None:
        numbers = numbers_of(table, name)
    if numbers is not None and kind != "numeric":
        present = numbers[~np.isnan(numbers)]
        distinct = np.unique(present)
        whole = bool(np.all(distinct == np.round(distinct)))
        few = whole and 0 < len(distinct) <= CATEGORICAL_MAX_INTEGERS
        if not (few and len(_distinct_labels(table, name)) <= CATEGORICAL_MAX_INTEGERS):
            kind = "numeric"  # (integers beyond 2**53 can share a float: count their labels)
    if kind == "numeric" and numbers is not None:
        missing = np.isnan(numbers)
        center, spread = robust_scaling(numbers[~missing])
        return {
            "name": name,
            "kind": "numeric",
            "center": center,
            "spread": spread,
            "indicator": bool(missing.any()),
        }
    vocabulary = _distinct_labels(table, name)
    slots = len(vocabulary) + 1
    column = {"name": name, "kind": "categorical", "vocabulary": vocabulary}
    if slots <= ONE_HOT_MAX:
        return {**column, "encoding": "onehot", "dim": slots}
    return {**column, "encoding": "embedding", "dim": embedding_dim(slots)}


def infer_target(table: Table, name: str, kind: str | None) -> dict[str, Any]:
    """Return the spec of target `name`: its kind (`kind` when given), scaling or labels.

    Raises:
        TableError: If the column has no values or a single one, mixes numbers and text, or
            `kind` does not fit it.
    """
    _check_kind(name, kind, TARGET_KINDS, "target")
    numbers = None if kind in ("binary", "multiclass") else as_numbers(table, name)
    if kind == "regression" and numbers is None:
        numbers = numbers_of(table, name)
    labels = as_labels(table, name)
    present = ~is_missing(labels)
    if not present.any():
        raise TableError(
            f"Target column {name!r} of {table.source} has no values: all {len(labels)} cells "
            "are missing. Choose another --target, or fill the column in."
        )
    distinct = label_order(labels[present])
    if len(distinct) == 1 and kind != "regression":
        raise TableError(
            f"Target column {name!r} of {table.source} has the single value {shown(distinct[0])} "
            "in every row; there is nothing to learn. Choose another --target."
        )
    if kind is None:
        if len(distinct) == 2:
            kind = "binary"
        elif numbers is None:
            kind = "multiclass"
        else:
            values = numbers[~np.isnan(numbers)]
            whole = bool(np.all(values == np.round(values)))
            few = whole and len(distinct) <= MULTICLASS_MAX_INTEGERS
            kind = "multiclass" if few else "regression"
    if kind == "regression" and numbers is not None:
        values = numbers[~np.isnan(numbers)]
        std = float(values.std())
        return {
            "name": name,
            "kind": kind,
            "mean": float(values.mean()),
            "std": std if std > 0 else 1.0,
            "low": float(values.min()),
            "high": float(values.max()),
        }
    if kind == "binary" and len(distinct) != 2:
        raise TableError(
            f"--kind {name}=binary: target column {name!r} has {len(distinct)} distinct values, "
            "where a binary target has 2; use multiclass."
        )
    return {"name": name, "kind": kind, "labels": distinct}


def _distinct_labels(table: Table, name: str) -> list[str]:
    """The distinct labels of column `name`, in `label_order`."""
    labels = as_labels(table, name)
    return label_order(labels[~is_missing(labels)])
