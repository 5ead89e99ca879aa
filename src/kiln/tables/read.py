r"""Reading tables for `kiln fit`, `kiln predict` and `kiln evaluate`: CSV, and Parquet.

What lives here: `TableError` (a bad table, explained), `Table` (named columns as NumPy arrays),
`read_table` (CSV through the standard `csv` module; Parquet through `pyarrow` when it is
installed), and the reading of a column's values as numbers or as labels, which finds columns
that mix numbers and text. What does not: deciding each column's kind and encoding it
(`table_spec.py`), and training (`table_train.py`).

A column is held as a float64 array (numbers, NaN where missing) or an object array of `str`
(text, `None` where missing). A CSV column whose every cell is a number (or missing) is read as
numbers, once; a cell that is empty or one of `MISSING` (in any case) is missing, and so is an
infinite number.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "pets.csv"
    >>> _ = path.write_text("age,kind\n3,cat\n,dog\n5,NA\n")
    >>> table = read_table(path)
    >>> table.columns, len(table)
    (['age', 'kind'], 3)
    >>> as_numbers(table, "age")
    array([ 3., nan,  5.])
    >>> as_labels(table, "kind")
    array(['cat', 'dog', None], dtype=object)
"""

from __future__ import annotations

import csv
import importlib
import os
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path

import numpy as np

#: Cell texts read as a missing value (compared without case, after stripping spaces).
MISSING = ("", "na", "n/a", "nan", "null", "none", "?")
#: File suffixes read as Parquet; anything else is read as CSV.
PARQUET_SUFFIXES = (".parquet", ".pq")


class TableError(ValueError):
    """A table that cannot be used as given; the message says what is wrong and how to fix it.

    The `kiln` command prints it as `kiln: error: ...` and exits with status 2.

    Example:
        >>> issubclass(TableError, ValueError)
        True
    """


@dataclass
class Table:
    """Named columns of equal length, as NumPy arrays.

    Attributes:
        columns: The column names, in file order.
        values: Each column: a float64 array (NaN where missing), or an object array of `str`
            (`None` where missing).
        source: Where the table came from, for messages.

    Example:
        >>> import numpy as np
        >>> table = Table(["x"], {"x": np.array([1.0, 2.0])}, "memory")
        >>> len(table), table.source
        (2, 'memory')
    """

    columns: list[str]
    values: dict[str, np.ndarray]
    source: str

    def __len__(self) -> int:
        return 0 if not self.columns else len(self.values[self.columns[0]])

    def rows(self, index: np.ndarray) -> Table:
        """Return the table of the rows `index` selects (an integer or boolean array)."""
        return Table(list(self.columns), {k: v[index] for k, v in self.values.items()}, self.source)

    def require(self, names: list[str], what: str) -> None:
        """Raise a `TableError` naming the columns of `names` this table lacks, and its own."""
        missing = [name for name in names if name not in self.values]
        if not missing:
            return
        hints = [
            f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)
            for name in missing
            for close in [get_close_matches(name, self.columns, n=1)]
        ]
        plural = "s" if len(missing) > 1 else ""
        raise TableError(
            f"{what} column{plural} {', '.join(hints)} not found in {self.source}. Its columns "
            f"are: {', '.join(self.columns)}."
        )


