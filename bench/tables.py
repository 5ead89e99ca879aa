"""`kiln fit` with no options against gradient boosting, RealMLP-TD and a linear model on tables.

On the development tables of `bench/dev_tables.py` (scikit-learn's bundled breast cancer, wine,
iris, digits and diabetes, and generated tables with text columns, missing cells, a step-like
target and a wide noisy table), over several seeded splits (80% train, 20% test, stratified for
classification; the same splits for every contender), this compares the test scores and the
process times of:

- `kiln`: the command `kiln fit train.csv --target target --out RUN`, no options; predictions
  afterwards by `kiln predict RUN test.csv -o pred.csv` (not timed).
- `lightgbm`, `xgboost`, `catboost`, `hgb` (scikit-learn's HistGradientBoosting), `realmlp`
  (pytabkit's RealMLP-TD) and `linear` (a standardised logistic or ridge regression), each at its
  documented defaults with `random_state` 0, run by this script as its own process
  (`--contender NAME`). Text columns become pandas `category` columns (categories from the
  training part); LightGBM uses them natively, XGBoost with `enable_categorical=True`, CatBoost as
  `cat_features` (missing text as the string "nan"), HistGradientBoosting with
  `categorical_features="from_dtype"`, RealMLP-TD as categorical columns (its numeric blanks
  filled with the training median: it refuses NaN). `linear` is median imputation + missing
  indicators + StandardScaler for numbers and most-frequent imputation + one-hot for text, into
  `LogisticRegression(max_iter=1000)` or `Ridge()`.

Every contender runs as a fresh process, one at a time, timed by the wall clock from the process's
start to the end of its training and saving (the model pickled; for kiln, the process's end), so
Python's start-up and imports count, as they do for a user. The scores are accuracy and log loss
(probabilities clipped to [1e-15, 1]) for classification, R2 and RMSE for regression. For each
(table, split, metric) a contender's normalised score is (score - worst) / (best - worst) over
the contenders that ran (1 when all are equal; log loss and RMSE inverted). The report gives per
task and metric the mean normalised score, the mean rank and the median process time; per table
the mean scores; the paired difference kiln minus each contender on the normalised score split by
split (mean, standard error, range, wins/ties/losses); and kiln's median time against CatBoost's.

Results are cached per (table, split, contender) in `bench/results/tables.json`, keyed by a hash
of the split's data, so an interrupted run loses little and `--only kiln` re-runs kiln alone.
A contender whose library is missing is skipped with a note. Run it with
`python bench/tables.py` (all tables, 3 splits: 20 to 40 minutes on two cores, RealMLP-TD and kiln
taking most of it), `--write-docs` to put the report into docs/benchmarks.md, `--quick` to check
the script on one small table and split.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs" / "benchmarks.md"
CACHE = HERE / "results" / "tables.json"
BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"
KILN = "kiln"
#: The contenders, and the module each needs (checked without importing it).
CONTENDERS: dict[str, str] = {
    KILN: "kiln",
    "lightgbm": "lightgbm",
    "xgboost": "xgboost",
    "catboost": "catboost",
    "hgb": "sklearn",
    "realmlp": "pytabkit",
    "linear": "sklearn",
}
METRICS = {"classification": ("accuracy", "log_loss"), "regression": ("r2", "rmse")}
LOWER_IS_BETTER = {"log_loss", "rmse"}
QUICK_TABLE = "iris"
TIE = 1e-9


# ---------------------------------------------------------------------------------------------
# The contenders' processes (`--contender NAME`): import only what the contender needs.


def _read(path: str, task: str) -> tuple[Any, Any]:
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

    frame = pd.read_csv(path, dtype={"target": str} if task == "classification" else None)
    return frame.drop(columns="target"), frame["target"]


def _categorical(train: Any, test: Any) -> tuple[Any, Any, list[str]]:
    """Text columns as pandas categories, their categories taken from the training part."""
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

    text = [c for c in train.columns if not pd.api.types.is_numeric_dtype(train[c])]
    train, test = train.copy(), test.copy()
    for column in text:
        dtype = pd.CategoricalDtype(sorted(train[column].dropna().unique()))
        train[column] = train[column].astype(dtype)
        seen = test[column].where(test[column].isin(dtype.categories))  # unseen: missing
        test[column] = seen.astype(object).astype(dtype)
    return train, test, text


def _model(name: str, task: str, x: Any, text: list[str], seed: int) -> tuple[Any, dict[str, Any]]:
    """The contender's estimator at its defaults, and extra arguments for its `fit`."""
    classify = task == "classification"
    if name == "lightgbm":
        lightgbm = importlib.import_module("lightgbm")

        kind = lightgbm.LGBMClassifier if classify else lightgbm.LGBMRegressor
        return kind(random_state=seed, verbose=-1), {}
    if name == "xgboost":
        xgboost = importlib.import_module("xgboost")

        xgb = xgboost.XGBClassifier if classify else xgboost.XGBRegressor
        return xgb(enable_categorical=True, random_state=seed), {}
    if name == "catboost":
        catboost = importlib.import_module("catboost")

        cat = catboost.CatBoostClassifier if classify else catboost.CatBoostRegressor
        return cat(random_seed=seed, verbose=0, cat_features=text or None), {}
    if name == "hgb":
        from sklearn import ensemble

        hgb = (
            ensemble.HistGradientBoostingClassifier
            if classify
            else ensemble.HistGradientBoostingRegressor
        )
        return hgb(categorical_features="from_dtype", random_state=seed), {}
    if name == "realmlp":
        pytabkit = importlib.import_module("pytabkit")

        mlp = pytabkit.RealMLP_TD_Classifier if classify else pytabkit.RealMLP_TD_Regressor
        return mlp(random_state=seed), {}
    if name == "linear":
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        numbers = [column for column in x.columns if column not in text]
        prepare = ColumnTransformer(
            [
                ("numbers", make_pipeline(SimpleImputer(strategy="median", add_indicator=True),
                                          StandardScaler()), numbers),
                ("text", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                       OneHotEncoder(handle_unknown="ignore")), text),
            ]
        )  # fmt: skip
        head = LogisticRegression(max_iter=1000) if classify else Ridge()
        return make_pipeline(prepare, head), {}
    raise ValueError(f"unknown contender {name!r}")


