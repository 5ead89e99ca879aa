"""Measure saving and loading kiln's full checkpoint against torch.save and torch.load.

What: the time, and the extra peak memory, of writing and reading the whole training state of a
100.7M-parameter model (six `nn.Linear(4096, 4096)`) after one Adam step: 1.2 GB of weights and
Adam moments. kiln's save is `save_last(trainer, directory)`, what `fit` calls after every epoch
(`trainer_state` written by `atomic_save`: temporary file, `fsync`, rename, `fsync` of the
directory), against `torch.save` of the model's and optimizer's `state_dict`, with and without
`fsync`. kiln's loads, `safe_load` and `load_last` into a fresh trainer, are timed against
`torch.load(weights_only=True)`, alone and followed by `load_state_dict` into a fresh model and
Adam. docs/benchmarks.md explains every row and the results.

How: each operation runs alone in a fresh Python process, which builds what it needs, resets
its peak resident memory (`/proc/self/clear_refs`) and times the operation; "extra peak memory"
is the peak during the operation minus the resident memory right before it. Each round runs the
saves, then the loads, the order reversed every other round; the tables give medians. An
untimed `os.sync()` follows every operation, so that none pays for another's writes. Loads read
files their save just wrote, from the page cache; clearing it needs root, but `--cold` evicts
each file first with `posix_fadvise(DONTNEED)`, which any user may do.

Run it with `python bench/checkpoint.py` (about four minutes on two slow cores, 2 GB of memory
and 2.4 GB of disk), `--quick` for a 9.8M-parameter model that checks the script in a minute,
`--rounds N`, `--dir PATH` for where the files go (in a temporary directory, removed at the
end), and `--markdown PATH` to also write the report to a file. Linux only (`/proc`).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

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
    target_cell,
    verdict,
)
from torch import nn

import kiln
from kiln.checkpoint.files import safe_load
from kiln.checkpoint.run import LAST, load_last, save_last

SEED = 0
BATCH = 8
TORCH_FILE = "torch.pt"
TARGET = 1.10  # the most kiln may take, as a multiple of the baseline's time or the model's size


@dataclass(frozen=True)
class Config:
    """How much to measure."""

    width: int
    layers: int
    rounds: int

    @property
    def parameters(self) -> int:
        """The model's parameter count: weights and biases of every layer."""
        return self.layers * (self.width * self.width + self.width)


FULL = Config(width=4096, layers=6, rounds=3)
QUICK = Config(width=1280, layers=6, rounds=3)

#: Operation name -> (label, file it writes or reads: `TORCH_FILE` or kiln's `LAST`).
OPERATIONS = {
    "torch_save": ("`torch.save(dict, path)`", TORCH_FILE),
    "torch_save_fsync": ("`torch.save` to an open file + `fsync`", TORCH_FILE),
    "kiln_save": ("kiln `save_last` (`atomic_save` of `trainer_state`)", LAST),
    "torch_load": ("`torch.load(path, weights_only=True)`", TORCH_FILE),
    "kiln_safe_load": ("kiln `safe_load`", LAST),
    "torch_restore": ("`torch.load` + `load_state_dict` into model and Adam", TORCH_FILE),
    "kiln_load_last": ("kiln `load_last` into a fresh trainer", LAST),
}
#: Each operation's measurements ("seconds", "extra_bytes"), one per round.
Results = dict[str, list[dict[str, float]]]
SAVES = ("torch_save", "torch_save_fsync", "kiln_save")
LOADS = ("torch_load", "kiln_safe_load", "torch_restore", "kiln_load_last")

#: (label, contender, baseline, time target or None for a reference row).
RATIOS = (
    ("kiln save vs `torch.save` + `fsync`", "kiln_save", "torch_save_fsync", TARGET),
    ("kiln save vs plain `torch.save` (ref.)", "kiln_save", "torch_save", None),
    ("kiln `safe_load` vs `torch.load`", "kiln_safe_load", "torch_load", TARGET),
    ("kiln `load_last` vs restoring by hand", "kiln_load_last", "torch_restore", TARGET),
    ("kiln `load_last` vs `torch.load` alone (ref.)", "kiln_load_last", "torch_load", None),
)


# ------------------------------------------------------------------------------------------
# One operation, in its own process


def make_model(config: Config) -> nn.Module:
    """Return the stack of `layers` square Linear layers, with the same weights at every call."""
    torch.manual_seed(SEED)
    layers: list[nn.Module] = []
    for index in range(config.layers):
        layers += [*([nn.ReLU()] if index else []), nn.Linear(config.width, config.width)]
    return nn.Sequential(*layers)


