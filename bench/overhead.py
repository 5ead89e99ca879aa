"""Measure kiln's per-epoch overhead against a hand-written PyTorch loop.

What: the time of one training epoch through `kiln.Trainer.fit`, divided by the time of the same
epoch through the loop a careful user writes by hand, on a model so small (an MLP 32-64-64-10)
that the framework's own Python work is as visible as it ever gets. Also the time that
`import kiln` adds to `import torch`.

Why ratios, interleaved: absolute times depend on the machine and on whatever else it runs.
Every contender runs in this one process, one epoch each in turn (the order reversed every
other round, so that drift favours no one), and each round gives one ratio per row; the table
reports the median of those ratios. One thread (`torch.set_num_threads(1)`) keeps the kernels'
cost steady, so the ratio measures the loops around them.

The raw loop, the baseline, does per epoch::

    perm = torch.randperm(n, generator=g)
    for i in range(0, n, bs):
        idx = perm[i : i + bs]
        xb, yb = X.index_select(0, idx), Y.index_select(0, idx)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        losses.append(loss.detach())
    epoch_loss = float(torch.stack(losses).mean())

The DataLoader rows iterate `DataLoader(TensorDataset(X, Y), batch_size=bs, shuffle=True)`
instead, kiln included. The options rows run kiln with one option of the training loop each
(clipping, accumulation, bf16, budgets, the non-finite loss check), interleaved with their own
raw loop and with kiln's defaults, so that each option's cost reads as the difference from the
defaults row. Every contender trains its own model and Adam optimizer (lr 1e-3),
built from the same seed.

Run it with `make bench` (or `python bench/overhead.py`; about four minutes on two slow cores),
`--quick` for a small version that checks the script in seconds, and `--markdown PATH` to also
write the report to a file. Timings are only as quiet as the machine: the report says how busy
other processes kept it, and on a shared machine `nice -n -10` (as root) steadies them.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import kiln

SEED = 0
FEATURES, HIDDEN, CLASSES = 32, 64, 10
IMPORT_TARGET_SECONDS = 0.15

#: One epoch of training by one contender; each call trains one more epoch.
Epoch = Callable[[], None]


@dataclass(frozen=True)
class Config:
    """How much to measure."""

    samples: int
    rounds: int  # timed rounds of the in-memory groups (slicing, options)
    loader_rounds: int  # timed rounds of the slower DataLoader group
    warmup: int  # untimed epochs per contender before the first round
    import_runs: int  # fresh interpreters for the import time
    batch_sizes: tuple[int, ...] = (64, 256)


FULL = Config(samples=50_000, rounds=7, loader_rounds=5, warmup=2, import_runs=5)
QUICK = Config(samples=5_000, rounds=3, loader_rounds=2, warmup=1, import_runs=1)


@dataclass(frozen=True)
class Row:
    """One line of the table: `contender` timed against `baseline` in the same rounds."""

    label: str
    group: str
    contender: str
    baseline: str
    target: float | None  # None for a reference row


ROWS = (
    Row("kiln `fit` on `kiln.Data`, `progress=False`", "slicing", "kiln", "raw", 1.05),
    Row("kiln `fit`, live progress bar + accuracy", "slicing", "kiln_bar", "raw", 1.10),
    Row("kiln `fit` on a DataLoader vs raw loop on one", "loader", "kiln_dl", "raw_dl", 1.05),
    Row("raw loop on a DataLoader vs raw slicing loop (ref.)", "loader", "raw_dl", "raw", None),
    # The loop's options, each alone, against the same raw loop (which has none of them).
    Row("kiln `fit`, defaults (same rounds as the options)", "options", "kiln_o", "raw", 1.05),
    Row("kiln `fit`, loss check deferred (as on CUDA)", "options", "kiln_deferred", "raw", None),
    Row("kiln `fit`, `nonfinite='skip'`", "options", "kiln_skip", "raw", None),
    Row("kiln `fit`, `clip_norm=1.0`", "options", "kiln_clip", "raw", None),
    Row("kiln `fit`, `accumulate=4`", "options", "kiln_accumulate", "raw", None),
    Row("kiln `fit`, `max_steps` and `max_samples` set", "options", "kiln_budget", "raw", None),
    Row("kiln `fit`, `precision='bf16'` (CPU autocast)", "options", "kiln_bf16", "raw", None),
)
GROUPS = {
    "slicing": ("raw", "kiln", "kiln_bar"),
    "loader": ("raw", "raw_dl", "kiln_dl"),
    "options": (
        "raw",
        "kiln_o",
        "kiln_deferred",
        "kiln_skip",
        "kiln_clip",
        "kiln_accumulate",
        "kiln_budget",
        "kiln_bf16",
    ),
}


# ------------------------------------------------------------------------------------------
# The contenders


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


def raw_slicing(x: Tensor, y: Tensor, batch_size: int) -> Epoch:
    """Return the hand-written baseline: a random permutation, then one gather per batch."""
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
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
    trainer._steps.check_each_step = False

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


def contenders(x: Tensor, y: Tensor, batch_size: int) -> dict[str, Callable[[], Epoch]]:
    """Return a builder for each contender: a fresh model and optimizer per call."""
    return {
        "raw": lambda: raw_slicing(x, y, batch_size),
        "raw_dl": lambda: raw_loader(x, y, batch_size),
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
    }


# ------------------------------------------------------------------------------------------
# Measuring


def interleave(epochs: dict[str, Epoch], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Time one epoch of each contender per round, reversing the order every other round.

    Returns:
        The seconds of each timed epoch, by contender, in round order.
    """
    for _ in range(warmup):
        for epoch in epochs.values():
            epoch()
    times: dict[str, list[float]] = {name: [] for name in epochs}
    names = list(epochs)
    for round_idx in range(rounds):
        for name in names if round_idx % 2 == 0 else reversed(names):
            gc.collect()
            start = time.perf_counter()
            epochs[name]()
            times[name].append(time.perf_counter() - start)
    return times


