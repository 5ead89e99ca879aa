"""The auto preset, untuned, against linear models and a tuned MLP on two small tables.

On scikit-learn's breast cancer (binary) and diabetes (regression) data, over several fixed
splits (80% train, 20% test by `kiln.split(seed=s)` for s = 0, 1, ..., stratified for the binary
task; features standardised with the training part's statistics; the same splits for every
contender), this compares test scores and wall times of:

- `auto`: `kiln.presets.AutoTrainer` with the README's defaults (batch 16, lr 1e-3, 90/10
  validation split, restarts, best-1), a `kiln.MLP(F, [32], 1, drop=0.1)`, and room for early
  stopping (`n_epochs=N_EPOCHS`, the same for both tasks). Nothing tuned.
- `linear`: scikit-learn's `LogisticRegression` / `LinearRegression` (defaults; max_iter 1000).
- `mlp`: the same network trained by a plain torch loop (Adam, batch 32, BCE-with-logits / MSE
  on the standardised target), its learning rate and epoch count chosen by a grid search on a
  90/10 validation split of the training part, then retrained on the whole training part.

The neural contenders run with several seeds on every split; a split's score is their mean. The
report gives per task the mean test score over the splits (and their range), the paired
difference auto minus each baseline split by split (mean, range, and how many splits auto wins,
ties and loses), and wall times. `python bench/auto.py` runs the published configuration
(10 splits, 2 seeds: 4 to 5 minutes on two shared CPU cores); `--quick` checks the script in
seconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LinearRegression, LogisticRegression
from torch.utils.data import TensorDataset

import kiln
from kiln.presets import AutoTrainer

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
#: What a contender returns: test predictions, and the epochs of its final training (if any).
Run = tuple[np.ndarray, int | None]

TASKS = {"binary": "breast cancer", "regression": "diabetes"}
#: The preset's epoch budget: room for its early stopping to end the run (same for both tasks).
N_EPOCHS = 200
#: The tuned MLP's grid: learning rates, and epoch counts (each a prefix of the longest run).
GRID_LRS = (1e-3, 3e-3, 1e-2)
GRID_EPOCHS = (50, 100, 200)


@dataclass(frozen=True)
class Config:
    """What one run of the benchmark does."""

    splits: int
    seeds: int
    n_epochs: int = N_EPOCHS
    grid_lrs: Sequence[float] = GRID_LRS
    grid_epochs: Sequence[int] = GRID_EPOCHS


def load(task: str, split_seed: int) -> Split:
    """The task's standardised train and test parts for one split."""
    data = load_breast_cancer() if task == "binary" else load_diabetes()
    X = torch.tensor(data.data, dtype=torch.float32)
    Y = torch.tensor(data.target, dtype=torch.float32).unsqueeze(1)
    stratify = Y[:, 0] if task == "binary" else None
    (X_train, Y_train), (X_test, Y_test) = kiln.split(
        (X, Y), 0.8, 0.2, seed=split_seed, stratify=stratify
    )
    mean, std = X_train.mean(0), X_train.std(0)
    return (X_train - mean) / std, Y_train, (X_test - mean) / std, Y_test


