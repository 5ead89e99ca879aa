"""The auto preset, untuned, against linear models and a hand-tuned MLP on two small tables.

On scikit-learn's breast cancer (binary) and diabetes (regression) data, with fixed splits (80%
train, 20% test by `kiln.split(seed=0)`, stratified for the binary task; features standardised
with the training part's statistics), this compares test scores and wall times of:

- `auto`: `kiln.presets.AutoTrainer` with the README's defaults (batch 16, lr 1e-3, 90/10
  validation split, restarts, best-1), a `kiln.MLP(F, [32], 1, drop=0.1)`, and room for early
  stopping (`n_epochs=200`). Nothing tuned.
- `linear`: scikit-learn's `LogisticRegression` / `LinearRegression` (defaults; max_iter 1000).
- `mlp`: the same network trained by a plain torch loop (Adam, BCE-with-logits / MSE on the
  standardised target), its learning rate and epoch count chosen by a grid search on the same
  90/10 validation split (what tuning by hand does, done by the script).

Neural contenders run with seeds 0, 1 and 2; the table shows the mean and the range. Run
`python bench/auto.py` (about two minutes on two CPU cores); `--seeds 1` for a quick look.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LinearRegression, LogisticRegression
from torch.utils.data import TensorDataset

import kiln
from kiln.presets import AutoTrainer

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def load(task: str) -> Split:
    """The task's standardised train and test parts."""
    data = load_breast_cancer() if task == "binary" else load_diabetes()
    X = torch.tensor(data.data, dtype=torch.float32)
    Y = torch.tensor(data.target, dtype=torch.float32).unsqueeze(1)
    stratify = Y[:, 0] if task == "binary" else None
    (X_train, Y_train), (X_test, Y_test) = kiln.split((X, Y), 0.8, 0.2, seed=0, stratify=stratify)
    mean, std = X_train.mean(0), X_train.std(0)
    return (X_train - mean) / std, Y_train, (X_test - mean) / std, Y_test


def scores(task: str, predicted: np.ndarray, targets: torch.Tensor) -> dict[str, float]:
    """Accuracy for the binary task (probabilities in), R2 and RMSE for the regression."""
    y = targets[:, 0].numpy()
    p = np.asarray(predicted).reshape(-1)
    if task == "binary":
        return {"accuracy": float(((p > 0.5) == (y == 1)).mean())}
    rmse = float(np.sqrt(((p - y) ** 2).mean()))
    return {"r2": 1 - float(((p - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()), "rmse": rmse}


def run_auto(task: str, data: Split, seed: int) -> np.ndarray:
    X_train, Y_train, X_test, _ = data
    kiln.seed_everything(seed)
    net_args = {"input": X_train.shape[1], "hidden": [32], "output": 1, "drop": 0.1}
    auto = AutoTrainer(kiln.MLP, net_args, device="cpu")
    name = str(Path(tempfile.mkdtemp()) / task)
    auto.train(TensorDataset(X_train, Y_train), name=name, n_epochs=200, verbose=False)
    return auto.load(name).predict(X_test)  # type: ignore[no-any-return]


def run_linear(task: str, data: Split, seed: int) -> np.ndarray:
    X_train, Y_train, X_test, _ = data
    if task == "binary":
        model = LogisticRegression(max_iter=1000).fit(X_train.numpy(), Y_train[:, 0].numpy())
        return model.predict_proba(X_test.numpy())[:, 1]  # type: ignore[no-any-return]
    model = LinearRegression().fit(X_train.numpy(), Y_train[:, 0].numpy())
    return model.predict(X_test.numpy())  # type: ignore[no-any-return]


def plain_mlp(
    task: str, x: torch.Tensor, y: torch.Tensor, lr: float, epochs: int, seed: int
) -> Callable[[torch.Tensor], np.ndarray]:
    """Train the MLP with a plain loop; return a function from inputs to predictions."""
    torch.manual_seed(seed)
    net = kiln.MLP(x.shape[1], [32], 1, drop=0.1)
    center, scale = (0.0, 1.0) if task == "binary" else (float(y.mean()), float(y.std()))
    target = (y - center) / scale
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = F.binary_cross_entropy_with_logits if task == "binary" else F.mse_loss
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(x))
        for start in range(0, len(x), 32):
            rows = order[start : start + 32]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(x[rows]), target[rows]).backward()
            optimizer.step()
    net.eval()

    def predict(inputs: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            out = net(inputs)
        return (out.sigmoid() if task == "binary" else out * scale + center).numpy()

    return predict


def run_mlp(task: str, data: Split, seed: int) -> np.ndarray:
    X_train, Y_train, X_test, _ = data
    count = int(len(X_train) * 0.9)
    order = torch.randperm(len(X_train), generator=torch.Generator().manual_seed(42))
    fit_rows, val_rows = order[:count], order[count:]

    def validation_error(lr: float, epochs: int) -> float:
        predict = plain_mlp(task, X_train[fit_rows], Y_train[fit_rows], lr, epochs, seed)
        result = scores(task, predict(X_train[val_rows]), Y_train[val_rows])
        return -result["accuracy"] if task == "binary" else result["rmse"]

    grid = list(itertools.product([1e-3, 3e-3, 1e-2], [50, 100, 200]))
    lr, epochs = min(grid, key=lambda point: validation_error(*point))
    return plain_mlp(task, X_train, Y_train, lr, epochs, seed)(X_test)


CONTENDERS: dict[str, Callable[[str, Split, int], np.ndarray]] = {
    "auto (untuned)": run_auto,
    "linear": run_linear,
    "mlp (tuned, plain loop)": run_mlp,
}


def summarise(values: list[float], digits: int) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1 or max(values) == min(values):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the neural contenders")
    options = parser.parse_args()
    torch.set_num_threads(1)
    print("| task | contender | test score | wall time (s) |")
    print("|---|---|---|---|")
    for task in ("binary", "regression"):
        data = load(task)
        for label, run in CONTENDERS.items():
            seeds = [0] if run is run_linear else list(range(options.seeds))
            results: dict[str, list[float]] = {}
            times = []
            for seed in seeds:
                started = time.perf_counter()
                predicted = run(task, data, seed)
                times.append(time.perf_counter() - started)
                for key, value in scores(task, predicted, data[3]).items():
                    results.setdefault(key, []).append(value)
            shown: list[Any] = (
                [f"accuracy {summarise([100 * v for v in results['accuracy']], 2)}%"]
                if task == "binary"
                else [f"R2 {summarise(results['r2'], 3)}, RMSE {summarise(results['rmse'], 1)}"]
            )
            name = "breast cancer" if task == "binary" else "diabetes"
            print(f"| {name} | {label} | {shown[0]} | {summarise(times, 2)} |", flush=True)


if __name__ == "__main__":
    main()
