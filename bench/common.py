"""What the benchmarks under `bench/` share: rounds, ratios, verdicts, noise and the report.

Every benchmark here times kiln against a baseline in the same run, in rounds whose order is
reversed every other round so that slow drift favours no one, and reports the median of the
per-round ratios with their range, a verdict against a target, the machine, and how many cores
other processes kept busy meanwhile (the noise that makes the ratios wander).

What lives here: those shared parts. What does not: the contenders, the workloads and the tables
themselves, which stay in each benchmark (`overhead.py`, `checkpoint.py`).

Example:
    >>> ratios([2.0, 3.0], [1.0, 2.0])
    [2.0, 1.5]
    >>> ratio_cells([1.0, 1.1, 0.9], 1.05)
    ['1.000x', '0.90-1.10x', '<= 1.05x', 'pass']
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


# ------------------------------------------------------------------------------------------
# Rounds and ratios


def interleave(
    run: Callable[[str], T],
    groups: Sequence[Sequence[str]],
    rounds: int,
    progress: Callable[[int, str], None] | None = None,
) -> dict[str, list[T]]:
    """Run every name of every group once per round; reverse each group's order on odd rounds.

    Args:
        run: Measures one contender, by name, and returns the measurement.
        groups: Names run in turn; the groups themselves always run in the order given (so a
            group of loads can follow the saves that write their files).
        rounds: How many rounds.
        progress: Called with the round's index and the name before each run, to report it.

    Returns:
        Each name's measurements, in round order.

    Example:
        >>> calls = []
        >>> interleave(lambda name: calls.append(name) or len(calls), [("a", "b")], 2)
        {'a': [1, 4], 'b': [2, 3]}
    """
    results: dict[str, list[T]] = {name: [] for group in groups for name in group}
    for round_idx in range(rounds):
        for group in groups:
            for name in group if round_idx % 2 == 0 else reversed(group):
                if progress is not None:
                    progress(round_idx, name)
                results[name].append(run(name))
    return results


def timed(call: Callable[[], object]) -> float:
    """Collect garbage (untimed), then return the seconds `call()` takes."""
    gc.collect()
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def ratios(contender: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """Return the per-round ratios `contender / baseline` (both in round order)."""
    return [ours / theirs for ours, theirs in zip(contender, baseline, strict=True)]


def verdict(value: float, target: float | None) -> str:
    """Return "pass", "FAIL", or "reference" for a row without a target."""
    if target is None:
        return "reference"
    return "pass" if value <= target else "FAIL"


def target_cell(target: float | None) -> str:
    """Return a target as the tables show it: `<= 1.05x`, or `-` for none."""
    return "-" if target is None else f"<= {target:.2f}x"


def ratio_cells(values: Sequence[float], target: float | None) -> list[str]:
    """Return a row's median ratio, range, target and verdict, as table cells."""
    median = statistics.median(values)
    return [
        f"{median:.3f}x",
        f"{min(values):.2f}-{max(values):.2f}x",
        target_cell(target),
        verdict(median, target),
    ]


def markdown_row(cells: Sequence[object]) -> str:
    """Return one Markdown table line holding `cells`."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


# ------------------------------------------------------------------------------------------
# Noise and the machine


def busy_seconds() -> tuple[float, float] | None:
    """Return the CPU seconds the whole machine, and this process with its children, have used.

    Their difference over a run says how much other processes competed with the benchmark,
    which is what makes the ratios noisy. `None` where `/proc/stat` does not exist.
    """
    try:
        with open("/proc/stat") as stat:
            ticks = [int(value) for value in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    machine_busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # not idle
    own = os.times()
    return machine_busy, own.user + own.system + own.children_user + own.children_system


class BusyMeter:
    """Time a benchmark and measure how busy other processes kept the machine meanwhile.

    Example:
        >>> meter = BusyMeter()
        >>> seconds, others = meter.stop()
        >>> seconds >= 0.0
        True
    """

    def __init__(self) -> None:
        self.started, self._before = time.perf_counter(), busy_seconds()

    def stop(self) -> tuple[float, float | None]:
        """Return the seconds since the start, and the cores others kept busy on average."""
        seconds, after = time.perf_counter() - self.started, busy_seconds()
        if self._before is None or after is None:
            return seconds, None
        own = after[1] - self._before[1]
        return seconds, max(after[0] - self._before[0] - own, 0.0) / max(seconds, 1e-9)


def load_sentence(others: float | None) -> str:
    """Return the report's sentence on other processes (empty when unknown)."""
    return "" if others is None else f" Other processes kept {others:.2f} cores busy meanwhile."


def machine() -> str:
    """Describe the machine: CPU model, cores, memory, torch (and its threads) and Python."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        models = [line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line]
        cpu = models[0] if models else cpu
    memory = ""
    with contextlib.suppress(ValueError, OSError, AttributeError):
        pages = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        memory = f"{pages / 2**30:.0f} GiB of memory, "
    threads = torch.get_num_threads()
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory}torch {torch.__version__} "
        f"({threads} thread{'s' * (threads != 1)}), Python {platform.python_version()}, "
        f"{platform.system()}"
    )


# ------------------------------------------------------------------------------------------
# The command line and the report


def parser(description: str, quick: str, rounds: str) -> argparse.ArgumentParser:
    """Return a parser with the options every benchmark has: `--quick`, `--rounds`, `--markdown`.

    Args:
        description: The benchmark's one-line description.
        quick: What `--quick` does, for the help.
        rounds: What `--rounds` sets, for the help.
    """
    arguments = argparse.ArgumentParser(description=description)
    arguments.add_argument("--quick", action="store_true", help=quick)
    arguments.add_argument("--rounds", type=int, metavar="N", help=rounds)
    arguments.add_argument("--markdown", metavar="PATH", help="also write the report to PATH")
    return arguments


def publish(text: str, markdown: str | None) -> None:
    """Print the report, and write it to `markdown` when given."""
    print(text)
    if markdown:
        with open(markdown, "w") as file:
            file.write(text)
