"""Smoke test of bench/checkpoint.py: its quick version runs and prints every row (slow)."""

from pathlib import Path

import pytest

from tests.bench import run_bench

OPERATION_ROWS = (
    "| `torch.save(dict, path)` |",
    "| `torch.save` to an open file + `fsync` |",
    "| kiln `save_last` (`atomic_save` of `trainer_state`) |",
    "| `torch.load(path, weights_only=True)` |",
    "| kiln `safe_load` |",
    "| `torch.load` + `load_state_dict` into model and Adam |",
    "| kiln `load_last` into a fresh trainer |",
)
RATIO_ROWS = (
    "| kiln save vs `torch.save` + `fsync` |",
    "| kiln save vs plain `torch.save` (ref.) |",
    "| kiln `safe_load` vs `torch.load` |",
    "| kiln `load_last` vs restoring by hand |",
    "| kiln `load_last` vs `torch.load` alone (ref.) |",
)


@pytest.mark.slow
def test_quick_checkpoint_benchmark_prints_every_row_and_cleans_up(tmp_path: Path) -> None:
    """`--quick --rounds 1` exits 0, prints both tables, writes the report, removes its files."""
    markdown = tmp_path / "report.md"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    stdout = run_bench(
        "checkpoint.py", "--quick", "--rounds", "1", "--dir", str(scratch), "--markdown",
        str(markdown),
    )  # fmt: skip
    lines = stdout.splitlines()
    for row in OPERATION_ROWS + RATIO_ROWS:
        matching = [line for line in lines if line.startswith(row)]
        assert len(matching) == 1, f"{row!r} missing from:\n{stdout}"
        assert "nan" not in matching[0], matching[0]
    save_row = next(line for line in lines if line.startswith(OPERATION_ROWS[2]))
    assert save_row.endswith(("| pass |", "| FAIL |")), save_row  # its memory verdict
    assert "Reproduce: `python bench/checkpoint.py --quick --rounds 1`" in stdout
    assert markdown.read_text() == stdout.rstrip("\n") + "\n"
    assert list(scratch.iterdir()) == [], "the benchmark left files behind"