def _prepare(name: str, train: Any, test: Any, text: list[str]) -> tuple[Any, Any]:
    """The contender-specific encoding the module docstring lists (none for most)."""
    if name == "catboost":
        for column in text:  # CatBoost wants strings, no missing values
            train[column] = train[column].astype(object).fillna("nan").astype(str)
            test[column] = test[column].astype(object).fillna("nan").astype(str)
    if name == "realmlp":  # pytabkit refuses NaN in numeric columns
        for column in train.columns:
            if column not in text:
                median = train[column].median()
                train[column] = train[column].fillna(median)
                test[column] = test[column].fillna(median)
    if name == "linear":  # scikit-learn's imputer and encoder want object columns
        for column in text:
            train[column] = train[column].astype(object).where(train[column].notna(), np.nan)
            test[column] = test[column].astype(object).where(test[column].notna(), np.nan)
    return train, test


def run_contender(name: str, task: str, train_path: str, test_path: str, pred_path: str) -> None:
    """Fit one contender, save it, note the time, and write its test predictions."""
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

    X, y = _read(train_path, task)
    X_test, _ = _read(test_path, task)
    X, X_test, text = _categorical(X, X_test)
    X, X_test = _prepare(name, X, X_test, text)
    model, fit_args = _model(name, task, X, text, seed=0)
    labels = sorted(y.unique()) if task == "classification" else []
    target = y.map({label: i for i, label in enumerate(labels)}).to_numpy() if labels else y
    model.fit(X, np.asarray(target, dtype=np.int64 if labels else np.float64), **fit_args)
    with open(pred_path + ".model", "wb") as file:
        pickle.dump(model, file)
    Path(pred_path + ".time").write_text(repr(time.time()))  # the end of training and saving
    if labels:
        probabilities = np.asarray(model.predict_proba(X_test), dtype=np.float64)
        classes = [int(c) for c in getattr(model, "classes_", range(len(labels)))]
        out = {f"proba_{labels[c]}": probabilities[:, i] for i, c in enumerate(classes)}
    else:
        out = {"prediction": np.asarray(model.predict(X_test), dtype=np.float64).reshape(-1)}
    pd.DataFrame(out).to_csv(pred_path, index=False)


