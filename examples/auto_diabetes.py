"""Press the button: PytorchTrainer's preset on scikit-learn's diabetes data (regression).

The target (disease progression after a year, 25 to 346) is a regression column: the auto
criterion standardises it for training (MSE on the scaled target) and un-scales predictions,
so the network never sees numbers in the hundreds and `predict` answers in the target's units.
The logged `score` is the square root of the unscaled loss: here an RMSE in those units.

The data (442 patients, 10 features) ships with scikit-learn. Run
`python examples/auto_diabetes.py`: about ten seconds on two CPU cores.
"""

import tempfile
from pathlib import Path

import torch
from sklearn.datasets import load_diabetes
from torch.utils.data import TensorDataset

import kiln
from kiln.presets import AutoTrainer


def main() -> None:
    kiln.seed_everything(0)
    torch.set_num_threads(1)  # a tiny model: one thread is as fast, and polite on shared cores
    data = load_diabetes()
    X = torch.tensor(data.data, dtype=torch.float32)
    Y = torch.tensor(data.target, dtype=torch.float32).unsqueeze(1)
    (X_train, Y_train), (X_test, Y_test) = kiln.split((X, Y), 0.8, 0.2, seed=0)
    mean, std = X_train.mean(0), X_train.std(0)
    X_train, X_test = (X_train - mean) / std, (X_test - mean) / std

    name = str(Path(tempfile.mkdtemp()) / "diabetes")
    auto = AutoTrainer(kiln.MLP, {"input": 10, "hidden": [32], "output": 1, "drop": 0.1}, "cpu")
    history = auto.train(TensorDataset(X_train, Y_train), name=name, n_epochs=200)
    print(f"trained {len(history)} epochs; best validation RMSE {min(history.val_score):.2f}")

    auto.load(name)
    predicted = torch.from_numpy(auto.predict(X_test))
    rmse = float(((predicted - Y_test) ** 2).mean().sqrt())
    r2 = 1 - float(((predicted - Y_test) ** 2).sum() / ((Y_test - Y_test.mean()) ** 2).sum())
    print(f"test RMSE: {rmse:.2f}")
    print(f"test R2: {r2:.3f}")


if __name__ == "__main__":
    main()
