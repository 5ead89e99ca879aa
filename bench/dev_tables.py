"""The development tables of `bench/tables.py`: scikit-learn's bundled data and generated tables.

Every table is a pandas DataFrame with string column names, the target in the column `target`,
text columns as text (object dtype) and missing cells as NaN; `write_csv` writes it as kiln reads
it (missing cells empty). Nothing is downloaded: the bundled loaders read files shipped with
scikit-learn, and the generated tables use fixed seeds, so every run sees the same rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
from sklearn import datasets


@dataclass(frozen=True)
class Table:
    """A development table: its task and how to build it."""

    task: str  # "classification" or "regression"
    build: Callable[[], pd.DataFrame]
    about: str


def _bundled(loader: Callable[..., object]) -> pd.DataFrame:
    data = loader(as_frame=True)
    frame: pd.DataFrame = data.frame.copy()  # type: ignore[attr-defined]
    frame.columns = [str(column) for column in frame.columns]
    return frame.rename(columns={frame.columns[-1]: "target"})


def _digits() -> pd.DataFrame:
    data = datasets.load_digits()
    frame = pd.DataFrame(data.data, columns=[f"pixel_{i}" for i in range(data.data.shape[1])])
    frame["target"] = data.target
    return frame


def _friedman(number: int) -> pd.DataFrame:
    make = {1: datasets.make_friedman1, 2: datasets.make_friedman2, 3: datasets.make_friedman3}
    noise = {1: 1.0, 2: 100.0, 3: 0.1}[number]
    X, y = make[number](n_samples=1200, noise=noise, random_state=number)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    frame["target"] = y
    return frame


def _blank(frame: pd.DataFrame, fraction: float, rng: np.random.Generator) -> pd.DataFrame:
    """Blank out `fraction` of the feature cells, at random."""
    features = [column for column in frame.columns if column != "target"]
    for column in features:
        hole = rng.random(len(frame)) < fraction
        frame.loc[hole, column] = np.nan
    return frame


def _binned(values: np.ndarray, names: list[str]) -> np.ndarray:
    """Text labels for `values` cut at their quantiles into len(names) bins."""
    edges = np.quantile(values, np.linspace(0, 1, len(names) + 1)[1:-1])
    return np.asarray(names, dtype=object)[np.searchsorted(edges, values)]


def _mixed_classification(classes: int, seed: int) -> pd.DataFrame:
    """make_classification with text columns made from informative ones, and 5% blanks."""
    rng = np.random.default_rng(seed)
    X, y = datasets.make_classification(
        n_samples=1500 if classes == 2 else 1200,
        n_features=12,
        n_informative=6,
        n_redundant=2,
        n_classes=classes,
        n_clusters_per_class=2,
        flip_y=0.03,
        random_state=seed,
    )
    frame = pd.DataFrame(X[:, 3:], columns=[f"num_{i}" for i in range(X.shape[1] - 3)])
    frame["colour"] = _binned(X[:, 0], ["red", "green", "blue", "amber"])
    frame["size"] = _binned(X[:, 1], ["xs", "s", "m", "l", "xl", "xxl"])
    # ~30 distinct values: a fine binning of an informative column, the labels shuffled so
    # that their order says nothing.
    codes = [f"code_{i:02d}" for i in rng.permutation(30)]
    frame["code"] = _binned(X[:, 2] + 0.3 * rng.normal(size=len(X)), codes)
    frame["noise_label"] = rng.choice(["u", "v", "w"], size=len(X)).astype(object)
    frame = _blank(frame, 0.05, rng)
    frame["target"] = np.asarray(["no", "yes"], dtype=object)[y] if classes == 2 else y
    return frame


def _sharp() -> pd.DataFrame:
    """A step-like target, sign(sin(8 x0)) + 0.1 noise, with five noise columns."""
    rng = np.random.default_rng(7)
    X = rng.uniform(-1, 1, size=(1200, 6))
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(6)])
    frame["target"] = np.sign(np.sin(8 * X[:, 0])) + 0.1 * rng.normal(size=len(X))
    return frame


def _wide() -> pd.DataFrame:
    """500 rows, 100 columns, 5 of them informative: a wide noisy classification."""
    X, y = datasets.make_classification(
        n_samples=500,
        n_features=100,
        n_informative=5,
        n_redundant=0,
        n_repeated=0,
        flip_y=0.05,
        class_sep=1.0,
        shuffle=True,
        random_state=11,
    )
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    frame["target"] = y
    return frame


def _prices() -> pd.DataFrame:
    """A made-up price table: area, rooms, a neighbourhood (20 names), age; blanks."""
    rng = np.random.default_rng(13)
    n = 1400
    places = [f"district_{chr(ord('a') + i)}" for i in range(20)]
    place_value = dict(zip(places, rng.normal(0, 0.35, size=len(places)), strict=True))
    area = rng.lognormal(4.3, 0.4, size=n)
    rooms = np.clip(np.round(area / 25 + rng.normal(0, 0.8, size=n)), 1, 8)
    place = rng.choice(places, size=n)
    age = rng.uniform(0, 80, size=n)
    heating = rng.choice(["gas", "electric", "heat pump", "oil"], size=n)
    log_price = (
        8.5
        + 0.9 * np.log(area)
        + 0.04 * rooms
        + np.array([place_value[p] for p in place])
        - 0.004 * age
        + 0.1 * (heating == "heat pump")
        + rng.normal(0, 0.15, size=n)
    )
    frame = pd.DataFrame(
        {
            "area": area.round(1),
            "rooms": rooms,
            "neighbourhood": place.astype(object),
            "age": age.round(0),
            "heating": heating.astype(object),
        }
    )
    frame = _blank(frame, 0.05, rng)
    frame["target"] = np.exp(log_price).round(-2) / 1000  # thousands
    return frame


TABLES: dict[str, Table] = {
    "breast_cancer": Table(
        "classification", lambda: _bundled(datasets.load_breast_cancer), "binary, 569 x 30"
    ),
    "wine": Table("classification", lambda: _bundled(datasets.load_wine), "3 classes, 178 x 13"),
    "iris": Table("classification", lambda: _bundled(datasets.load_iris), "3 classes, 150 x 4"),
    "digits": Table("classification", _digits, "10 classes, 1797 x 64 pixels"),
    "mixed_binary": Table(
        "classification",
        lambda: _mixed_classification(2, 3),
        "binary, 1500 x 13: 4 text columns (one with 30 values), 5% blanks",
    ),
    "mixed_multiclass": Table(
        "classification",
        lambda: _mixed_classification(3, 5),
        "3 classes, 1200 x 13: 4 text columns, 5% blanks",
    ),
    "wide_noisy": Table("classification", _wide, "binary, 500 x 100, 5 informative"),
    "diabetes": Table("regression", lambda: _bundled(datasets.load_diabetes), "442 x 10"),
    "friedman1": Table("regression", lambda: _friedman(1), "1200 x 10, noise 1"),
    "friedman2": Table("regression", lambda: _friedman(2), "1200 x 4, noise 100"),
    "friedman3": Table("regression", lambda: _friedman(3), "1200 x 4, noise 0.1"),
    "sharp_step": Table("regression", _sharp, "1200 x 6: sign(sin(8 x0)) + noise"),
    "prices": Table(
        "regression", _prices, "1400 x 5: 2 text columns (one with 20 values), 5% blanks"
    ),
}


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write a table as the benchmark's contenders read it: missing cells empty."""
    frame.to_csv(path, index=False, na_rep="")
