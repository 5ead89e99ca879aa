"""Press the button on a mixed task: one regression and one binary column, with weights.

The network predicts two columns of scikit-learn's diabetes data at once: the disease
progression (regression) and whether it is high, above 140 (binary). The auto criterion reads
the kinds from the targets (a column of only 0 and 1 is a classification), applies MSE on the
standardised first column and BCE on the logits of the second, and `predict` returns the
progression in its own units and a probability. Items are `(input, weight, target)`: the
weights, one per output column, balance the two classes of the binary column (a weight vector
is not normalised, so it can carry class balance and per-sample importance at once).

Run `python examples/auto_mixed.py`: about ten seconds on two CPU cores.
"""

import tempfile
from pathlib import Path

import torch
from sklearn.datasets import load_diabetes
from torch.utils.data import TensorDataset

import kiln
from kiln.presets import AutoTrainer

HIGH = 140.0


def main() -> None:
    kiln.seed_everything(0)
    torch.set_num_threads(1)  # a tiny model: one thread is as fast, and polite on shared cores
    data = load_diabetes()
    X = torch.tensor(data.data, dtype=torch.float32)
    progression = torch.tensor(data.target, dtype=torch.float32)
    Y = torch.stack([progression, (progression > HIGH).float()], 1)
    (X_train, Y_train), (X_test, Y_test) = kiln.split((X, Y), 0.8, 0.2, seed=0)
    mean, std = X_train.mean(0), X_train.std(0)
    X_train, X_test = (X_train - mean) / std, (X_test - mean) / std

    # Per-output weights: 1 for the regression column; for the binary one, each class weighs
    # half of the total, whatever its frequency.
    positive = Y_train[:, 1].mean()
    balance = torch.where(Y_train[:, 1] == 1, 0.5 / positive, 0.5 / (1 - positive))
    W_train = torch.stack([torch.ones(len(Y_train)), balance], 1)

    name = str(Path(tempfile.mkdtemp()) / "mixed")
    auto = AutoTrainer(kiln.MLP, {"input": 10, "hidden": [32], "output": 2, "drop": 0.1}, "cpu")
    history = auto.train(
        TensorDataset(X_train, W_train, Y_train), name=name, n_epochs=200, verbose=False
    )
    print(f"criterion: {auto.criterion}")
    print(f"trained {len(history)} epochs; best validation score {min(history.val_score):.3f}")

    auto.load(name)
    predicted = torch.from_numpy(auto.predict(X_test))
    errors = predicted[:, 0] - Y_test[:, 0]
    r2 = 1 - float((errors**2).sum() / ((Y_test[:, 0] - Y_test[:, 0].mean()) ** 2).sum())
    accuracy = float(((predicted[:, 1] > 0.5) == (Y_test[:, 1] == 1)).float().mean())
    print(f"test R2 (progression): {r2:.3f}")
    print(f"test accuracy (progression > {HIGH:g}): {100 * accuracy:.2f}%")


if __name__ == "__main__":
    main()
