"""Press the button: PytorchTrainer's preset on scikit-learn's breast cancer data (binary).

`kiln.presets.AutoTrainer` takes a network builder and its arguments, splits the training set
into training and validation parts (the same way on every run), reads from the 0/1 targets that
the column is a binary classification (BCE on logits, a sigmoid at prediction time), trains
with RAdam + Lookahead, golden-ratio LR decay, restarts and early stopping, and writes the best
network to `{name}.pt`. Loading it back and predicting gives probabilities.

The data (569 tumours, 30 features) ships with scikit-learn. Run
`python examples/auto_breast_cancer.py`: about ten seconds on two CPU cores.
"""

import tempfile
from pathlib import Path

import torch
from sklearn.datasets import load_breast_cancer
from torch.utils.data import TensorDataset

import kiln
from kiln.presets import AutoTrainer


def main() -> None:
    kiln.seed_everything(0)
    torch.set_num_threads(1)  # a tiny model: one thread is as fast, and polite on shared cores
    data = load_breast_cancer()
    X = torch.tensor(data.data, dtype=torch.float32)
    Y = torch.tensor(data.target, dtype=torch.float32).unsqueeze(1)  # (N, 1): one 0/1 column
    (X_train, Y_train), (X_test, Y_test) = kiln.split((X, Y), 0.8, 0.2, seed=0, stratify=Y[:, 0])
    # Features span 0.001 to 4000: standardise them with the training part's statistics.
    mean, std = X_train.mean(0), X_train.std(0)
    X_train, X_test = (X_train - mean) / std, (X_test - mean) / std

    name = str(Path(tempfile.mkdtemp()) / "breast_cancer")
    auto = AutoTrainer(kiln.MLP, {"input": 30, "hidden": [32], "output": 1, "drop": 0.1}, "cpu")
    # The README's defaults (batch_size=16, lr=1e-3, ...), with room for early stopping to act.
    history = auto.train(TensorDataset(X_train, Y_train), name=name, n_epochs=200, verbose=False)
    print(f"trained {len(history)} epochs; best validation score {min(history.val_score):.4f}")

    auto.load(name)  # the best epoch's network, saved to {name}.pt
    probabilities = auto.predict(X_test)[:, 0]
    accuracy = float(((probabilities > 0.5) == (Y_test[:, 0].numpy() == 1)).mean())
    print(f"test accuracy: {100 * accuracy:.2f}%")


if __name__ == "__main__":
    main()
