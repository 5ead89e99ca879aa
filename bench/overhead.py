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

kiln's optimizer named "adam" is torch's foreach Adam (on the CPU, the same update bit for bit
as the default Adam the raw loop uses; faster where foreach pays), and kiln's core and live-bar
rows have stricter targets at batch 64 (0.85x and 0.90x). The raw loop with `foreach=True` Adam
is a reference row, and so is the loop with `fused=True` Adam (the same formula, but its last
bits differ from the default's, so kiln does not build it by itself). One more line times the
fixed cost of a warm `fit(epochs=1)` call on a single batch, in milliseconds over the raw
loop's epoch on that batch (a notebook user calls `fit` often).

The DataLoader rows iterate `DataLoader(TensorDataset(X, Y), batch_size=bs, shuffle=True)`
instead, kiln included. The options rows run kiln with one option of the training loop each
(clipping, accumulation, bf16, budgets, the non-finite loss check), interleaved with their own
raw loop and with kiln's defaults, so that each option's cost reads as the difference from the
defaults row. The logging rows do the same with the metrics accuracy and F1 (also timed against
kiln without metrics) and with each logger alone, writing under a temporary directory; a logger
whose package is missing is left out, with a note. Every contender trains its own model and Adam
optimizer (lr 1e-3), built from the same seed.

One more row trains a tiny GPT-2 (`transformers`, two layers of width 32) through kiln against
the hand loop a user writes for a Hugging Face model (`out = model(**batch); out.loss.backward()`),
over the same in-memory dict batches, both with foreach Adam; `huggingface.py` holds it, and it
is left out, with a note, when `transformers` is missing.

The report ends with a check that no logger reads a device tensor on the host (a
synchronisation on an accelerator) more than once per logging interval (`host_reads.py`).

Run it with `make bench` (or `python bench/overhead.py`; about five minutes on two slow cores),
`--quick` for a small version that checks the script in seconds, and `--markdown PATH` to also
write the report to a file. Timings are only as quiet as the machine: the report says how busy
other processes kept it, and on a shared machine `nice -n -10` (as root) steadies them.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import huggingface
import torch
from common import (
    BusyMeter,
    interleave,
    load_sentence,
    machine,
    markdown_row,
    parser,
    publish,
    ratio_cells,
    ratios,
    timed,
    verdict,
)
from contenders import CLASSES, FEATURES, SEED, Epoch, contenders
from host_reads import available, check_table

IMPORT_TARGET_SECONDS = 0.15
#: The most a warm `fit(epochs=1)` call may cost over the hand loop's epoch on the same batch.
CALL_TARGET_MS = 1.0
CALL_LABEL = "one warm `fit(epochs=1)` call on 1 batch, minus the raw loop's epoch"


@dataclass(frozen=True)
class Config:
    """How much to measure."""

    samples: int
    rounds: int  # timed rounds of the in-memory groups (slicing, options, logging)
    loader_rounds: int  # timed rounds of the slower DataLoader group
    warmup: int  # untimed epochs per contender before the first round
    import_runs: int  # fresh interpreters for the import time
    calls: int  # calls per contender and round of the fixed cost of a `fit` call
    hf_steps: int  # batches per epoch of the tiny GPT-2 row
    batch_sizes: tuple[int, ...] = (64, 256)


FULL = Config(
    samples=50_000, rounds=7, loader_rounds=5, warmup=2, import_runs=5, calls=300, hf_steps=200
)
QUICK = Config(
    samples=5_000, rounds=3, loader_rounds=2, warmup=1, import_runs=1, calls=20, hf_steps=10
)


@dataclass(frozen=True)
class Row:
    """One line of the table: `contender` timed against `baseline` in the same rounds."""

    label: str
    group: str
    contender: str
    baseline: str
    target: float | None  # None for a reference row
    needs: str | None = None  # the optional package the contender needs
    at_64: float | None = None  # a stricter target at batch size 64, where one is set

    def target_at(self, batch_size: int) -> float | None:
        """Return the row's target at `batch_size`."""
        return self.at_64 if batch_size == 64 and self.at_64 is not None else self.target


ROWS = (
    # kiln's optimizer named "adam" is torch's foreach Adam (on the CPU, the same update bit for
    # bit as the raw loop's default Adam): the stricter targets at batch 64 count on its speed.
    Row("kiln `fit` on `kiln.Data`, `progress=False`", "slicing", "kiln", "raw", 1.05, None, 0.85),
    Row("kiln `fit`, live progress bar + accuracy", "slicing", "kiln_bar", "raw", 1.10, None, 0.90),
    Row("raw loop with `foreach=True` Adam (ref.)", "slicing", "raw_foreach", "raw", None),
    Row(
        "raw loop with `fused=True` Adam (ref.; last bits differ)",
        "slicing",
        "raw_fused",
        "raw",
        None,
    ),
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
    # Metrics and each logger alone, against the raw loop; the metrics also against kiln alone.
    Row("kiln `fit`, no metrics (same rounds as the loggers)", "logging", "kiln_l", "raw", 1.05),
    Row("kiln `fit`, `metrics=['accuracy', 'f1']`", "logging", "kiln_metrics", "raw", None),
    Row("metrics accuracy + F1 vs kiln without them", "logging", "kiln_metrics", "kiln_l", 1.05),
    Row("kiln `fit`, `CSVLogger`", "logging", "kiln_csv", "raw", None),
    Row("kiln `fit`, `TextLog`", "logging", "kiln_text", "raw", None),
    Row("kiln `fit`, `TensorBoard`", "logging", "kiln_tb", "raw", None, "tensorboard"),
    Row("kiln `fit`, `LRMonitor`", "logging", "kiln_lr", "raw", None),
    Row("kiln `fit`, `MLflowLogger` (file store)", "logging", "kiln_mlflow", "raw", None, "mlflow"),
)


def group_names(group: str) -> tuple[str, ...]:
    """Return the contenders a group times: the raw loop first, then its rows' in their order."""
    names = ["raw"]
    for row in ROWS:
        if row.group == group:
            names += [name for name in (row.baseline, row.contender) if name not in names]
    return tuple(names)


#: The tiny GPT-2 row (`huggingface.py`): its own model, batches and hand loop, so outside `ROWS`.
HF_ROW = Row(
    huggingface.LABEL, "huggingface", "kiln_hf", "hand_hf", huggingface.TARGET, huggingface.NEEDS
)

GROUPS = {row.group: group_names(row.group) for row in ROWS}
#: The optional package each contender needs, when it needs one.
NEEDS = {row.contender: row.needs for row in ROWS if row.needs}


# ------------------------------------------------------------------------------------------
# Measuring


def rounds_of(epochs: dict[str, Epoch], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Train `warmup` untimed epochs of each contender, then time `rounds` interleaved rounds.

    Returns:
        The seconds of each timed epoch, by contender, in round order.
    """
    for _ in range(warmup):
        for epoch in epochs.values():
            epoch()
    return interleave(lambda name: timed(epochs[name]), [list(epochs)], rounds)


def measure_overhead(config: Config, folder: Path) -> list[tuple[Row, int, list[float]]]:
    """Run every group at every batch size; return each row's per-round ratios.

    Rows whose package is missing are left out (`missing` names them in the report).
    """
    generator = torch.Generator().manual_seed(SEED)
    X = torch.randn(config.samples, FEATURES, generator=generator)
    Y = torch.randint(0, CLASSES, (config.samples,), generator=generator)
    results = []
    for batch_size in config.batch_sizes:
        builders = contenders(X, Y, batch_size, folder)
        for group, names in GROUPS.items():
            rounds = config.loader_rounds if group == "loader" else config.rounds
            print(f"  batch {batch_size}, {group} group: {rounds} rounds", file=sys.stderr)
            epochs = {name: builders[name]() for name in names if available(NEEDS.get(name))}
            times = rounds_of(epochs, rounds, config.warmup)
            for row in ROWS:
                if row.group == group and row.contender in times:
                    ratio = ratios(times[row.contender], times[row.baseline])
                    results.append((row, batch_size, ratio))
    return results


def measure_huggingface(config: Config) -> list[tuple[Row, int, list[float]]]:
    """Return the tiny GPT-2 row's per-round ratios, or nothing when `transformers` is missing."""
    if not available(HF_ROW.needs):
        return []
    hf_config = huggingface.Config(config.hf_steps, config.rounds, config.warmup)
    return [(HF_ROW, huggingface.BATCH_SIZE, huggingface.measure(hf_config))]


def measure_call(config: Config, folder: Path, batch_size: int = 64) -> list[float]:
    """Return the per-round milliseconds a warm `fit(epochs=1)` call adds to the raw loop's epoch.

    Both train one batch of `batch_size` samples per call, so that the figure is what a call
    costs beyond the batch: the setup and teardown of `fit` (a notebook user calls it often).
    Each round times `config.calls` calls of each in turn, interleaved as the other rows.
    """
    generator = torch.Generator().manual_seed(SEED)
    X = torch.randn(batch_size, FEATURES, generator=generator)
    Y = torch.randint(0, CLASSES, (batch_size,), generator=generator)
    builders = contenders(X, Y, batch_size, folder)
    epochs = {name: builders[name]() for name in ("raw", "kiln")}

    def calls(name: str) -> float:
        epoch = epochs[name]
        return timed(lambda: [epoch() for _ in range(config.calls)]) / config.calls

    print(f"  fit calls on 1 batch: {config.rounds} rounds", file=sys.stderr)
    for name in epochs:
        calls(name)  # warm-up
    times = interleave(calls, [list(epochs)], config.rounds)
    return [(ours - theirs) * 1e3 for ours, theirs in zip(times["kiln"], times["raw"], strict=True)]


def call_line(milliseconds: list[float]) -> str:
    """Return the table's line for the fixed cost of a `fit` call (`measure_call`)."""
    median = statistics.median(milliseconds)
    return markdown_row(
        [
            CALL_LABEL,
            64,
            f"{median:+.2f} ms",
            f"{min(milliseconds):+.2f} to {max(milliseconds):+.2f} ms",
            f"<= {CALL_TARGET_MS:.2f} ms",
            "pass" if median <= CALL_TARGET_MS else "FAIL",
        ]
    )


def missing() -> str:
    """Return the report's note on rows left out for a missing package (empty when none)."""
    notes = [
        f"{row.label} (needs {row.needs})" for row in (*ROWS, HF_ROW) if not available(row.needs)
    ]
    return f"Not measured, their package being missing: {'; '.join(notes)}.\n" if notes else ""


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


# ------------------------------------------------------------------------------------------
# Reporting


def table(
    results: list[tuple[Row, int, list[float]]], call: list[float], import_seconds: float
) -> str:
    """Return the results as a Markdown table (`call`: `measure_call`'s milliseconds)."""
    lines = [
        "| Row | Batch size | Median ratio | Range (min-max) | Target | Result |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row, batch_size, values in results:
        cells = ratio_cells(values, row.target_at(batch_size))
        lines.append(markdown_row([row.label, batch_size, *cells]))
    lines.append(call_line(call))
    lines.append(
        f"| `import kiln` after `import torch` | - | +{import_seconds:.3f} s | - "
        f"| <= {IMPORT_TARGET_SECONDS:.2f} s | {verdict(import_seconds, IMPORT_TARGET_SECONDS)} |"
    )
    return "\n".join(lines)


def report(
    config: Config, body: str, reads: str, command: str, seconds: float, others: float | None
) -> str:
    """Return the full Markdown report: the tables, the machine and how to reproduce it.

    Args:
        config: What was measured.
        body: The table of ratios.
        reads: The table of the loggers' host reads.
        command: The command line that reproduces the run.
        seconds: How long the benchmark took.
        others: Cores other processes kept busy on average during the run, when known.
    """
    return (
        f"{body}\n\n"
        f"Machine: {machine()}.\n"
        f"Workload: {config.samples:,} samples; median of {config.rounds} interleaved rounds "
        f"({config.loader_rounds} for the DataLoader rows) after {config.warmup} warm-up "
        f"epoch(s); the tiny GPT-2 row: {config.hf_steps} batches of {huggingface.BATCH_SIZE} "
        f"sequences of {huggingface.LENGTH} tokens per epoch. The benchmark took "
        f"{seconds:.0f} s.{load_sentence(others)}\n"
        f"{missing()}"
        f"Reproduce: `{command}` (the defaults are `make bench`)\n\n"
        "Host reads of device tensors by each logger (a synchronisation each on an accelerator), "
        "counted during a 3-epoch fit of a small MLP:\n\n"
        f"{reads}\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the Markdown report, and write it where `--markdown` says."""
    arguments = parser(
        __doc__.splitlines()[0],
        "a tiny version that takes seconds",
        "timed rounds of every row (more on a noisy machine)",
    )
    args = arguments.parse_args(argv)
    config = QUICK if args.quick else FULL
    if args.rounds:
        config = replace(config, rounds=args.rounds, loader_rounds=args.rounds)
    torch.set_num_threads(1)
    meter = BusyMeter()
    with tempfile.TemporaryDirectory(prefix="kiln-bench-overhead-") as folder:
        print("Timing epochs (stderr shows progress; the report follows)...", file=sys.stderr)
        results = measure_overhead(config, Path(folder)) + measure_huggingface(config)
        call = measure_call(config, Path(folder))
        print("Timing imports...", file=sys.stderr)
        import_seconds = measure_import(config.import_runs)
        seconds, others = meter.stop()
        print("Counting the loggers' host reads...", file=sys.stderr)
        reads = check_table(Path(folder) / "reads")
    options = (" --quick" if args.quick else "") + (
        f" --rounds {args.rounds}" if args.rounds else ""
    )
    command = f"python bench/overhead.py{options}"
    publish(
        report(config, table(results, call, import_seconds), reads, command, seconds, others),
        args.markdown,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