def score(task: str, predicted: np.ndarray, targets: torch.Tensor) -> float:
    """Accuracy for the binary task (probabilities in), R2 for the regression: higher is better."""
    y = targets[:, 0].numpy().astype(np.float64)
    p = np.asarray(predicted, dtype=np.float64).reshape(-1)
    if task == "binary":
        return float(((p > 0.5) == (y == 1)).mean())
    return 1 - float(((p - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def run_auto(task: str, data: Split, seed: int, config: Config) -> Run:
    X_train, Y_train, X_test, _ = data
    kiln.seed_everything(seed)
    net_args = {"input": X_train.shape[1], "hidden": [32], "output": 1, "drop": 0.1}
    auto = AutoTrainer(kiln.MLP, net_args, device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        name = str(Path(folder) / task)
        auto.train(TensorDataset(X_train, Y_train), name=name, n_epochs=config.n_epochs,
                   verbose=False)  # fmt: skip
        epochs = len(auto.history["val_score"]) if auto.history is not None else 0
        return auto.load(name).predict(X_test), epochs


def run_linear(task: str, data: Split, seed: int, config: Config) -> Run:
    X_train, Y_train, X_test, _ = data
    if task == "binary":
        model = LogisticRegression(max_iter=1000).fit(X_train.numpy(), Y_train[:, 0].numpy())
        return model.predict_proba(X_test.numpy())[:, 1], None
    model = LinearRegression().fit(X_train.numpy(), Y_train[:, 0].numpy())
    return model.predict(X_test.numpy()), None


def plain_mlp(
    task: str,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    epochs: Sequence[int],
    seed: int,
    at_epoch: Callable[[int, Callable[[torch.Tensor], np.ndarray]], None],
) -> None:
    """Train the MLP with a plain loop; after each epoch count in `epochs`, call `at_epoch`.

    `at_epoch(count, predict)` receives a function from inputs to predictions. Evaluating in
    eval mode draws no random numbers, so the model seen at 50 epochs of a 200-epoch run is
    exactly the one a 50-epoch run ends with: one run serves every epoch count of the grid.
    """
    torch.manual_seed(seed)
    net = kiln.MLP(x.shape[1], [32], 1, drop=0.1)
    center, scale = (0.0, 1.0) if task == "binary" else (float(y.mean()), float(y.std()))
    target = (y - center) / scale
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = F.binary_cross_entropy_with_logits if task == "binary" else F.mse_loss

    def predict(inputs: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            out = net(inputs)
        return np.asarray(out.sigmoid() if task == "binary" else out * scale + center)

    for epoch in range(1, max(epochs) + 1):
        net.train()
        order = torch.randperm(len(x))
        for start in range(0, len(x), 32):
            rows = order[start : start + 32]
            optimizer.zero_grad(set_to_none=True)
            loss: torch.Tensor = loss_fn(net(x[rows]), target[rows])
            loss.backward()
            optimizer.step()
        if epoch in epochs:
            net.eval()
            at_epoch(epoch, predict)


def run_mlp(task: str, data: Split, seed: int, config: Config) -> Run:
    X_train, Y_train, X_test, _ = data
    count = int(len(X_train) * 0.9)
    order = torch.randperm(len(X_train), generator=torch.Generator().manual_seed(42))
    fit_rows, val_rows = order[:count], order[count:]
    validation: dict[tuple[float, int], float] = {}
    for lr in config.grid_lrs:

        def record(
            epochs: int, predict: Callable[[torch.Tensor], np.ndarray], lr: float = lr
        ) -> None:
            validation[lr, epochs] = score(task, predict(X_train[val_rows]), Y_train[val_rows])

        plain_mlp(task, X_train[fit_rows], Y_train[fit_rows], lr, config.grid_epochs, seed, record)
    lr, epochs = max(validation, key=lambda point: validation[point])  # the first best on ties
    test: list[np.ndarray] = []
    plain_mlp(task, X_train, Y_train, lr, [epochs], seed, lambda _, p: test.append(p(X_test)))
    return test[0], epochs


CONTENDERS: dict[str, Callable[[str, Split, int, Config], Run]] = {
    "auto (untuned)": run_auto,
    "linear": run_linear,
    "mlp (tuned, plain loop)": run_mlp,
}
AUTO, LINEAR, MLP = CONTENDERS


@dataclass
class Result:
    """One contender on one task: its scores, times and epochs.

    `scores` holds one value per split (the mean over seeds); `times` and `epochs` one per run
    (the epochs of its final training; none for the linear models).
    """

    scores: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)


def measure(task: str, config: Config) -> dict[str, Result]:
    """Run every contender on every split of `task`, the neural ones with every seed."""
    results = {label: Result() for label in CONTENDERS}
    for split_seed in range(config.splits):
        data = load(task, split_seed)
        for label, run in CONTENDERS.items():
            seeds = [0] if run is run_linear else list(range(config.seeds))  # deterministic
            per_seed = []
            for seed in seeds:
                started = time.perf_counter()
                predicted, epochs = run(task, data, seed, config)
                results[label].times.append(time.perf_counter() - started)
                if epochs is not None:
                    results[label].epochs.append(epochs)
                per_seed.append(score(task, predicted, data[3]))
            results[label].scores.append(statistics.fmean(per_seed))
    return results


def shown(task: str, value: float, signed: bool = False) -> str:
    """A score (or a difference of scores) as the report writes it."""
    if task == "binary":
        return f"{100 * value:{'+' if signed else ''}.2f}%"
    return f"{value:{'+' if signed else ''}.3f}"


def spread(task: str, values: Sequence[float], signed: bool = False) -> str:
    """`mean (min to max)` of some scores or differences."""
    mean = statistics.fmean(values)
    if len(values) == 1:
        return shown(task, mean, signed)
    low, high = shown(task, min(values), signed), shown(task, max(values), signed)
    return f"{shown(task, mean, signed)} ({low} to {high})"


def paired(auto: Sequence[float], baseline: Sequence[float]) -> tuple[list[float], str]:
    """Auto minus baseline on each split, and `wins/ties/losses` of auto over the splits."""
    differences = [a - b for a, b in zip(auto, baseline, strict=True)]
    wins = sum(d > 1e-12 for d in differences)
    losses = sum(d < -1e-12 for d in differences)
    return differences, f"{wins}/{len(differences) - wins - losses}/{losses}"


def report(config: Config, measured: dict[str, dict[str, Result]]) -> list[str]:
    """The report's lines: the scores, the paired differences, the per-split scores."""
    metric = {"binary": "accuracy", "regression": "R2"}
    lines = [
        "| task | contender | mean test score over splits (range) | wall time per run, s "
        "(range) | runs | epochs trained (range) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for task, results in measured.items():
        for label, result in results.items():
            times = f"{statistics.fmean(result.times):.2f} ({min(result.times):.2f} to "
            times += f"{max(result.times):.2f})"
            epochs = "-"
            if result.epochs:
                epochs = f"{statistics.fmean(result.epochs):.0f} ({min(result.epochs)} to "
                epochs += f"{max(result.epochs)})"
            lines.append(
                f"| {TASKS[task]} | {label} | {metric[task]} {spread(task, result.scores)} | "
                f"{times} | {len(result.times)} | {epochs} |"
            )
    lines += [
        "",
        "| task | auto minus | mean paired difference (range) | standard error | auto "
        "wins/ties/losses | target (mean >= 0) |",
        "|---|---|---:|---:|:---:|---|",
    ]
    for task, results in measured.items():
        for label in (LINEAR, MLP):
            differences, tally = paired(results[AUTO].scores, results[label].scores)
            verdict = "holds" if statistics.fmean(differences) >= 0 else "missed"
            error = "-"
            if len(differences) > 1:
                error = shown(task, statistics.stdev(differences) / len(differences) ** 0.5)
            lines.append(
                f"| {TASKS[task]} | {label} | {spread(task, differences, signed=True)} | {error} "
                f"| {tally} | {verdict} |"
            )
    lines += ["", "| task | split | " + " | ".join(CONTENDERS) + " |", "|---|---:|---:|---:|---:|"]
    for task, results in measured.items():
        for split_seed in range(config.splits):
            cells = [shown(task, result.scores[split_seed]) for result in results.values()]
            lines.append(f"| {TASKS[task]} | {split_seed} | " + " | ".join(cells) + " |")
    stopped = [
        f"{TASKS[task]} {sum(e < config.n_epochs for e in results[AUTO].epochs)} of "
        f"{len(results[AUTO].epochs)}"
        for task, results in measured.items()
    ]
    lines += ["", f"auto runs ended by early stopping before n_epochs: {', '.join(stopped)}."]
    return lines


def warm_up() -> None:
    """One tiny untimed preset run: torch's one-time imports are charged to no contender."""
    x = torch.randn(40, 3)
    run_auto("regression", (x, x[:, :1], x, x[:, :1]), 0, Config(splits=1, seeds=1, n_epochs=1))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--splits", type=int, default=10, help="fixed splits, seeds 0..N-1")
    parser.add_argument("--seeds", type=int, default=2, help="seeds of the neural contenders")
    parser.add_argument(
        "--quick", action="store_true", help="a few epochs and a 1x2 grid: checks the script"
    )
    options = parser.parse_args(argv)
    if options.splits < 1 or options.seeds < 1:
        parser.error(f"--splits and --seeds must be >= 1; received {options.splits}, "
                     f"{options.seeds}.")  # fmt: skip
    config = Config(options.splits, options.seeds)
    if options.quick:
        config = Config(options.splits, options.seeds, 3, (1e-2,), (2, 4))
    torch.set_num_threads(1)
    warm_up()
    started = time.perf_counter()
    measured = {task: measure(task, config) for task in TASKS}
    for line in report(config, measured):
        print(line)
    print(
        f"\n{config.splits} split(s), {config.seeds} seed(s) per neural contender, preset "
        f"n_epochs={config.n_epochs}, one thread; took {time.perf_counter() - started:.0f} s."
    )
    command = " ".join(
        ["python bench/auto.py"]
        + ["--quick"] * options.quick
        + [f"--splits {options.splits}", f"--seeds {options.seeds}"]
    )
    print(f"Reproduce: `{command}`")


if __name__ == "__main__":
    main()
