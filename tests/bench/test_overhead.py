"""Tests of bench/overhead.py: its rows and groups, and a smoke run of its quick version (slow)."""

from __future__ import annotations

from pathlib import Path

import overhead
import pytest

from tests.bench import run_bench


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
    stdout = run_bench(
        "overhead.py", "--quick", "--rounds", "1", "--markdown", str(markdown), timeout=600
    )
    lines = stdout.splitlines()
    for row in overhead.ROWS:
        matching = [line for line in lines if line.startswith(f"| {row.label} |")]
        assert len(matching) == 2, f"{row.label!r} missing from:\n{stdout}"
        assert all(line.endswith(("| pass |", "| FAIL |", "| reference |")) for line in matching)
    gpt2 = [line for line in lines if line.startswith(f"| {overhead.HF_ROW.label} |")]
    assert len(gpt2) == 1, stdout  # the tiny GPT-2 row, at its one batch size
    assert gpt2[0].endswith(("| pass |", "| FAIL |"))
    reads = [line for line in lines if line.endswith("| <= 1 | pass |")]
    assert len(reads) == 10, stdout  # every logger's host-read check, none failing
    assert "cores busy meanwhile" in stdout
    assert "Reproduce: `python bench/overhead.py --quick --rounds 1`" in stdout
    assert markdown.read_text() == stdout.rstrip("\n") + "\n"


def test_the_foreach_hand_loop_is_a_reference_and_kiln_has_stricter_targets_at_64() -> None:
    """The hand loop with foreach Adam is a reference row; kiln's rows: 0.85x/0.90x at batch 64."""
    rows = {row.contender: row for row in overhead.ROWS if row.group == "slicing"}
    assert (rows["raw_foreach"].baseline, rows["raw_foreach"].target_at(64)) == ("raw", None)
    assert (rows["kiln"].target_at(64), rows["kiln"].target_at(256)) == (0.85, 1.05)
    assert (rows["kiln_bar"].target_at(64), rows["kiln_bar"].target_at(256)) == (0.90, 1.10)


def test_the_fit_call_line_reports_milliseconds_against_its_target() -> None:
    assert overhead.call_line([0.4, 0.5, 0.6]).endswith(
        "| 64 | +0.50 ms | +0.40 to +0.60 ms | <= 1.00 ms | pass |"
    )
    assert overhead.call_line([1.5]).endswith("| FAIL |")
