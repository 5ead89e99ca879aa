"""Smoke test of bench/distributed.py: the quick version measures both contenders (slow)."""

import re
from pathlib import Path

import pytest

from tests.bench import run_bench


@pytest.mark.slow
def test_quick_distributed_benchmark_reports_both_contenders(tmp_path: Path) -> None:
    """`--quick --rounds 1` exits 0 and writes a row per contender with positive numbers."""
    markdown = tmp_path / "report.md"
    stdout = run_bench("distributed.py", "--quick", "--rounds", "1", "--markdown", str(markdown))
    report = markdown.read_text()
    assert report.strip() == stdout.strip()
    for contender in ("torch DDP", "kiln"):
        row = re.search(
            rf"\| tiny MLP 32-64-64-10 \(6,922 parameters\) \| {contender} \| (.*) \|$",
            report,
            re.M,
        )
        assert row is not None, report
        one, two, efficiency = (cell.strip() for cell in row.group(1).split("|")[:3])
        assert float(one.replace(",", "")) > 0
        assert float(two.replace(",", "")) > 0
        assert 0 < float(efficiency) < 2