def measure_overhead(config: Config) -> list[tuple[Row, int, list[float]]]:
    """Run every group at every batch size; return each row's per-round ratios."""
    generator = torch.Generator().manual_seed(SEED)
    X = torch.randn(config.samples, FEATURES, generator=generator)
    Y = torch.randint(0, CLASSES, (config.samples,), generator=generator)
    results = []
    for batch_size in config.batch_sizes:
        builders = contenders(X, Y, batch_size)
        for group, names in GROUPS.items():
            rounds = config.loader_rounds if group == "loader" else config.rounds
            print(f"  batch {batch_size}, {group} group: {rounds} rounds", file=sys.stderr)
            times = interleave({name: builders[name]() for name in names}, rounds, config.warmup)
            for row in ROWS:
                if row.group == group:
                    pairs = zip(times[row.contender], times[row.baseline], strict=True)
                    results.append((row, batch_size, [a / b for a, b in pairs]))
    return results


def measure_import(runs: int) -> float:
    """Return the median seconds `import kiln` adds after `import torch`, in fresh interpreters.

    Each run times `import torch`, then `import kiln`, inside a new Python process, so that
    interpreter start-up (and its noise) stays out of the figure.
    """
    code = (
        "import time; t0 = time.perf_counter(); import torch; t1 = time.perf_counter(); "
        "import kiln; print(time.perf_counter() - t1)"
    )
    added = []
    for _ in range(runs + (runs > 1)):  # a first run warms the disk cache; it is not counted
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        added.append(float(result.stdout))
    return statistics.median(added[-runs:])