# ---------------------------------------------------------------------------------------------
# Scores, normalised scores, ranks and paired differences: pure functions.


def scores(
    task: str, labels: Sequence[str], truth: Sequence[Any], predicted: Any
) -> dict[str, float]:
    """Accuracy and log loss (probabilities per label in), or R2 and RMSE (predictions in)."""
    if task == "classification":
        probabilities = np.asarray(predicted, dtype=np.float64)
        index = {label: i for i, label in enumerate(labels)}
        rows = np.arange(len(truth))
        columns = np.array([index.get(str(label), -1) for label in truth])
        picked = np.where(columns >= 0, probabilities[rows, np.maximum(columns, 0)], 0.0)
        accuracy = float(np.mean(probabilities.argmax(1) == columns))
        log_loss = float(-np.mean(np.log(np.clip(picked, 1e-15, 1.0))))
        return {"accuracy": accuracy, "log_loss": log_loss}
    y = np.asarray(truth, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64).reshape(-1)
    squares = float(np.sum((y - p) ** 2))
    return {
        "r2": 1 - squares / float(np.sum((y - y.mean()) ** 2)),
        "rmse": math.sqrt(squares / len(y)),
    }


def normalised(values: dict[str, float], lower_is_better: bool) -> dict[str, float]:
    """(score - worst) / (best - worst) per contender; 1 for all when they are all equal.

    >>> normalised({"a": 1.0, "b": 0.5, "c": 0.75}, lower_is_better=False)
    {'a': 1.0, 'b': 0.0, 'c': 0.5}
    >>> normalised({"a": 2.0, "b": 1.0}, lower_is_better=True)
    {'a': 0.0, 'b': 1.0}
    """
    sign = -1.0 if lower_is_better else 1.0
    signed = {name: sign * value for name, value in values.items()}
    best, worst = max(signed.values()), min(signed.values())
    if best - worst <= TIE * max(1.0, abs(best)):
        return dict.fromkeys(values, 1.0)
    return {name: (value - worst) / (best - worst) for name, value in signed.items()}


def ranks(values: dict[str, float], lower_is_better: bool) -> dict[str, float]:
    """Rank 1 for the best; tied contenders share the mean of their ranks.

    >>> ranks({"a": 0.9, "b": 0.8, "c": 0.9}, lower_is_better=False)
    {'a': 1.5, 'b': 3.0, 'c': 1.5}
    """
    sign = -1.0 if lower_is_better else 1.0
    out = {}
    for name, value in values.items():
        better = sum(sign * other > sign * value + TIE for other in values.values())
        equal = sum(abs(other - value) <= TIE for other in values.values())
        out[name] = better + (equal + 1) / 2
    return out


@dataclass(frozen=True)
class Paired:
    """kiln minus a contender, split by split: the mean, its standard error, range and tally."""

    mean: float
    error: float
    low: float
    high: float
    wins: int
    ties: int
    losses: int
    count: int


