"""Tests of bench/tables.py: scores, normalisation, ranks, pairing, and a smoke run (slow)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tables
from tests.bench import run_bench


def test_scores_of_classification_and_regression() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [1.0, 0.0]])
    got = tables.scores("classification", ["no", "yes"], ["no", "yes", "yes", "yes"], probabilities)
    assert got["accuracy"] == 0.5
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(1e-15)) / 4
    assert got["log_loss"] == pytest.approx(expected)  # a zero probability is clipped to 1e-15
    got = tables.scores("regression", [], [1.0, 2.0, 3.0], np.array([2.0, 2.0, 2.0]))
    assert got["r2"] == pytest.approx(0.0)
    assert got["rmse"] == pytest.approx(math.sqrt(2 / 3))


def test_normalised_scores_and_ranks_turn_lower_is_better_around() -> None:
    assert tables.normalised({"a": 0.2, "b": 0.4, "c": 0.3}, lower_is_better=True) == pytest.approx(
        {"a": 1.0, "b": 0.0, "c": 0.5}
    )
    assert tables.normalised({"a": 0.7, "b": 0.7}, lower_is_better=False) == {"a": 1.0, "b": 1.0}
    assert tables.ranks({"a": 0.2, "b": 0.4, "c": 0.2}, lower_is_better=True) == {
        "a": 1.5,
        "b": 3.0,
        "c": 1.5,
    }


def test_paired_differences_count_wins_ties_and_losses_split_by_split() -> None:
    result = tables.paired([1.0, 0.5, 0.25, 1.0], [0.5, 0.5, 0.75, 0.0])
    assert result.mean == pytest.approx(0.25)
    assert (result.wins, result.ties, result.losses, result.count) == (2, 1, 1, 4)
    assert (result.low, result.high) == (-0.5, 1.0)
    assert result.error == pytest.approx(np.std([0.5, 0.0, -0.5, 1.0], ddof=1) / 2)
    assert math.isnan(tables.paired([1.0], [0.0]).error)
    with pytest.raises(ValueError, match="zip"):
        tables.paired([0.9], [0.9, 0.8])


@pytest.mark.slow
def test_quick_run_reports_kiln_and_the_linear_model() -> None:
    printed = run_bench("tables.py", "--quick", "--contenders", "kiln,linear", timeout=600)
    assert "| kiln |" in printed
    assert "| linear |" in printed
    assert "iris" in printed
    assert "accuracy mean normalised" in printed
