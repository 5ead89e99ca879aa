"""`kiln.presets.fit_table` with its input scaling against the same MLP on raw inputs.

`fit_table(X, Y)` trains the auto preset (PytorchTrainer's `AutoTrainer` recipe, unchanged) on
an in-memory table. Its network is a `ScaledMLP`: the 64 x 64 MLP behind the scaling that
`kiln fit` gives numeric columns (median, quartile distance, smooth clip). This script trains
both on the all-numeric development tables of `bench/dev_tables.py` (breast cancer, wine,
digits, diabetes, Friedman #1 and #2), two seeded 80/20 splits each (`tables.split_table`), and
prints the test scores, so the effect of the scaling can be checked:

    python bench/fit_table.py               # both networks, 6 tables, 2 splits (about 1 minute)
    python bench/fit_table.py --splits 3
    python bench/fit_table.py --quick       # wine, one split: checks the script

`raw MLP` is what `fit_table` trained before: `kiln.MLP` on the inputs as they are. The
boosting libraries are not needed; scikit-learn and pandas are (`bench/requirements-tables.txt`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import dev_tables
import numpy as np
import torch

import tables
from kiln.losses import MixedCriterion
from kiln.modules import MLP
from kiln.presets import AutoTrainer, fit_table

TABLES = ("breast_cancer", "wine", "digits", "diabetes", "friedman1", "friedman2")


def _encode(train, test, task):  # type: ignore[no-untyped-def]
    """Inputs, targets (class indices or values), the kinds and the labels of one split."""
    x = train.drop(columns=["target"]).to_numpy(np.float32)
    x_test = test.drop(columns=["target"]).to_numpy(np.float32)
    if task == "regression":
        y = train["target"].to_numpy(np.float32)[:, None]
        return x, x_test, y, ["regression"], []
    labels = sorted(set(train["target"].tolist()))
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[v] for v in train["target"]], np.float32)[:, None]
    kinds = ["binary"] if len(labels) == 2 else [len(labels)]
    return x, x_test, y, kinds, labels


def _train(network: str, x, y, kinds, directory: Path) -> AutoTrainer:  # type: ignore[no-untyped-def]
    inputs, targets = torch.tensor(x), torch.tensor(y)
    torch.manual_seed(0)
    if network == "fit_table":
        return fit_table(inputs, targets, kinds=kinds, name=directory / "net", verbose=False,
                         device="cpu")  # fmt: skip
    criterion = MixedCriterion((inputs, targets), kinds=kinds, verbose=False)
    width = sum(1 if isinstance(kind, str) else kind for kind in criterion.kinds)
    auto = AutoTrainer(MLP, {"input": x.shape[1], "hidden": [64, 64], "output": width},
                       device="cpu")  # fmt: skip
    auto.train((inputs, targets), name=str(directory / "net"), criterion=criterion, verbose=False)
    return auto


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="wine, one split")
    args = parser.parse_args()
    names, splits = (("wine",), 1) if args.quick else (TABLES, args.splits)
    torch.set_num_threads(1)
    print("| table | split | metric | raw MLP | fit_table | seconds (raw / fit_table) |")
    print("|---|---:|---|---:|---:|---:|")
    for name in names:
        table = dev_tables.TABLES[name]
        frame = table.build()
        for split in range(splits):
            train, test = tables.split_table(frame, table.task, split)
            x, x_test, y, kinds, labels = _encode(train, test, table.task)
            results, seconds = {}, {}
            for network in ("raw", "fit_table"):
                with tempfile.TemporaryDirectory() as directory:
                    start = time.perf_counter()
                    auto = _train(network, x, y, kinds, Path(directory))
                    seconds[network] = time.perf_counter() - start
                    predicted = auto.predict(torch.tensor(x_test))
                if table.task == "regression":
                    results[network] = tables.scores("regression", [], test["target"], predicted)
                    continue
                if len(labels) == 2:
                    predicted = np.column_stack([1 - predicted[:, 0], predicted[:, 0]])
                truth = [str(v) for v in test["target"]]
                results[network] = tables.scores(
                    "classification", [str(label) for label in labels], truth, predicted
                )
            for metric in results["raw"]:
                raw, scaled = results["raw"][metric], results["fit_table"][metric]
                timing = f"{seconds['raw']:.1f} / {seconds['fit_table']:.1f}"
                print(f"| {name} | {split} | {metric} | {raw:.4g} | {scaled:.4g} | {timing} |")


if __name__ == "__main__":
    main()
