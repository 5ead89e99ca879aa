"""`TableSpec`: each column's kind and encoding, learned from training rows, kept as JSON.

What lives here: turning a `Table` into the network's inputs and targets (vectorised with
NumPy) and its outputs back into the original label space, and reading and writing the spec as
JSON. What does not: the rules that decide each column's kind and the statistics it needs
(`kinds.py`, which describes the encodings), reading files (`read.py`), the network
(`model.py`) and training (`train.py`).

Example:
    >>> import numpy as np
    >>> from kiln.tables.read import Table
    >>> table = Table(["x", "y"], {"x": np.array([0.5, np.nan, 2.5]),
    ...                           "y": np.array(["no", "yes", "no"], dtype=object)}, "memory")
    >>> spec = TableSpec.infer(table, ["y"])
    >>> [(c["name"], c["kind"]) for c in spec.features + spec.targets]
    [('x', 'numeric'), ('y', 'binary')]
    >>> spec.encode_features(table)  # x scaled and clipped, then its missing indicator
    array([[-0.9486833,  0.       ],
           [ 0.       ,  1.       ],
           [ 0.9486833,  0.       ]], dtype=float32)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kiln.tables.kinds import (
    FEATURE_KINDS,
    TARGET_KINDS,
    infer_feature,
    infer_target,
    numbers_of,
    smooth_clip,
)
from kiln.tables.read import (
    Table,
    TableError,
    as_labels,
    as_numbers,
    is_missing,
    label_order,
    shown,
)

#: The version of the JSON layout written by `TableSpec.save`.
SPEC_FORMAT = 2


class TableSpec:
    """The columns of a table: kinds, statistics, vocabularies and target encodings.

    Build one with `TableSpec.infer`, or read one with `TableSpec.load`. Every column is a
    plain dict (written as is to JSON): `name` and `kind`, plus `center`, `spread` and
    `indicator` for numeric features (`kinds.py` says how they encode), `vocabulary` (slot 0,
    unknown, not listed), `encoding` ("onehot" or "embedding") and `dim` for categorical ones,
    `mean` and `std` for regression targets, and `labels` for classification targets.

    Example:
        >>> import numpy as np
        >>> from kiln.tables.read import Table
        >>> table = Table(["c", "y"], {"c": np.array(["a", "b", "a", None], dtype=object),
        ...                           "y": np.array([1.5, 2.0, 4.0, 8.0])}, "memory")
        >>> spec = TableSpec.infer(table, ["y"])
        >>> spec.features[0]["vocabulary"], spec.targets[0]["kind"]
        (['a', 'b'], 'regression')
        >>> spec.encode_features(table)  # one-hot: unknown or missing, 'a', 'b'
        array([[0., 1., 0.],
               [0., 0., 1.],
               [0., 1., 0.],
               [1., 0., 0.]], dtype=float32)
    """

    def __init__(
        self,
        features: list[dict[str, Any]],
        targets: list[dict[str, Any]],
        ignored: Sequence[str] = (),
    ) -> None:
        self.features = features
        self.targets = targets
        self.ignored = list(ignored)

    @classmethod
    def infer(
        cls,
        table: Table,
        targets: Sequence[str],
        *,
        kinds: dict[str, str] | None = None,
        ignore: Sequence[str] = (),
        train_rows: np.ndarray | None = None,
    ) -> TableSpec:
        """Decide every column's kind from `table` and learn how to encode it.

        Args:
            table: The training table.
            targets: The columns to predict; every other column (but `ignore`) is a feature.
            kinds: Kinds that override the inferred ones, by column name.
            ignore: Columns that are neither features nor targets (identifiers, say).
            train_rows: The rows whose statistics encode the features (the training rows,
                without the validation ones); all rows by default. Target labels come from
                all rows, so that every class has a slot.

        Raises:
            TableError: For a missing target column (the message lists the columns), a target
                without values or with a single value, a column mixing numbers and text, or a
                kind that does not fit a column.
        """
        kinds = dict(kinds or {})
        if not targets:
            raise TableError("No target column: name the column(s) to predict with --target.")
        table.require(list(targets), "Target")
        table.require([*kinds, *ignore], "Named")
        unused = sorted(set(targets) & set(ignore))
        if unused:
            raise TableError(f"Column(s) {', '.join(unused)} cannot be both target and ignored.")
        names = [c for c in table.columns if c not in targets and c not in ignore]
        for name in names:  # a mix of numbers and text anywhere in the column is an error
            if kinds.get(name) != "categorical":
                as_numbers(table, name)
        fit = table if train_rows is None else table.rows(train_rows)
        features = [infer_feature(fit, name, kinds.get(name)) for name in names]
        target_specs = [infer_target(table, name, kinds.get(name)) for name in targets]
        return cls(features, target_specs, ignore)

    # ----- the network's inputs and outputs -------------------------------------------------

    @property
    def numeric_width(self) -> int:
        """Numeric columns: the first inputs of the network."""
        return sum(column["kind"] == "numeric" for column in self.features)

    @property
    def dense_width(self) -> int:
        """Inputs that go straight to the network: numbers, then indicators and one-hot slots."""
        width = 0
        for column in self.features:
            if column["kind"] == "numeric":
                width += 1 + int(column["indicator"])
            elif column["encoding"] == "onehot":
                width += len(column["vocabulary"]) + 1
        return width

    @property
    def embeddings(self) -> list[list[int]]:
        """`[slots, dim]` of each embedded column, in the order of the last inputs."""
        return [
            [len(c["vocabulary"]) + 1, c["dim"]]
            for c in self.features
            if c["kind"] == "categorical" and c["encoding"] == "embedding"
        ]

    @property
    def output_layout(self) -> list[tuple[str, int]]:
        """`(kind, outputs)` per target: one output for regression and binary, K for K classes."""
        return [
            (c["kind"], len(c["labels"]) if c["kind"] == "multiclass" else 1) for c in self.targets
        ]

    def check_columns(self, table: Table, *, with_targets: bool = False) -> None:
        """Raise a `TableError` naming the training columns `table` lacks and those it adds.

        Target and ignored columns may be present or not (unless `with_targets`).
        """
        expected = [c["name"] for c in self.features]
        optional = {c["name"] for c in self.targets} | set(self.ignored)
        missing = [name for name in expected if name not in table.values]
        extra = [name for name in table.columns if name not in expected and name not in optional]
        if missing or extra:
            parts = [
                f"missing {', '.join(map(repr, missing))}" if missing else "",
                f"not seen in training {', '.join(map(repr, extra))}" if extra else "",
            ]
            raise TableError(
                f"The columns of {table.source} do not match the training columns: "
                f"{'; '.join(p for p in parts if p)}."
            )
        if with_targets:
            table.require([c["name"] for c in self.targets], "Target")

    def encode_features(self, table: Table) -> np.ndarray:
        """Return the network's inputs for `table`, float32.

        The numeric columns first, then the other dense inputs (missing-value indicators,
        one-hot slots), then embedding indices.
        """
        self.check_columns(table)
        inputs = np.zeros((len(table), self.dense_width + len(self.embeddings)), np.float32)
        # filled in place: one float32 copy of the inputs
        number, at, embedded = 0, self.numeric_width, self.dense_width
        for column in self.features:
            name = column["name"]
            if column["kind"] == "numeric":
                numbers = numbers_of(table, name)
                missing = np.isnan(numbers)
                scaled = smooth_clip((numbers - column["center"]) / column["spread"])
                inputs[:, number] = np.where(missing, 0.0, scaled)
                number += 1
                if column["indicator"]:
                    inputs[:, at] = missing
                    at += 1
                continue
            slots = _slots(as_labels(table, name), column["vocabulary"]) + 1  # unknown: 0
            if column["encoding"] == "onehot":
                inputs[np.arange(len(slots)), at + slots] = 1.0
                at += len(column["vocabulary"]) + 1
            else:
                inputs[:, embedded] = slots
                embedded += 1
        return inputs

    def encode_targets(self, table: Table) -> np.ndarray:
        """Return the targets of `table`: float32 `(rows, targets)`, NaN where missing.

        Regression values are standardised; classes are indices into `labels`.

        Raises:
            TableError: If a target column is missing, or holds a label not seen in training.
        """
        table.require([c["name"] for c in self.targets], "Target")
        encoded = []
        for column in self.targets:
            name = column["name"]
            if column["kind"] == "regression":
                encoded.append((numbers_of(table, name) - column["mean"]) / column["std"])
                continue
            labels = as_labels(table, name)
            slots = _slots(labels, column["labels"]).astype(np.float64)
            present = ~is_missing(labels)
            unknown = present & (slots < 0)
            if unknown.any():
                unseen = ", ".join(map(shown, label_order(labels[unknown])[:5]))
                known = ", ".join(map(shown, column["labels"][:20]))
                more = len(column["labels"]) - 20
                known += f" and {more} more" if more > 0 else ""
                raise TableError(
                    f"Target column {name!r} of {table.source} has labels not seen in training: "
                    f"{unseen}. The model knows: {known}."
                )
            slots[~present] = np.nan
            encoded.append(slots)
        return np.stack(encoded, axis=1).astype(np.float32)

    def decode(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        """Turn post-processed outputs into prediction columns in the original label space.

        Args:
            outputs: `(rows, outputs)` as the loss's `postproc` leaves them: standardised
                values for regression (clipped to the training range, `low` to `high`), the
                probability of the second label for binary targets, class probabilities for
                multiclass ones.

        Returns:
            Columns by name: each target's prediction (numbers or labels), and for a
            classification target the probability of each label, `"{target}_proba_{label}"`.
        """
        columns: dict[str, np.ndarray] = {}
        start = 0
        for column, (kind, width) in zip(self.targets, self.output_layout, strict=True):
            name, block = column["name"], outputs[:, start : start + width]
            start += width
            if kind == "regression":
                columns[name] = regression_values(column, block[:, 0])
                continue
            if kind == "binary":
                block = np.stack([1.0 - block[:, 0], block[:, 0]], axis=1)
            labels = np.array(column["labels"], dtype=object)
            columns[name] = labels[block.argmax(axis=1)]
            for j, label in enumerate(column["labels"]):
                columns[f"{name}_proba_{label}"] = block[:, j].astype(np.float64)
        return columns

    # ----- JSON -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as plain data (what `save` writes)."""
        return {
            "format": SPEC_FORMAT,
            "features": self.features,
            "targets": self.targets,
            "ignored": self.ignored,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "the spec") -> TableSpec:
        """Return the spec `data` (from `to_dict`) describes.

        Raises:
            TableError: If `data` is not a spec of this format, or a column lacks what its
                kind needs (the message names the column and the field).
        """
        if not isinstance(data, dict) or data.get("format") != SPEC_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise TableError(
                f"{source} is not a table spec of format {SPEC_FORMAT} (found {found!r}); it "
                "was written by another kiln version or is damaged. Train the model again."
            )
        problem = _spec_problem(data)
        if problem is not None:
            raise TableError(
                f"{source} is damaged: {problem}. It was not written by `kiln fit` or was "
                "edited since; train the model again."
            )
        return cls(list(data["features"]), list(data["targets"]), list(data.get("ignored", [])))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the spec to `path` as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TableSpec:
        """Read a spec written by `save`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise TableError(
                f"{path} is not valid JSON ({error}); train the model again."
            ) from None
        return cls.from_dict(data, str(path))


def regression_values(column: dict[str, Any], outputs: np.ndarray) -> np.ndarray:
    """A regression target's standardised `outputs` in its own units, within the training range.

    Clipping to the range seen in training (`low` to `high`, as RealMLP does) keeps a network
    from extrapolating wildly on rows unlike the training ones.

    Example:
        >>> column = {"mean": 10.0, "std": 2.0, "low": 6.0, "high": 13.0}
        >>> regression_values(column, np.array([-5.0, 0.0, 1.0, 5.0])).tolist()
        [6.0, 10.0, 12.0, 13.0]
    """
    values = outputs.astype(np.float64) * column["std"] + column["mean"]
    clipped: np.ndarray = np.clip(values, column["low"], column["high"])
    return clipped


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _label_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and all(isinstance(label, str) for label in value)
        and len(set(value)) == len(value)
    )


#: What each kind of column needs in a spec, and the test of each field.
_NEEDS: dict[str, dict[str, Callable[[Any], bool]]] = {
    "numeric": {
        "center": _number,
        "spread": lambda v: _number(v) and v > 0,
        "indicator": lambda v: isinstance(v, bool),
    },
    "categorical": {
        "vocabulary": _label_list,
        "encoding": lambda v: v in ("onehot", "embedding"),
        "dim": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
    },
    "regression": {
        "mean": _number,
        "std": lambda v: _number(v) and v > 0,
        "low": _number,
        "high": _number,
    },
    "binary": {"labels": lambda v: _label_list(v) and len(v) == 2},
    "multiclass": {"labels": lambda v: _label_list(v) and len(v) >= 2},
}


def _spec_problem(data: dict[str, Any]) -> str | None:
    """What makes `data` not a spec that `kiln fit` writes (the first thing found), or `None`."""
    for role, kinds in (("features", FEATURE_KINDS), ("targets", TARGET_KINDS)):
        columns = data.get(role)
        if not isinstance(columns, list) or (role == "targets" and not columns):
            return f"it has no {role!r} list (found {shown(columns)})"
        for i, column in enumerate(columns):
            if not isinstance(column, dict) or not isinstance(column.get("name"), str):
                return f"{role}[{i}] is not a column with a name (found {shown(column)})"
            name, kind = column["name"], column.get("kind")
            if kind not in kinds:
                return f"column {name!r} has the kind {shown(kind)}, not one of {', '.join(kinds)}"
            for key, valid in _NEEDS[str(kind)].items():
                if not valid(value := column.get(key)):
                    return f"the {kind} column {name!r} has no valid {key!r} ({shown(value)})"
    ignored = data.get("ignored", [])
    if not (isinstance(ignored, list) and all(isinstance(name, str) for name in ignored)):
        return f"its 'ignored' is not a list of column names (found {shown(ignored)})"
    return None


def _slots(labels: np.ndarray, vocabulary: list[str]) -> np.ndarray:
    """Index of each label in `vocabulary` (any order); -1 for unknown and missing labels."""
    index = {label: slot for slot, label in enumerate(vocabulary)}
    return np.fromiter((index.get(v, -1) for v in labels), dtype=np.int64, count=len(labels))