def paired(kiln: Sequence[float], other: Sequence[float]) -> Paired:
    """The paired differences kiln minus other (higher is better for kiln).

    >>> result = paired([1.0, 0.5, 0.0], [0.5, 0.5, 1.0])
    >>> result.low, result.high, result.wins, result.ties, result.losses
    (-1.0, 0.5, 1, 1, 1)
    """
    differences = [a - b for a, b in zip(kiln, other, strict=True)]
    wins = sum(d > TIE for d in differences)
    losses = sum(d < -TIE for d in differences)
    error = math.nan
    if len(differences) > 1:
        error = statistics.stdev(differences) / math.sqrt(len(differences))
    return Paired(
        statistics.fmean(differences),
        error,
        min(differences),
        max(differences),
        wins,
        len(differences) - wins - losses,
        losses,
        len(differences),
    )


# ---------------------------------------------------------------------------------------------
# Running the comparison.


def available(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """The contenders whose library is installed, and notes on those skipped."""
    ready, notes = [], []
    for name in names:
        if name == KILN:
            found = (Path(sys.executable).parent / "kiln").exists()
        else:
            found = importlib.util.find_spec(CONTENDERS[name]) is not None
        if found:
            ready.append(name)
        else:
            notes.append(f"{name} skipped: {CONTENDERS[name]} is not installed here.")
    return ready, notes


def split_table(frame: Any, task: str, seed: int) -> tuple[Any, Any]:
    """The seeded 80/20 split, stratified for classification."""
    from sklearn.model_selection import train_test_split

    stratify = frame["target"].astype(str) if task == "classification" else None
    train, test = train_test_split(frame, test_size=0.2, random_state=seed, stratify=stratify)
    return train, test


def _timed(command: list[str], log: Path, timeout: float) -> tuple[float, int]:
    """Run `command` in the split's folder (CatBoost writes catboost_info/ there); its start."""
    with log.open("w") as out:
        started = time.time()
        process = subprocess.run(
            command,
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
        return started, process.returncode


def run_one(name: str, task: str, folder: Path, timeout: float) -> tuple[float, Any]:
    """Run contender `name` on the split in `folder`: its process time and test predictions."""
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

    train, test, pred = folder / "train.csv", folder / "test.csv", folder / f"{name}.pred.csv"
    log = folder / f"{name}.log"
    if name == KILN:
        kiln = str(Path(sys.executable).parent / "kiln")
        run = folder / "kiln_run"
        fit = [kiln, "fit", str(train), "--target", "target", "--out", str(run)]
        started, code = _timed(fit, log, timeout)
        seconds = time.time() - started
        if code == 0:
            predict = [kiln, "predict", str(run), str(test), "-o", str(pred)]
            _, code = _timed(predict, folder / "kiln_predict.log", timeout)
    else:
        command = [sys.executable, str(HERE / "tables.py"), "--contender", name, "--task", task]
        command += ["--train", str(train), "--test", str(test), "--pred", str(pred)]
        started, code = _timed(command, log, timeout)
        if code == 0:
            seconds = float(Path(str(pred) + ".time").read_text()) - started
    if code != 0:
        tail = log.read_text()[-1500:] if log.exists() else ""
        raise RuntimeError(f"{name} exited with {code}:\n{tail}")
    predictions = pd.read_csv(pred)
    return seconds, predictions


def _probabilities(name: str, predictions: Any, labels: Sequence[str]) -> np.ndarray:
    """The (rows, labels) probabilities from a contender's prediction file."""
    prefix = "target_proba_" if name == KILN else "proba_"
    found = {c[len(prefix) :]: c for c in predictions.columns if c.startswith(prefix)}
    columns = []
    for label in labels:
        column = found.get(label)
        if column is None:  # kiln may write whole-number labels as 1.0
            column = next((c for k, c in found.items() if _same_label(k, label)), None)
        columns.append(predictions[column] if column is not None else np.zeros(len(predictions)))
    return np.column_stack(columns).astype(np.float64)


def _same_label(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return False


def load_cache(path: Path) -> dict[str, Any]:
    if path.exists():
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded
    return {}


def save_cache(path: Path, cache: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(cache, indent=1, sort_keys=True))
    os.replace(temporary, path)


def measure(
    tables: Sequence[str],
    splits: int,
    contenders: Sequence[str],
    rerun: Sequence[str],
    cache_path: Path,
    timeout: float,
) -> tuple[dict[str, Any], list[str]]:
    """Run (or take from the cache) every contender on every split; the results and failures.

    The loop runs split by split over all tables, so an interrupted run leaves whole splits.
    """
    from dev_tables import TABLES, write_csv

    cache = load_cache(cache_path)
    failures: list[str] = []
    frames = {name: TABLES[name].build() for name in tables}
    for split in range(splits):
        for table in tables:
            task = TABLES[table].task
            train, test = split_table(frames[table], task, split)
            with tempfile.TemporaryDirectory(prefix=f"tables_{table}_") as name:
                folder = Path(name)
                write_csv(train, folder / "train.csv")
                write_csv(test, folder / "test.csv")
                digest = hashlib.sha256(
                    (folder / "train.csv").read_bytes() + (folder / "test.csv").read_bytes()
                ).hexdigest()[:16]
                labels = sorted(train["target"].astype(str).unique())
                for contender in contenders:
                    key = f"{table}|{split}|{contender}"
                    entry = cache.get(key)
                    if entry and entry["data"] == digest and contender not in rerun:
                        continue
                    if rerun and contender not in rerun and entry is None:
                        continue  # --only: run just those; the others come from the cache
                    print(f"  {table} split {split}: {contender} ...", end=" ", flush=True)
                    try:
                        seconds, predictions = run_one(contender, task, folder, timeout)
                    except (RuntimeError, subprocess.TimeoutExpired, OSError) as error:
                        print("FAILED")
                        failures.append(f"{key}: {str(error).strip()[-600:]}")
                        cache.pop(key, None)
                        save_cache(cache_path, cache)
                        continue
                    if task == "classification":
                        predicted: Any = _probabilities(contender, predictions, labels)
                    else:
                        column = "target" if contender == KILN else "prediction"
                        predicted = predictions[column].to_numpy()
                    truth = (
                        test["target"].astype(str)
                        if labels and task == "classification"
                        else test["target"]
                    )
                    cache[key] = {
                        "data": digest,
                        "rows": len(train) + len(test),
                        "seconds": seconds,
                        "scores": scores(task, labels, list(truth), predicted),
                    }
                    save_cache(cache_path, cache)
                    print(f"{seconds:.1f} s")
    return cache, failures


# ---------------------------------------------------------------------------------------------
# The report.


def _cell(value: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


Cells = dict[tuple[str, int], dict[str, Any]]
#: Per metric, per contender, per (table, split): a normalised score, or a rank.
PerCell = dict[str, dict[str, dict[tuple[str, int], float]]]


def _cells(
    cache: dict[str, Any], tables: Sequence[str], splits: int, names: Sequence[str]
) -> Cells:
    """Per (table, split): the results of the contenders that ran there."""
    cells: Cells = {}
    for table in tables:
        for split in range(splits):
            keys = {name: f"{table}|{split}|{name}" for name in names}
            ran = {name: cache[key] for name, key in keys.items() if key in cache}
            if ran:
                cells[table, split] = ran
    return cells


def _normalise(cells: Cells, metrics: Sequence[str]) -> tuple[PerCell, PerCell]:
    """The normalised scores and the ranks of every contender in every cell."""
    norm: PerCell = {metric: {} for metric in metrics}
    rank: PerCell = {metric: {} for metric in metrics}
    for metric in metrics:
        lower = metric in LOWER_IS_BETTER
        for where, ran in cells.items():
            values = {name: float(result["scores"][metric]) for name, result in ran.items()}
            for name, value in normalised(values, lower).items():
                norm[metric].setdefault(name, {})[where] = value
            for name, value in ranks(values, lower).items():
                rank[metric].setdefault(name, {})[where] = value
    return norm, rank


def _summary(cells: Cells, metrics: Sequence[str], names: Sequence[str]) -> list[str]:
    norm, rank = _normalise(cells, metrics)
    columns = " | ".join(f"{m} mean normalised | {m} mean rank" for m in metrics)
    lines = [f"| contender | {columns} | median time, s | runs |"]
    lines.append("|---|" + "---:|" * (2 * len(metrics) + 2))
    for name in names:
        times = [ran[name]["seconds"] for ran in cells.values() if name in ran]
        if not times:
            continue
        row = [name]
        for metric in metrics:
            row.append(_cell(statistics.fmean(norm[metric][name].values())))
            row.append(_cell(statistics.fmean(rank[metric][name].values()), 2))
        row += [f"{statistics.median(times):.1f}", str(len(times))]
        lines.append("| " + " | ".join(row) + " |")
    if KILN not in norm[metrics[0]]:
        return lines
    places = []
    for metric in metrics:
        means = {name: statistics.fmean(values.values()) for name, values in norm[metric].items()}
        place = 1 + sum(value > means[KILN] + TIE for value in means.values())
        places.append(f"{metric} {place} of {len(means)}")
    verdict = "holds" if all(p.split()[1] == "1" for p in places) else "missed"
    lines += ["", f"kiln's place on the mean normalised score: {', '.join(places)} "
              f"(target: first on each; {verdict})."]  # fmt: skip
    lines += ["", "| kiln minus, normalised score | metric | mean | standard error | range | "
              "kiln wins/ties/losses |", "|---|---|---:|---:|---:|:---:|"]  # fmt: skip
    for name in names:
        for metric in metrics:
            mine, theirs = norm[metric][KILN], norm[metric].get(name, {})
            both = [where for where in mine if where in theirs]
            if name == KILN or not both:
                continue
            p = paired([mine[w] for w in both], [theirs[w] for w in both])
            lines.append(
                f"| {name} | {metric} | {p.mean:+.3f} | {_cell(p.error)} | "
                f"{p.low:+.2f} to {p.high:+.2f} | {p.wins}/{p.ties}/{p.losses} |"
            )
    return lines


def _per_table(cells: Cells, metrics: Sequence[str], names: Sequence[str]) -> list[str]:
    lines = ["| table | rows | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(names)]
    for table in dict.fromkeys(where[0] for where in cells):
        here = [ran for where, ran in cells.items() if where[0] == table]
        row = [table, str(next(iter(here[0].values()))["rows"])]
        for name in names:
            got = [ran[name]["scores"] for ran in here if name in ran]
            means = [_cell(statistics.fmean(g[m] for g in got)) for m in metrics]
            row.append(" / ".join(means) if got else "-")
        lines.append("| " + " | ".join(row) + " |")
    return lines + ["", f"(per table: mean {' / '.join(metrics)} over the splits)"]


def report(
    cache: dict[str, Any], tables: Sequence[str], splits: int, names: Sequence[str]
) -> list[str]:
    """The report's markdown lines, from the cached results of the selected runs."""
    from dev_tables import TABLES

    lines: list[str] = []
    for task, metrics in METRICS.items():
        chosen = [table for table in tables if TABLES[table].task == task]
        cells = _cells(cache, chosen, splits, names)
        if not cells:
            continue
        lines += [f"**{task.capitalize()}** ({len(chosen)} tables, {len(cells)} table-splits)", ""]
        lines += _summary(cells, metrics, names) + [""]
        lines += _per_table(cells, metrics, names) + [""]
    return lines + timing(cache, tables, splits)


def timing(cache: dict[str, Any], tables: Sequence[str], splits: int) -> list[str]:
    """Median process times, kiln against CatBoost: on the table nearest 1,500 rows, and all."""

    def times(name: str, chosen: Sequence[str]) -> list[float]:
        keys = [f"{t}|{s}|{name}" for t in chosen for s in range(splits)]
        return [cache[k]["seconds"] for k in keys if k in cache]

    rows = {t: cache[f"{t}|0|{KILN}"]["rows"] for t in tables if f"{t}|0|{KILN}" in cache}
    if not rows:
        return []
    near = min(rows, key=lambda t: (abs(rows[t] - 1500), t))
    lines = []
    for label, chosen in ((f"{near} ({rows[near]} rows)", [near]), ("all tables", list(tables))):
        mine, theirs = times(KILN, chosen), times("catboost", chosen)
        if mine:
            median = statistics.median(mine)
            line = f"kiln median process time on {label}: {median:.1f} s"
            if theirs:
                line += f"; catboost {statistics.median(theirs):.1f} s"
            if chosen == [near]:
                met = median <= 5 and (not theirs or median <= statistics.median(theirs))
                line += (
                    f" (target: at most 5 s and at most catboost's; {'holds' if met else 'missed'})"
                )
            lines.append(line + ".")
    return lines


#: The section's fixed part, above the results, in docs/benchmarks.md.
SECTION = """## `kiln fit` against gradient boosting and RealMLP on tables (bench/tables.py)

The target: `kiln fit data.csv --target y` with no options ranks first among LightGBM, XGBoost,
CatBoost, scikit-learn's HistGradientBoosting, RealMLP-TD (pytabkit) and a standardised linear
model on the mean normalised score, for classification (accuracy and log loss) and regression
(R2 and RMSE) separately; and the median `kiln fit` process on a table of about 1,500 rows takes
at most 5 s from start to saved run, never more than CatBoost's defaults in the same run. The
boosting libraries and pytabkit are benchmark dependencies (`bench/requirements-tables.txt`),
never kiln's; a contender whose library is missing is skipped with a note.

```bash
make bench-tables                               # installs the contenders into .venv, runs it all
python bench/tables.py                          # all tables, 3 splits, every contender installed
python bench/tables.py --only kiln --write-docs # re-run kiln alone, the rest from the cache
python bench/tables.py --tables iris,prices --contenders kiln,catboost --splits 5
python bench/tables.py --quick                  # one small table, one split: checks the script
```

### What is measured

- **Tables** (`bench/dev_tables.py`, nothing downloaded): scikit-learn's bundled breast cancer,
  wine, iris, digits (64 pixel columns) and diabetes; generated with fixed seeds: Friedman #1,
  #2 and #3 (1,200 rows, with noise), a binary and a 3-class `make_classification` table with
  four text columns (binned informative columns, one with 30 shuffled labels, and a random one)
  and 5% blank cells, a step-like regression (sign(sin(8 x0)) + noise, five noise columns), a
  wide noisy binary table (500 x 100, 5 informative) and a made-up price table (area, rooms, a
  20-value neighbourhood, heating, age; 5% blanks). Each is written as CSV, target `target`.
- **Splits**: 80% train, 20% test, seeds 0, 1, 2, stratified for classification; the same CSV
  files for every contender.
- **Contenders**, each at its documented defaults with seed 0: `kiln` is the command
  `kiln fit train.csv --target target --out RUN` (predictions afterwards by `kiln predict`,
  untimed); the others run as `python bench/tables.py --contender NAME ...`, which reads the CSV
  with pandas and turns text columns into `category` columns (categories from the training
  part): LightGBM and XGBoost (`enable_categorical=True`) use them natively, CatBoost gets them
  as `cat_features` (blank text as "nan"), HistGradientBoosting `categorical_features=
  "from_dtype"`, RealMLP-TD (`RealMLP_TD_Classifier()` / `RealMLP_TD_Regressor()`) as
  categorical columns with numeric blanks filled by the training median (it refuses NaN);
  `linear` is median imputation + missing indicators + `StandardScaler` for numbers,
  most-frequent imputation + `OneHotEncoder(handle_unknown="ignore")` for text, into
  `LogisticRegression(max_iter=1000)` or `Ridge()`.
- **Time**: each contender is a fresh process, run one at a time, timed by the wall clock from
  its start to the end of training and saving (the others pickle their model; kiln's process
  ends after saving its run), so Python's start-up and imports count.
- **Scores**: accuracy and log loss (probabilities clipped to [1e-15, 1]), R2 and RMSE. For each
  (table, split, metric), a contender's normalised score is (score - worst) / (best - worst) over
  the contenders that ran (log loss and RMSE inverted; 1 when all are equal), and its rank is 1
  for the best. The paired difference is kiln's normalised score minus the contender's, table
  split by table split; its standard error (standard deviation / sqrt(n)) treats the splits as
  independent, which they are not quite.

### Results
"""


def versions() -> str:
    """The versions of Python and of the contenders' libraries installed here."""
    from importlib import metadata

    found = [f"Python {sys.version.split()[0]}"]
    for package in ("kiln", "torch", "scikit-learn", "lightgbm", "xgboost", "catboost", "pytabkit"):
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found) + f"; {os.cpu_count()} cores."


def write_docs(lines: Sequence[str], command: str) -> None:
    """Replace what is between the markers in docs/benchmarks.md (append them if missing)."""
    day = time.strftime("%Y-%m-%d")
    head = f"`{command}` on {day}. {versions()}"
    body = "\n".join([BEGIN, SECTION, head, "", *lines, END])
    text = DOCS.read_text()
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        text = before + body + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + body + "\n"
    DOCS.write_text(text)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--splits", type=int, default=3, help="seeded splits per table")
    parser.add_argument("--tables", help="comma-separated tables (default: all)")
    parser.add_argument("--contenders", help="comma-separated contenders (default: all)")
    parser.add_argument("--only", help="re-run just these contenders; the rest from the cache")
    parser.add_argument("--cache", type=Path, help=f"results file (default {CACHE})")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per process")
    parser.add_argument("--quick", action="store_true", help="one small table, one split")
    parser.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.md")
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--train", help=argparse.SUPPRESS)
    parser.add_argument("--test", help=argparse.SUPPRESS)
    parser.add_argument("--pred", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.contender:
        run_contender(options.contender, options.task, options.train, options.test, options.pred)
        return
    sys.path.insert(0, str(HERE))
    from dev_tables import TABLES

    tables = options.tables.split(",") if options.tables else list(TABLES)
    names = options.contenders.split(",") if options.contenders else list(CONTENDERS)
    rerun = options.only.split(",") if options.only else []
    for name in [*tables, *names, *rerun]:
        if name not in TABLES and name not in CONTENDERS:
            parser.error(f"unknown table or contender {name!r}")
    splits, cache_path = options.splits, options.cache or CACHE
    temporary = None
    if options.quick:
        tables, splits = [QUICK_TABLE], 1
        if options.cache is None:
            temporary = tempfile.TemporaryDirectory()
            cache_path = Path(temporary.name) / "tables.json"
    names = list(dict.fromkeys([*names, *rerun]))
    ready, notes = available(names)
    for note in notes:
        print(note)
    started = time.perf_counter()
    cache, failures = measure(tables, splits, ready, rerun, cache_path, options.timeout)
    lines = report(cache, tables, splits, ready)
    print("\n".join(["", *lines]))
    for note in notes + [f"FAILED {failure}" for failure in failures]:
        print(note)  # again below the report
    print(
        f"\n{len(tables)} table(s), {splits} split(s); took {time.perf_counter() - started:.0f} s."
    )
    if options.write_docs:
        command = "python bench/tables.py" + (f" --splits {splits}" if splits != 3 else "")
        write_docs(lines, command)
        print(f"Wrote the report into {DOCS}.")
    if temporary is not None:
        temporary.cleanup()


if __name__ == "__main__":
    main()