def busy_seconds() -> tuple[float, float] | None:
    """Return the CPU seconds the whole machine, and this process, have been busy (Linux).

    Their difference over the run tells how much other processes competed for the CPU, which
    is what makes the ratios noisy. `None` where `/proc/stat` does not exist.
    """
    try:
        with open("/proc/stat") as stat:
            ticks = [int(value) for value in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    machine_busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # not idle
    own = os.times()
    return machine_busy, own.user + own.system + own.children_user + own.children_system


# ------------------------------------------------------------------------------------------
# Reporting


def machine() -> str:
    """Describe the machine: CPU model, cores, torch and Python versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        models = [
            line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
        ]
        cpu = models[0] if models else cpu
    return (
        f"{cpu}, {os.cpu_count()} cores (1 thread used), torch {torch.__version__}, "
        f"Python {platform.python_version()}, {platform.system()}"
    )


def verdict(value: float, target: float | None) -> str:
    """Return "pass", "FAIL", or "reference" for a row without a target."""
    if target is None:
        return "reference"
    return "pass" if value <= target else "FAIL"


def table(results: list[tuple[Row, int, list[float]]], import_seconds: float) -> str:
    """Return the results as a Markdown table."""
    lines = [
        "| Row | Batch size | Median ratio | Range (min-max) | Target | Result |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row, batch_size, ratios in results:
        median = statistics.median(ratios)
        target = "-" if row.target is None else f"<= {row.target:.2f}x"
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}x"
        lines.append(
            f"| {row.label} | {batch_size} | {median:.3f}x | {spread} | {target} "
            f"| {verdict(median, row.target)} |"
        )
    lines.append(
        f"| `import kiln` after `import torch` | - | +{import_seconds:.3f} s | - "
        f"| <= {IMPORT_TARGET_SECONDS:.2f} s | {verdict(import_seconds, IMPORT_TARGET_SECONDS)} |"
    )
    return "\n".join(lines)


def report(config: Config, body: str, command: str, seconds: float, others: float | None) -> str:
    """Return the full Markdown report: the table, the machine and how to reproduce it.

    Args:
        config: What was measured.
        body: The table.
        command: The command line that reproduces the run.
        seconds: How long the benchmark took.
        others: Cores other processes kept busy on average during the run, when known.
    """
    load = "" if others is None else f" Other processes kept {others:.2f} cores busy meanwhile."
    return (
        f"{body}\n\n"
        f"Machine: {machine()}.\n"
        f"Workload: {config.samples:,} samples; median of {config.rounds} interleaved rounds "
        f"({config.loader_rounds} for the DataLoader rows) after {config.warmup} warm-up "
        f"epoch(s). The benchmark took {seconds:.0f} s.{load}\n"
        f"Reproduce: `{command}` (the defaults are `make bench`)\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the Markdown report, and write it where `--markdown` says."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny version that takes seconds")
    parser.add_argument("--markdown", metavar="PATH", help="also write the report to PATH")
    parser.add_argument(
        "--rounds",
        type=int,
        metavar="N",
        help="timed rounds of every row (more on a noisy machine)",
    )
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    if args.rounds:
        config = replace(config, rounds=args.rounds, loader_rounds=args.rounds)
    torch.set_num_threads(1)
    started, busy_before = time.perf_counter(), busy_seconds()
    print("Timing epochs (stderr shows progress; the report follows)...", file=sys.stderr)
    results = measure_overhead(config)
    print("Timing imports...", file=sys.stderr)
    import_seconds = measure_import(config.import_runs)
    seconds, busy_after = time.perf_counter() - started, busy_seconds()
    others = None
    if busy_before is not None and busy_after is not None:
        machine_busy = busy_after[0] - busy_before[0]
        own = busy_after[1] - busy_before[1]
        others = max(machine_busy - own, 0.0) / seconds
    options = (" --quick" if args.quick else "") + (
        f" --rounds {args.rounds}" if args.rounds else ""
    )
    command = f"python bench/overhead.py{options}"
    text = report(config, table(results, import_seconds), command, seconds, others)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as file:
            file.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
