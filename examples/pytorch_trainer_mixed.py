"""PytorchTrainer's README (seed 002) redone with kiln: press the button on a mixed task.

The README's typical use, line for line, with `kiln.AutoTrainer` in place of `PytorchTrainer`::

    model = AutoTrainer(net_builder, [], device="cpu")
    model.train(dataset, name=name, batch_size=16, n_epochs=200, n_best_nets=5)
    model.load(name)
    model.predict_dataset(dataset)

on scikit-learn's diabetes data (442 patients, 10 features; no download), with two target
columns: the disease progression after a year (regression, 25 to 346) and whether it is above
200 (binary, about a quarter of the patients). What it shows:

- A `torch.utils.data.Dataset` subclass whose items are `(input, weight, target)`; the weight
  is a number per patient that gives each class of the binary column half of the total weight.
- The dataset has no `regression_flags` attribute, so the criterion guesses them from the
  targets (a column of only 0 and 1 is a classification: flags `[1, 0]`) and computes the
  scale of the regression column; the `MESSAGE:` lines say so, and a line per epoch reports.
- `{name}.pt` is written at each improvement of the validation score, and with
  `n_best_nets=5` the best epochs' weights are averaged into `{name}_avg.pt`. (`with_restarts`
  is off: the README advises `n_best_nets=1` with restarts, since averaging weights from
  different restarts can hurt.)
- `load(name)` on the model, `AutoTrainer.load(name, builder=...)` on the class;
  `predict_dataset` and `predict(x)` return the progression in its own units and a probability.
- To end training early, create the file `stop_{name}` in the working directory: the run
  finishes after the current epoch, and the files are written as usual.

Run `python examples/pytorch_trainer_mixed.py [OUTPUT_DIR]` (a temporary directory by
default): about ten seconds on two CPU cores.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_diabetes
from torch import Tensor, nn
from torch.utils.data import Dataset

import kiln
from kiln import AutoTrainer

HIGH = 200.0  # progression above this is "high"


class DiabetesDataset(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Items `(input, weight, target)`: 10 features, a weight, [progression, high]."""

    def __init__(self, inputs: Tensor, targets: Tensor, weights: Tensor) -> None:
        self.inputs, self.targets, self.weights = inputs, targets, weights

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.inputs[index], self.weights[index], self.targets[index]


def make_datasets() -> tuple[DiabetesDataset, DiabetesDataset]:
    """80% of the patients for training (the trainer holds out 10% of them), 20% for test."""
    data = load_diabetes()
    X = torch.tensor(data.data, dtype=torch.float32)
    progression = torch.tensor(data.target, dtype=torch.float32)
    Y = torch.stack([progression, (progression > HIGH).float()], 1)
    (X_train, Y_train), (X_test, Y_test) = kiln.split((X, Y), 0.8, 0.2, seed=0)
    mean, std = X_train.mean(0), X_train.std(0)
    X_train, X_test = (X_train - mean) / std, (X_test - mean) / std

    def balanced(high: Tensor) -> Tensor:
        share = high.mean()  # each class then carries half of the total weight
        return torch.where(high == 1, 0.5 / share, 0.5 / (1 - share))

    return (
        DiabetesDataset(X_train, Y_train, balanced(Y_train[:, 1])),
        DiabetesDataset(X_test, Y_test, torch.ones(len(X_test))),  # weights are not used here
    )


def net_builder() -> nn.Module:
    """A fresh network: 10 features in, [progression, high] out (a logit for the latter)."""
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 2))


def scores(predicted: np.ndarray, targets: Tensor) -> tuple[float, float]:
    """R2 of the progression, and balanced accuracy (mean recall of both classes) of `high`."""
    truth = targets.numpy()
    errors = predicted[:, 0] - truth[:, 0]
    r2 = 1 - (errors**2).sum() / ((truth[:, 0] - truth[:, 0].mean()) ** 2).sum()
    said_high, high = predicted[:, 1] > 0.5, truth[:, 1] == 1
    recalls = [(said_high[high]).mean(), (~said_high[~high]).mean()]
    return float(r2), float(np.mean(recalls))


def report(which: str, model: AutoTrainer, test_set: DiabetesDataset) -> None:
    """Print the test scores of the model's current weights."""
    r2, balanced_accuracy = scores(model.predict_dataset(test_set, batch_size=64), test_set.targets)
    print(f"{which}: test R2 (progression): {r2:.3f}")
    print(f"{which}: test balanced accuracy (progression > {HIGH:g}): {balanced_accuracy:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="where to write (default: a temporary directory)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a tiny network: one thread is as fast, and polite on shared cores
    kiln.seed_everything(0)
    train_set, test_set = make_datasets()

    with tempfile.TemporaryDirectory() as scratch:
        name = str(Path(args.out or scratch) / "diabetes_mixed")
        print(f"To stop early, create the file stop_{Path(name).name} in {Path.cwd()}.")
        model = AutoTrainer(net_builder, [], device="cpu")
        history = model.train(
            train_set, name=name, batch_size=16, n_epochs=200, n_best_nets=5, with_restarts=False
        )
        print(f"criterion: {model.criterion}")
        best = min(range(len(history)), key=history.val_score.__getitem__)
        print(
            f"trained {len(history)} epochs; best validation score "
            f"{history.val_score[best]:.3f} at epoch {history.epoch[best]}"
        )
        written = sorted(path.name for path in Path(name).parent.glob("*.pt"))
        print(f"files: {written}")

        model.load(name)  # the best epoch's weights (and the criterion's scale)
        report("best", model, test_set)
        model.load(f"{name}_avg")  # the average of the best epochs
        report("averaged", model, test_set)

        # On the class, `load` builds a new model from the file; a builder function is
        # passed again, since kiln never runs code named in a file.
        again = AutoTrainer.load(name, device="cpu", builder=net_builder)
        first = again.predict(test_set.inputs[:3])  # raw inputs, no dataset needed
        for (progression, probability), target in zip(
            first, test_set.targets[:3].tolist(), strict=True
        ):
            print(
                f"predicted progression {progression:6.1f} (true {target[0]:5.1f}), "
                f"P(high) {probability:.2f} (true {target[1]:.0f})"
            )


if __name__ == "__main__":
    main()