def make_trainer(config: Config, directory: Path) -> kiln.Trainer:
    """Return a freshly built trainer (loss "mse", optimizer "adam"): Adam has no state yet."""
    model = make_model(config)
    return kiln.Trainer(model, "mse", "adam", device="cpu", progress=False, dir=directory)


def trained_trainer(config: Config, directory: Path) -> kiln.Trainer:
    """Return a trainer with `dir=directory` after one Adam step, so both moments exist.

    The step is taken by hand (forward, MSE, backward, `optimizer.step()`): `fit` would also
    write its own checkpoint, and with it files this benchmark does not time.
    """
    trainer = make_trainer(config, directory)
    assert trainer.optimizer is not None
    inputs = torch.randn(BATCH, config.width, generator=torch.Generator().manual_seed(SEED))
    nn.functional.mse_loss(trainer.model(inputs), inputs).backward()
    trainer.optimizer.step()  # the gradients stay, as they do after `fit`
    return trainer


def prepare(operation: str, config: Config, directory: Path) -> Callable[[], object]:
    """Build what `operation` needs, untimed, and return the operation itself."""
    path = directory / OPERATIONS[operation][1]
    if operation in SAVES:
        trainer = trained_trainer(config, directory)
        model, optimizer = trainer.model, trainer.optimizer
        if operation == "kiln_save":
            return lambda: save_last(trainer, directory)

        def save() -> None:
            tensors = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
            if operation == "torch_save":
                torch.save(tensors, path)
                return
            with open(path, "wb") as file:
                torch.save(tensors, file)
                file.flush()
                os.fsync(file.fileno())

        return save
    if operation == "torch_load":
        return lambda: torch.load(path, weights_only=True)
    if operation == "kiln_safe_load":
        return lambda: safe_load(path)
    if operation == "kiln_load_last":
        fresh = make_trainer(config, directory)
        return lambda: load_last(fresh, directory)
    model = make_model(config)
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)  # kiln's "adam": the same default lr

    def restore() -> None:
        tensors = torch.load(path, weights_only=True)
        model.load_state_dict(tensors["model"])
        adam.load_state_dict(tensors["optimizer"])

    return restore


def memory_kib(field: str) -> int:
    """Return a `/proc/self/status` memory field (`VmRSS`, `VmHWM`) in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line; this benchmark needs Linux.")


def measure_here(operation: str, config: Config, directory: Path) -> dict[str, float]:
    """Time `operation` in this process; return its seconds and extra peak bytes."""
    run = prepare(operation, config, directory)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # the peak (VmHWM) restarts from the current resident memory
    before = memory_kib("VmRSS")
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    extra = (memory_kib("VmHWM") - before) * 1024
    return {"seconds": seconds, "extra_bytes": extra}


# ------------------------------------------------------------------------------------------
# The rounds


def evict(path: Path) -> None:
    """Drop `path`'s (clean) pages from the page cache, so that the next read comes from disk."""
    with open(path, "rb") as file:
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def run_operation(operation: str, quick: bool, directory: Path, cold: bool) -> dict[str, float]:
    """Run `operation` in a fresh interpreter; return what it measured."""
    path = directory / OPERATIONS[operation][1]
    if operation in SAVES:
        path.unlink(missing_ok=True)  # every save writes a new file, none truncates an old one
    elif cold:
        evict(path)
    command = [sys.executable, __file__, "--operation", operation, "--dir", str(directory)]
    result = subprocess.run(
        command + ["--quick"] * quick, capture_output=True, text=True, timeout=600, check=False
    )
    os.sync()  # untimed: what a save without fsync left in memory must not slow the next one
    if result.returncode != 0:
        raise RuntimeError(
            f"Measuring {operation} failed with exit status {result.returncode}; expected 0. "
            f"Its output, which says why:\n{result.stdout}{result.stderr}"
        )
    return dict(json.loads(result.stdout.splitlines()[-1]))


def measure(config: Config, quick: bool, directory: Path, cold: bool) -> Results:
    """Run every operation once per round; return each one's measurements in round order."""
    return interleave(
        lambda operation: run_operation(operation, quick, directory, cold),
        (SAVES, LOADS),
        config.rounds,
        lambda round_idx, operation: print(
            f"  round {round_idx + 1}: {operation}", file=sys.stderr
        ),
    )


