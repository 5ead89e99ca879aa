"""Tests of bench/overhead.py: its rows and groups, and a smoke run of its quick version (slow)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import overhead
import pytest

from tests.bench import BENCH


def test_every_group_starts_with_the_raw_loop_and_holds_its_rows_contenders() -> None:
    assert overhead.GROUPS["loader"] == ("raw", "raw_dl", "kiln_dl")
    for group, names in overhead.GROUPS.items():
        assert names[0] == "raw"
        assert len(set(names)) == len(names)
        for row in overhead.ROWS:
            if row.group == group:
                assert {row.contender, row.baseline} <= set(names)


def test_the_metrics_are_also_timed_against_kiln_without_them() -> None:
    (row,) = [row for row in overhead.ROWS if row.baseline == "kiln_l"]
    assert (row.contender, row.target) == ("kiln_metrics", 1.05)


@pytest.mark.slow
def test_quick_overhead_benchmark_prints_every_row(tmp_path: Path) -> None:
    """`--quick --rounds 1` exits 0, prints every row twice (two batch sizes) and the checks."""
    markdown = tmp_path / "report.md"
    result = subprocess.run(
        [sys.executable, str(BENCH / "overhead.py"), "--quick", "--rounds", "1"]
        + ["--markdown", str(markdown)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for row in overhead.ROWS:
        matching = [line for line in lines if line.startswith(f"| {row.label} |")]
        assert len(matching) == 2, f"{row.label!r} missing from:\n{result.stdout}"
        assert all(line.endswith(("| pass |", "| FAIL |", "| reference |")) for line in matching)
    reads = [line for line in lines if line.endswith("| <= 1 | pass |")]
    assert len(reads) == 9, result.stdout  # every logger's host-read check, none failing
    assert "cores busy meanwhile" in result.stdout
    assert "Reproduce: `python bench/overhead.py --quick --rounds 1`" in result.stdout
    assert markdown.read_text() == result.stdout.rstrip("\n") + "\n"
