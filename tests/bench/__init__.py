"""Tests of the benchmarks in `bench/`, whose modules pytest's `pythonpath` makes importable."""

from pathlib import Path

#: The benchmarks' folder, for the tests that run a benchmark as a script.
BENCH = Path(__file__).resolve().parents[2] / "bench"
