"""Tests of the benchmarks in `bench/`, whose modules pytest's `pythonpath` makes importable."""

import subprocess
import sys
from pathlib import Path

#: The benchmarks' folder, for the tests that run a benchmark as a script.
BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_bench(script: str, *arguments: str, timeout: int = 300) -> str:
    """Run `bench/{script}` with `arguments` as a user would; return what it printed.

    The run must exit 0; otherwise the test fails with what it printed.
    """
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return result.stdout