# ------------------------------------------------------------------------------------------
# Reporting


def tables(results: Results, model_bytes: int) -> str:
    """Return the two Markdown tables: each operation, then kiln's ratios to its baselines."""
    lines = [
        "| Operation | Median time | Range (min-max) | Extra peak memory | x model size "
        "| Target | Result |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for operation, (label, _) in OPERATIONS.items():
        seconds = [run["seconds"] for run in results[operation]]
        extra = statistics.median(run["extra_bytes"] for run in results[operation])
        target = TARGET if operation == "kiln_save" else None
        cells = [label, f"{statistics.median(seconds):.2f} s"]
        cells += [f"{min(seconds):.2f}-{max(seconds):.2f} s", f"{extra / 1e9:.3f} GB"]
        cells += [f"{extra / model_bytes:.2f}x", target_cell(target)]
        memory_verdict = "-" if target is None else verdict(extra / model_bytes, target)
        lines.append(markdown_row([*cells, memory_verdict]))
    lines += [
        "",
        "| kiln vs baseline | Median time ratio | Range (min-max) | Target | Result |",
        "|---|---:|---:|---:|---|",
    ]
    for label, contender, baseline, target in RATIOS:
        seconds = [[run["seconds"] for run in results[name]] for name in (contender, baseline)]
        lines.append(markdown_row([label, *ratio_cells(ratios(*seconds), target)]))
    return "\n".join(lines)


def filesystem(directory: Path) -> str:
    """Describe the file system `directory` lies on (type and device), from `/proc/mounts`."""
    best = ("", "unknown file system")
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            device, mount_point, kind = line.split()[:3]
            inside = str(directory.resolve()).startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best[0]):
                best = (mount_point, f"{kind} on {device}, mounted at {mount_point}")
    return best[1]


def report(
    config: Config,
    body: str,
    args: argparse.Namespace,
    directory: Path,
    seconds: float,
    others: float | None,
) -> str:
    """Return the full Markdown report: the tables, the machine, and how to reproduce it.

    Args:
        config: What was measured.
        body: The tables.
        args: The command line's options, which the report repeats.
        directory: Where the files were written.
        seconds: How long the benchmark took.
        others: Cores other processes kept busy on average during the run, when known.
    """
    model_bytes = config.parameters * 4
    cache = (
        "evicted from the page cache with `posix_fadvise(DONTNEED)` before each load (cold)"
        if args.cold
        else "read from the page cache, where their save left them (warm)"
    )
    flags = [flag for flag, given in (("--quick", args.quick), ("--cold", args.cold)) if given]
    command = " ".join(
        ["python bench/checkpoint.py", *flags, *[f"--rounds {args.rounds}"] * bool(args.rounds)]
    )
    return (
        f"{body}\n\n"
        f"Machine: {machine()}.\n"
        f"Disk: {filesystem(directory)}. Files {cache}.\n"
        f"Workload: {config.parameters:,} float32 parameters ({model_bytes / 1e9:.3f} GB) after "
        f"one Adam step, so each file holds about {3 * model_bytes / 1e9:.2f} GB; median of "
        f"{config.rounds} rounds, each operation in a fresh process. "
        f"The benchmark took {seconds:.0f} s.{load_sentence(others)}\n"
        f"Reproduce: `{command}`\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the Markdown report, and write it where `--markdown` says."""
    arguments = parser(
        __doc__.splitlines()[0], "a 9.8M-parameter model, to check the script", "rounds (default 3)"
    )
    arguments.add_argument("--cold", action="store_true", help="evict each file before its load")
    arguments.add_argument("--dir", metavar="PATH", help="where the files go (default: temp dir)")
    arguments.add_argument("--operation", choices=OPERATIONS, help=argparse.SUPPRESS)
    args = arguments.parse_args(argv)
    config = QUICK if args.quick else FULL
    if args.rounds:
        config = replace(config, rounds=args.rounds)
    if args.operation:  # one measurement, in the fresh process the parent started
        print(json.dumps(measure_here(args.operation, config, Path(args.dir))))
        return 0
    meter = BusyMeter()
    directory = Path(tempfile.mkdtemp(prefix="kiln-bench-checkpoint-", dir=args.dir))
    print(f"Saving and loading in {directory} (removed at the end)...", file=sys.stderr)
    try:
        results = measure(config, args.quick, directory, args.cold)
        body = tables(results, config.parameters * 4)
        seconds, others = meter.stop()
        text = report(config, body, args, directory, seconds, others)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    publish(text, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
