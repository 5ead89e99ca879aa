"""Tests of bench/huggingface.py, the tiny GPT-2 row: its contenders agree, and a smoke run."""

from __future__ import annotations

import huggingface
import overhead
import pytest

from tests.bench import run_bench

pytest.importorskip("transformers")


def test_kiln_and_the_hand_loop_train_the_same_model_on_the_same_batches() -> None:
    """Same seed, batches and foreach Adam: the epoch losses agree, the second epoch's too."""
    batches = huggingface.batch_loader(huggingface.make_batches(3))
    hand: list[float] = []
    ours: list[float] = []
    hand_epoch = huggingface.hand_loop(batches, hand)
    kiln_epoch = huggingface.kiln_fit(batches, ours)
    for _ in range(2):
        hand_epoch()
        kiln_epoch()
    assert ours == pytest.approx(hand, rel=1e-6)
    assert hand[1] < hand[0]  # the counter-check: the second epoch trained on updated weights


def test_the_row_is_in_the_overhead_table_with_its_target() -> None:
    assert (overhead.HF_ROW.label, overhead.HF_ROW.target) == (huggingface.LABEL, 1.05)
    assert overhead.HF_ROW.needs == "transformers"
    assert "tiny GPT-2" not in overhead.missing()  # transformers is installed here
    assert huggingface.line([1.0, 1.1, 0.9]).endswith(
        "| 16 | 1.000x | 0.90-1.10x | <= 1.05x | pass |"
    )


@pytest.mark.slow  # a subprocess that imports transformers: seconds
def test_quick_huggingface_benchmark_prints_its_row() -> None:
    """`--quick --rounds 1` exits 0 and prints the row with a verdict, and how to reproduce it."""
    stdout = run_bench("huggingface.py", "--quick", "--rounds", "1", timeout=120)
    (row,) = [line for line in stdout.splitlines() if line.startswith(f"| {huggingface.LABEL} |")]
    assert row.endswith(("| pass |", "| FAIL |"))
    assert "Reproduce: `python bench/huggingface.py --quick --rounds 1`" in stdout
