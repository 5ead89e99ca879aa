"""A smoke run of bench/fit_table.py (slow)."""

from __future__ import annotations

import pytest

from tests.bench import run_bench


@pytest.mark.slow
def test_quick_run_compares_the_raw_mlp_with_fit_table() -> None:
    printed = run_bench("fit_table.py", "--quick", timeout=300)
    rows = [line for line in printed.splitlines() if line.startswith("| wine |")]
    assert [row.split("|")[3].strip() for row in rows] == ["accuracy", "log_loss"]
    accuracy = rows[0].split("|")
    assert float(accuracy[5]) > 0.9  # the scaled inputs: wine's columns span 0.1 to 1,700
