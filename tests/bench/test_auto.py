"""Tests of bench/auto.py: its scoring, pairing and grid shortcut, and a smoke run (slow)."""

from __future__ import annotations

import auto
import numpy as np
import pytest
import torch

from tests.bench import run_bench


def test_scores_are_accuracy_at_one_half_and_r2() -> None:
    targets = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    assert auto.score("binary", np.array([0.9, 0.2, 0.4, 0.6]), targets) == 0.5
    values = torch.tensor([[1.0], [2.0], [3.0]])
    assert auto.score("regression", np.array([1.0, 2.0, 3.0]), values) == 1.0
    assert auto.score("regression", np.array([2.0, 2.0, 2.0]), values) == 0.0


def test_paired_differences_count_wins_ties_and_losses_split_by_split() -> None:
    differences, tally = auto.paired([0.9, 0.95, 0.9, 0.97], [0.9, 0.9, 0.95, 0.96])
    assert differences == pytest.approx([0.0, 0.05, -0.05, 0.01])
    assert tally == "2/1/1"
    with pytest.raises(ValueError, match="zip"):
        auto.paired([0.9], [0.9, 0.8])  # every contender must have run on every split


def test_the_splits_differ_by_seed_and_the_binary_ones_are_stratified() -> None:
    first, second = auto.load("binary", 0), auto.load("binary", 1)
    assert not torch.equal(first[3], second[3])
    for _, y_train, _, y_test in (first, second):
        assert (len(y_train), len(y_test)) == (456, 113)  # 80/20 per class
        assert abs(float(y_test.mean()) - float(y_train.mean())) < 0.01
    x_train = auto.load("regression", 0)[0]
    assert torch.allclose(x_train.mean(0), torch.zeros(x_train.shape[1]), atol=1e-5)


def test_one_grid_run_gives_what_a_shorter_run_gives_at_each_epoch_count() -> None:
    """The tuned MLP evaluates each epoch count of its grid along one run: exactly, not roughly."""
    x = torch.randn(40, 3)
    y = x[:, :1] * 2 + 1
    along: dict[int, np.ndarray] = {}
    auto.plain_mlp("regression", x, y, 1e-2, (2, 4), 0, lambda n, p: along.update({n: p(x)}))
    alone: list[np.ndarray] = []
    auto.plain_mlp("regression", x, y, 1e-2, [2], 0, lambda _, p: alone.append(p(x)))
    assert sorted(along) == [2, 4]
    np.testing.assert_array_equal(along[2], alone[0])
    assert not np.array_equal(along[2], along[4])


@pytest.mark.slow
def test_quick_auto_benchmark_prints_every_row() -> None:
    """`--quick --splits 2 --seeds 1` exits 0 and prints all three tables and the command."""
    stdout = run_bench("auto.py", "--quick", "--splits", "2", "--seeds", "1")
    lines = stdout.splitlines()
    for task in ("breast cancer", "diabetes"):
        for label in auto.CONTENDERS:
            # the scores' row, then (for a baseline) the paired differences' row
            row, *pairs = [line for line in lines if line.startswith(f"| {task} | {label} | ")]
            assert ("accuracy " if task == "breast cancer" else "R2 ") in row, row
            assert row.split(" | ")[4] == "2", row  # runs: 2 splits x 1 seed (linear: 1 each)
            assert len(pairs) == (0 if label == auto.AUTO else 1), pairs
            assert all(pair.endswith(("| holds |", "| missed |")) for pair in pairs), pairs
        assert len([line for line in lines if line.startswith(f"| {task} | 0 | ")]) == 1
        assert len([line for line in lines if line.startswith(f"| {task} | 1 | ")]) == 1
    assert "auto runs ended by early stopping before n_epochs: breast cancer " in stdout
    assert "nan" not in stdout
    assert "Reproduce: `python bench/auto.py --quick --splits 2 --seeds 1`" in stdout