def read_table(path: str | os.PathLike[str]) -> Table:
    """Read a CSV file (or a Parquet file, with pyarrow installed) into a `Table`.

    The first CSV row names the columns; blank lines are skipped. Every other row must have
    one cell per column.

    Args:
        path: The file: `.parquet` or `.pq` for Parquet, anything else is read as CSV.

    Returns:
        The table, its columns in file order.

    Raises:
        FileNotFoundError: If there is no such file.
        TableError: If the file is empty, has no data rows, repeats a column name, has a row
            with the wrong number of cells, or is Parquet without pyarrow installed.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "empty.csv"
        >>> _ = path.write_text("")
        >>> read_table(path)
        Traceback (most recent call last):
        ...
        kiln.tables.read.TableError: ... is empty: expected a header row ...
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No such file: {path}")
    if path.is_dir():
        raise TableError(f"{path} is a directory; expected a CSV or Parquet file.")
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return _read_parquet(path)
    return _read_csv(path)


def _read_csv(path: Path) -> Table:
    with path.open(newline="", encoding="utf-8-sig") as file:  # -sig: Excel's byte-order mark
        rows = [row for row in csv.reader(file) if row]
    if not rows:
        raise TableError(
            f"{path} is empty: expected a header row naming the columns, then one row per sample."
        )
    header = [name.strip() for name in rows[0]]
    _check_header(header, path)
    body = rows[1:]
    if not body:
        raise TableError(f"{path} has a header ({', '.join(header)}) but no data rows.")
    lengths = np.fromiter(map(len, body), dtype=np.int64, count=len(body))
    ragged = np.flatnonzero(lengths != len(header))
    if ragged.size:
        first = int(ragged[0])
        raise TableError(
            f"{path}, line {first + 2}: {lengths[first]} cells where the header has "
            f"{len(header)} ({ragged.size} such row{'s' if ragged.size > 1 else ''}). Every row "
            "needs one cell per column; quote cells that contain commas."
        )
    cells = np.char.strip(np.array(body, dtype=str))
    missing = np.isin(np.char.lower(cells), MISSING)
    values: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):  # numbers are read once, here; text stays text
        text, gone = cells[:, j], missing[:, j]
        try:
            numbers = np.where(gone, "nan", text).astype(np.float64)
        except ValueError:
            column = text.astype(object)
            column[gone] = None
            values[name] = column
            continue
        numbers[~np.isfinite(numbers)] = np.nan  # "inf" would spoil means: missing, too
        values[name] = numbers
    return Table(header, values, str(path))


def _check_header(header: list[str], path: Path) -> None:
    if "" in header:
        raise TableError(
            f"{path}: column {header.index('') + 1} of the header has no name; every column "
            "needs one."
        )
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise TableError(
            f"{path}: the header repeats the column name{'s' if len(repeated) > 1 else ''} "
            f"{', '.join(map(repr, repeated))}; column names must be unique."
        )


def _read_parquet(path: Path) -> Table:
    try:
        parquet = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise TableError(
            f"Reading {path} needs pyarrow, which is not installed: `pip install pyarrow`, or "
            "save the table as CSV."
        ) from None
    arrow = parquet.read_table(path)
    header = [str(name) for name in arrow.column_names]
    _check_header(header, path)
    if arrow.num_rows == 0:
        raise TableError(f"{path} has columns ({', '.join(header)}) but no rows.")
    values: dict[str, np.ndarray] = {}
    for name, column in zip(header, arrow.columns, strict=True):
        items = column.to_pylist()
        kind = str(column.type)
        if kind.startswith(("int", "uint", "float", "double", "halffloat", "decimal")):
            values[name] = np.array([np.nan if v is None else v for v in items], dtype=np.float64)
        else:  # text, booleans, dates: labels
            values[name] = np.array([None if v is None else str(v) for v in items], dtype=object)
    return Table(header, values, str(path))


def is_missing(values: np.ndarray) -> np.ndarray:
    """Return where a column's values are missing: NaN in numbers, `None` in labels.

    Example:
        >>> import numpy as np
        >>> is_missing(np.array(["a", None], dtype=object)), is_missing(np.array([np.nan, 1.0]))
        (array([False,  True]), array([ True, False]))
    """
    if values.dtype != object:
        return np.asarray(np.isnan(values), dtype=bool)
    return np.asarray(np.equal(values, _NONE), dtype=bool)


_NONE = np.array(None, dtype=object)


def as_numbers(table: Table, name: str) -> np.ndarray | None:
    """Return column `name` as float64 (NaN where missing), or `None` when it holds text.

    Raises:
        TableError: If the column mixes numbers and text; the message shows examples of both.

    Example:
        >>> import numpy as np
        >>> table = Table(["n"], {"n": np.array(["1", None, "2.5"], dtype=object)}, "memory")
        >>> as_numbers(table, "n")
        array([1. , nan, 2.5])
    """
    values = table.values[name]
    if values.dtype != object:
        return values.astype(np.float64)
    missing = is_missing(values)
    numbers = np.full(len(values), np.nan)
    try:
        numbers[~missing] = values[~missing].astype(str).astype(np.float64)
    except ValueError:
        _check_not_mixed(table, name, values[~missing])
        return None
    return numbers


def _check_not_mixed(table: Table, name: str, present: np.ndarray) -> None:
    distinct = np.unique(present.astype(str))
    numeric = np.array([_is_number(text) for text in distinct], dtype=bool)  # per distinct value
    if numeric.any():
        numbers = ", ".join(repr(str(t)) for t in distinct[numeric][:3])
        texts = ", ".join(repr(str(t)) for t in distinct[~numeric][:3])
        raise TableError(
            f"Column {name!r} of {table.source} mixes numbers and text: numbers such as "
            f"{numbers}, and text such as {texts}. Make it one or the other (leave a cell empty "
            f"when the value is missing), or read all its values as categories: "
            f"--kind {name}=categorical."
        )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def as_labels(table: Table, name: str) -> np.ndarray:
    """Return column `name` as an object array of `str` labels, `None` where missing.

    Numbers become their shortest text: whole numbers without a decimal point, so `1`, `1.0`
    and `1.00` are the same label.

    Example:
        >>> import numpy as np
        >>> table = Table(["n"], {"n": np.array([1.0, np.nan, 2.5])}, "memory")
        >>> as_labels(table, "n")
        array(['1', None, '2.5'], dtype=object)
    """
    values = table.values[name]
    numbers = values if values.dtype != object else _numbers_or_none(values)
    if numbers is None:
        return values
    labels = np.full(len(numbers), None, dtype=object)
    present = ~np.isnan(numbers)
    kept = numbers[present]
    whole = np.isfinite(kept) & (kept == np.round(kept))
    text = kept.astype(str).astype(object)
    text[whole] = kept[whole].astype(np.int64).astype(str)
    labels[present] = text
    return labels


def _numbers_or_none(values: np.ndarray) -> np.ndarray | None:
    missing = is_missing(values)
    numbers = np.full(len(values), np.nan)
    try:
        numbers[~missing] = values[~missing].astype(str).astype(np.float64)
    except ValueError:
        return None
    return numbers
