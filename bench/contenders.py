"""The contenders of `bench/overhead.py`: the hand-written loops and kiln, one epoch per call.

Each builder returns an `Epoch`, a function that trains one more epoch of its own model and Adam
optimizer (lr 1e-3), built from the same seed as every other contender's; `contenders` names
them all. The raw loop (`raw_slicing`) is the loop a careful user writes: a random permutation,
one gather per batch, the epoch's loss read once at its end.

What lives here: the models, data and loops. What does not: the timing, the rows and the report
(`overhead.py`, `common.py`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import kiln
from kiln.callbacks import CSVLogger, LRMonitor, MLflowLogger, TensorBoard, TextLog

SEED = 0
FEATURES, HIDDEN, CLASSES = 32, 64, 10

#: One epoch of training by one contender; each call trains one more epoch.
Epoch = Callable[[], None]


def make_model() -> nn.Module:
    """Return the MLP 32-64-64-10, with the same initial weights at every call."""
    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Linear(FEATURES, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, CLASSES),
    )


def make_loader(x: Tensor, y: Tensor, batch_size: int) -> DataLoader[tuple[Tensor, ...]]:
    """Return the shuffling DataLoader over `(x, y)`, its order drawn from `SEED`."""
    generator = torch.Generator().manual_seed(SEED)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=generator)


def in_memory(x: Tensor, y: Tensor, batch_size: int) -> kiln.Data:
    """Return kiln's in-memory batches over `(x, y)`, its order drawn from `SEED`."""
    return kiln.Data((x, y), batch_size=batch_size, shuffle=True, seed=SEED)


def raw_slicing(x: Tensor, y: Tensor, batch_size: int, **adam: bool) -> Epoch:
    """Return the hand-written baseline: a random permutation, then one gather per batch.

    `adam` selects torch's implementation: `foreach=True` (on the CPU, the same update bit for
    bit, as kiln builds for `optimizer="adam"`) or `fused=True` (the same formula, rounded
    differently in the last bits); none, torch's default Adam, is the baseline.
    """
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, **adam)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(SEED)
    n = len(x)

    def epoch() -> None:
        perm = torch.randperm(n, generator=generator)
        losses = []
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        float(torch.stack(losses).mean())  # the epoch's loss, read once

    return epoch


def raw_loader(x: Tensor, y: Tensor, batch_size: int) -> Epoch:
    """Return the same hand-written loop, iterating a DataLoader over a TensorDataset."""
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = make_loader(x, y, batch_size)

    def epoch() -> None:
        losses = []
        for xb, yb in batches:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        float(torch.stack(losses).mean())

    return epoch


def kiln_fit(data: object, fit_options: dict[str, Any] | None = None, **options: Any) -> Epoch:
    """Return one epoch of `kiln.Trainer.fit` on `data`: a `fit(epochs=1)` call per epoch.

    `options` go to the `Trainer`, `fit_options` to each `fit` call.
    """
    trainer = kiln.Trainer(
        make_model(), loss="cross_entropy", optimizer="adam", lr=1e-3, device="cpu", **options
    )

    def epoch() -> None:
        trainer.fit(data, epochs=1, **(fit_options or {}))

    return epoch


def kiln_deferred(data: object) -> Epoch:
    """Return kiln with the loss checked at the end of the epoch, as on an accelerator.

    On the CPU every batch's loss is read before its backward (a read, not a wait); this row
    shows what that read costs, by turning the trainer's per-batch check off.
    """
    trainer = kiln.Trainer(
        make_model(), loss="cross_entropy", optimizer="adam", lr=1e-3, device="cpu", progress=False
    )
    trainer._stepper.check_each_batch = False  # an internal switch, for this row only

    def epoch() -> None:
        trainer.fit(data, epochs=1)

    return epoch


def kiln_with_bar(x: Tensor, y: Tensor, batch_size: int) -> Epoch:
    """Return kiln's worst default case: the live tqdm bar forced on, plus accuracy.

    Off a terminal `ProgressBar()` prints only a summary line per epoch; `bar=True` forces the
    live bar, which tqdm writes to standard error. Both go to `os.devnull` here.
    """
    devnull = open(os.devnull, "w")  # noqa: SIM115  # lives as long as the benchmark
    bar = kiln.callbacks.ProgressBar(bar=True, file=devnull)
    fit = kiln_fit(
        in_memory(x, y, batch_size), metrics=["accuracy"], callbacks=[bar], progress=True
    )

    def epoch() -> None:
        with contextlib.redirect_stderr(devnull):
            fit()

    return epoch


def kiln_logging(data: kiln.Data, logger: Callable[[], object]) -> Epoch:
    """Return kiln with one logger alone, built by `logger`."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 hides its file store
    return kiln_fit(data, callbacks=[logger()], progress=False)


def contenders(
    x: Tensor, y: Tensor, batch_size: int, folder: Path
) -> dict[str, Callable[[], Epoch]]:
    """Return a builder for each contender: a fresh model and optimizer per call.

    The loggers write under `folder`, in a directory of their own per batch size.
    """
    logs = folder / str(batch_size)

    def logging(logger: Callable[[], object]) -> Callable[[], Epoch]:
        return lambda: kiln_logging(in_memory(x, y, batch_size), logger)

    return {
        "raw": lambda: raw_slicing(x, y, batch_size),
        "raw_dl": lambda: raw_loader(x, y, batch_size),
        "raw_foreach": lambda: raw_slicing(x, y, batch_size, foreach=True),
        "raw_fused": lambda: raw_slicing(x, y, batch_size, fused=True),
        "kiln": lambda: kiln_fit(in_memory(x, y, batch_size), progress=False),
        "kiln_bar": lambda: kiln_with_bar(x, y, batch_size),
        "kiln_dl": lambda: kiln_fit(make_loader(x, y, batch_size), progress=False),
        "kiln_o": lambda: kiln_fit(in_memory(x, y, batch_size), progress=False),
        "kiln_deferred": lambda: kiln_deferred(in_memory(x, y, batch_size)),
        "kiln_skip": lambda: kiln_fit(
            in_memory(x, y, batch_size), progress=False, nonfinite="skip"
        ),
        "kiln_clip": lambda: kiln_fit(in_memory(x, y, batch_size), progress=False, clip_norm=1.0),
        "kiln_accumulate": lambda: kiln_fit(
            in_memory(x, y, batch_size), progress=False, accumulate=4
        ),
        "kiln_budget": lambda: kiln_fit(
            in_memory(x, y, batch_size),
            {"max_steps": 10**12, "max_samples": 10**15},
            progress=False,
        ),
        "kiln_bf16": lambda: kiln_fit(
            in_memory(x, y, batch_size), progress=False, precision="bf16"
        ),
        "kiln_l": lambda: kiln_fit(in_memory(x, y, batch_size), progress=False),
        "kiln_metrics": lambda: kiln_fit(
            in_memory(x, y, batch_size), progress=False, metrics=["accuracy", "f1"]
        ),
        "kiln_csv": logging(lambda: CSVLogger(logs / "log.csv")),
        "kiln_text": logging(lambda: TextLog(logs / "log.txt")),
        "kiln_tb": logging(lambda: TensorBoard(logs / "tensorboard")),
        "kiln_lr": logging(LRMonitor),
        "kiln_mlflow": logging(lambda: MLflowLogger(tracking_uri=(logs / "mlruns").as_uri())),
    }
