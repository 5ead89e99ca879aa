r"""Reading tables for `kiln fit`, `kiln predict` and `kiln evaluate`: CSV, and Parquet.

What lives here: `TableError` (a bad table, explained), `Table` (named columns as NumPy arrays),
`read_table` (CSV through the standard `csv` module; Parquet through `pyarrow` when it is
installed), and the reading of a column's values as numbers or as labels, which finds columns
that mix numbers and text. What does not: deciding each column's kind and encoding it
(`spec.py`), and training (`train.py`).

A column is held as a float64 array (numbers, NaN where missing) or an object array of `str`
(text, `None` where missing; never a fixed-width string array, which would give every cell the
width of the longest, so that memory stays in proportion to the file). A CSV column whose every
cell is a number (or missing) is read as numbers, once, unless it holds whole numbers that a
float64 cannot hold exactly (beyond 2**53): those stay text, so that their labels stay
distinct. A cell that is empty or one of `MISSING` (in any case) is missing, and so is an
infinite number. Every number has one label however it is written (`as_labels`), and labels
have one order (`label_order`).

CSV files are read as UTF-8 (with or without Excel's byte-order mark). Another encoding is an
error that names the line and says how to re-save the file, rather than a guess: Latin-1 would
decode any bytes, but wrongly for Windows-1252 or UTF-16 files, and labels decoded one way in
training and another in prediction would silently not match.

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
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any

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
            with the wrong number of cells, is not UTF-8 text (or not text at all), or is
            Parquet without pyarrow installed or not readable as Parquet.

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
    with path.open("rb") as file:
        start = file.read(4096)
    for magic, what in _BINARY:
        if start.startswith(magic) if magic else b"\0" in start:
            raise TableError(
                f"{path} is {what}, not UTF-8 CSV text. Save the table as CSV UTF-8, or give a "
                "Parquet file a .parquet name."
            )
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:  # -sig: Excel's byte-order mark
            reader = csv.reader(file)
            first = next((row for row in reader if row), None)
            if first is None:
                raise TableError(
                    f"{path} is empty: expected a header row naming the columns, then one row "
                    "per sample."
                )
            header = [name.strip() for name in first]
            _check_header(header, path)
            columns = [_Column() for _ in header]
            for chunk in _chunks(reader, header, path):
                for column, cells in zip(columns, zip(*chunk, strict=True), strict=True):
                    column.add(cells)
    except UnicodeDecodeError:
        raise TableError(_not_utf8(path)) from None
    except csv.Error as error:
        raise TableError(
            f"{path}, line {reader.line_num}: not readable as CSV ({error}). Expected text with "
            "comma-separated cells, one row per line, each cell under "
            f"{csv.field_size_limit()} characters; is it a CSV file?"
        ) from None
    if not columns[0].chunks:
        raise TableError(f"{path} has a header ({', '.join(header)}) but no data rows.")
    return Table(header, {n: c.values() for n, c in zip(header, columns, strict=True)}, str(path))


#: CSV rows read and converted at a time: only one chunk's cells are Python strings at once.
CHUNK_ROWS = 8192
#: Distinct text cells of a column that share one string (repeated labels cost a pointer).
SHARED_TEXTS = 65536


def _chunks(reader: Any, header: list[str], path: Path) -> Iterator[list[list[str]]]:
    """The non-blank rows of `reader` in chunks; a `TableError` for rows of the wrong length."""
    chunk: list[list[str]] = []
    ragged, line, cells = 0, 0, 0
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            ragged, line, cells = ragged + 1, line or reader.line_num, cells or len(row)
        elif not ragged:
            chunk.append(row)
            if len(chunk) == CHUNK_ROWS:
                yield chunk
                chunk = []
    if ragged:
        raise TableError(
            f"{path}, line {line}: {cells} cells where the header has {len(header)} ({ragged} "
            f"such row{'s' if ragged > 1 else ''}). Every row needs one cell per column; quote "
            "cells that contain commas."
        )
    if chunk:
        yield chunk


class _Column:
    """A CSV column as it is read: chunks of float64 numbers, or of text (object arrays).

    Object arrays, not fixed-width string arrays, which give every cell the width of the
    longest one (one long cell would cost rows x its length). A column is numbers if every
    chunk is; numbers are read once, here.
    """

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.shared: dict[str, str] = {}

    def add(self, cells: Sequence[str]) -> None:
        text = np.empty(len(cells), dtype=object)
        text[:] = [cell.strip() for cell in cells]
        gone = np.fromiter((_is_missing_text(t) for t in text), dtype=bool, count=len(text))
        try:
            numbers = np.where(gone, "nan", text).astype(np.float64)
        except ValueError:
            numbers = None
        if numbers is not None and not _loses_integers(text[~gone], numbers[~gone]):
            numbers[~np.isfinite(numbers)] = np.nan  # "inf" would spoil means: missing, too
            self.chunks.append(numbers)
            return
        for i in np.flatnonzero(~gone):
            cell = text[i]
            text[i] = self.shared.get(cell, cell)
            if len(self.shared) < SHARED_TEXTS:
                self.shared.setdefault(cell, cell)
        text[gone] = None
        self.chunks.append(text)

    def values(self) -> np.ndarray:
        if all(chunk.dtype != object for chunk in self.chunks):
            return np.concatenate(self.chunks)
        return np.concatenate(  # numbers among text: their labels, for the mixed-column check
            [c if c.dtype == object else _number_labels(c) for c in self.chunks]
        )


#: The starts of files that are not CSV text, and what they are (b"": any NUL byte).
_BINARY = (
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook?)"),
    (b"\xd0\xcf\x11\xe0", "an Office document (an Excel .xls workbook?)"),
    (b"PAR1", "a Parquet file"),
    (b"\xff\xfe", "UTF-16 text"),
    (b"\xfe\xff", "UTF-16 text"),
    (b"", "a binary file (it holds NUL bytes)"),
)


def _is_missing_text(text: str) -> bool:
    return len(text) <= _MISSING_LONGEST and text.lower() in MISSING


_MISSING_LONGEST = max(map(len, MISSING))


def _not_utf8(path: Path) -> str:
    """Say where `path` stops being UTF-8 (line and byte), and how to re-save it."""
    line, bad, seen = _first_non_utf8(path)
    return (
        f"{path} is not UTF-8 text: line {line} has the byte 0x{bad} after {seen!r}. kiln "
        "reads CSV files as UTF-8; the file was probably saved as Latin-1 or Windows-1252. "
        "Save it as UTF-8 (Excel: Save As > CSV UTF-8; or `iconv -f cp1252 -t utf-8 "
        f"{path.name} > {path.stem}-utf8{path.suffix}`), then use the new file."
    )


def _first_non_utf8(path: Path) -> tuple[int, str, str]:
    """The line number, the byte (hex) and the text before it, of the first non-UTF-8 byte."""
    with path.open("rb") as file:
        for number, raw in enumerate(file, start=1):  # "\n" is never inside a UTF-8 character
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                before = raw[max(0, error.start - 20) : error.start].decode("utf-8", "replace")
                return number, raw[error.start : error.start + 1].hex(), before
    return 1, "??", ""  # pragma: no cover - decodes line by line, not as a whole


#: Whole numbers from this magnitude on may not be held exactly by a float64.
EXACT_INTEGERS = 2**53
_INTEGER = re.compile(r"([+-]?)0*([0-9]+)")


def _loses_integers(text: np.ndarray, numbers: np.ndarray) -> bool:
    """Whether some whole number of `text` (cells) is not `numbers` (their float64) exactly."""
    far = np.flatnonzero(~(np.abs(numbers) < EXACT_INTEGERS))  # NaN and infinities included
    return any(
        (label := _integer_label(str(text[i]))) is not None
        and (not np.isfinite(numbers[i]) or label != str(int(numbers[i])))
        for i in far
    )


def _integer_label(text: str) -> str | None:
    """The canonical text of an integer written in decimal digits (any length), else `None`."""
    match = _INTEGER.fullmatch(text.strip())
    if match is None:
        return None
    sign, digits = match.groups()
    return f"-{digits}" if sign == "-" and digits != "0" else digits


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
    try:
        arrow = parquet.read_table(path)
    except (ValueError, OSError, importlib.import_module("pyarrow").ArrowException) as error:
        raise TableError(
            f"{path} is not a readable Parquet file ({error}). Write it again, or save the "
            "table as CSV."
        ) from None
    header = [str(name) for name in arrow.column_names]
    _check_header(header, path)
    if arrow.num_rows == 0:
        raise TableError(f"{path} has columns ({', '.join(header)}) but no rows.")
    values: dict[str, np.ndarray] = {}
    for name, column in zip(header, arrow.columns, strict=True):
        items = column.to_pylist()
        kind = str(column.type)
        exact = not kind.startswith(("int", "uint", "decimal")) or not any(
            v is not None and v == int(v) and float(v) != v for v in items
        )  # integers beyond float64's exact range are kept as text, as in a CSV file
        if exact and kind.startswith(("int", "uint", "float", "double", "halffloat", "decimal")):
            values[name] = np.array([np.nan if v is None else v for v in items], dtype=np.float64)
        else:  # text, booleans, dates, large integers: labels
            text = np.empty(len(items), dtype=object)
            text[:] = [None if v is None else str(v) for v in items]
            values[name] = text
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

    Infinite numbers are missing, as in `read_table`.

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
    numbers = _numbers_or_none(values)
    if numbers is None:
        _check_not_mixed(table, name, values[~is_missing(values)])
    return numbers


def _check_not_mixed(table: Table, name: str, present: np.ndarray) -> None:
    distinct = sorted({str(v) for v in present})
    numbers = [text for text in distinct if _is_number(text)]
    if numbers:
        texts = [text for text in distinct if not _is_number(text)]
        raise TableError(
            f"Column {name!r} of {table.source} mixes numbers and text: numbers such as "
            f"{', '.join(map(shown, numbers[:3]))}, and text such as "
            f"{', '.join(map(shown, texts[:3]))}. Make it one or the other (leave a cell empty "
            f"when the value is missing), or read all its values as categories: "
            f"--kind {name}=categorical."
        )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def shown(value: object, limit: int = 40) -> str:
    """Return `value` for a message (text quoted, other values as `repr`), shortened to `limit`.

    Example:
        >>> shown("cat"), shown(None), shown("x" * 100, limit=10)
        ("'cat'", 'None', "'xxxxxxxxxx'... (100 characters)")
    """
    text = value if isinstance(value, str) else repr(value)
    short = repr(text[:limit]) if isinstance(value, str) else text[:limit]
    return short if len(text) <= limit else f"{short}... ({len(text)} characters)"


def as_labels(table: Table, name: str) -> np.ndarray:
    """Return column `name` as an object array of `str` labels, `None` where missing.

    A number is the same label however it is written, and in whatever column: whole numbers
    are their decimal digits (exactly, at any size: `1`, `1.0`, `+01` and `1e0` are `'1'`;
    `18446744073709551617` stays itself), other numbers their shortest text (`2.50` is
    `'2.5'`). Infinite numbers are missing, as in `read_table`. Text stays as it is.

    Example:
        >>> import numpy as np
        >>> table = Table(["n"], {"n": np.array([1.0, np.nan, 2.5])}, "memory")
        >>> as_labels(table, "n")
        array(['1', None, '2.5'], dtype=object)
    """
    values = table.values[name]
    if values.dtype != object:
        return _number_labels(values.astype(np.float64))
    labels: dict[object, str | None] = {}  # each distinct cell once
    numbers: list[object] = []
    for value in set(values[~is_missing(values)]):
        integer = _integer_label(str(value))
        if integer is not None:
            labels[value] = integer
        elif _is_number(str(value)):
            numbers.append(value)
        else:
            labels[value] = value if isinstance(value, str) else str(value)
    floats = np.array([float(str(v)) for v in numbers], dtype=np.float64)
    labels.update(zip(numbers, _number_labels(floats), strict=True))
    result = np.empty(len(values), dtype=object)
    result[:] = [None if v is None else labels[v] for v in values]
    return result


def _number_labels(numbers: np.ndarray) -> np.ndarray:
    """Labels of float64 values: whole ones as exact decimal digits, `None` for NaN and inf.

    Each distinct value is written once, and its cells share the string.
    """
    labels = np.full(len(numbers), None, dtype=object)
    present = np.isfinite(numbers)
    kept, inverse = np.unique(numbers[present], return_inverse=True)
    whole = kept == np.round(kept)
    small = whole & (np.abs(kept) < 2.0**63)
    text = kept.astype(str).astype(object)  # the shortest text that reads back the same
    text[small] = kept[small].astype(np.int64).astype(str)
    big = np.flatnonzero(whole & ~small)
    text[big] = [str(int(kept[i])) for i in big]
    labels[present] = text[inverse.reshape(-1)]
    return labels


def label_order(labels: Iterable[str]) -> list[str]:
    """Return the distinct `labels` in order: by value when all are numbers, else as text.

    The one order of a classification target's labels (binary targets map the first to 0) and
    of a categorical feature's vocabulary.

    Example:
        >>> label_order(["10", "9", "10", "-1"]), label_order(["b", "10", "9"])
        (['-1', '9', '10'], ['10', '9', 'b'])
    """
    distinct = set(labels)
    keys: dict[str, float | int] = {}
    for label in distinct:
        integer = _integer_label(label)
        if integer is not None:
            keys[label] = int(integer) if len(integer) < 4000 else float(label)
        elif _is_number(label):
            keys[label] = float(label)
        else:
            return sorted(distinct)
    return sorted(distinct, key=lambda label: (keys[label], label))


def _numbers_or_none(values: np.ndarray) -> np.ndarray | None:
    missing = is_missing(values)
    numbers = np.full(len(values), np.nan)
    try:  # float() cell by cell: no fixed-width string copy of the column
        numbers[~missing] = values[~missing].astype(np.float64)
    except (ValueError, TypeError):
        return None
    numbers[~np.isfinite(numbers)] = np.nan
    return numbers
