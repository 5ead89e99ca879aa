"""Tests of `kiln.seed`: `seed_everything`."""

import os
import random

import numpy as np
import pytest
import torch

import kiln
from kiln.seed import seed_everything


@pytest.fixture
def restore_environment(monkeypatch):
    """Make sure the variables `seed_everything` writes are restored after the test."""
    for name in ("PYTHONHASHSEED", "CUBLAS_WORKSPACE_CONFIG"):
        monkeypatch.setenv(name, "placeholder")  # records the original value (or its absence)
        monkeypatch.delenv(name)


def _draws() -> tuple[float, float, float]:
    """One draw from each of Python's, NumPy's and torch's global generators."""
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_seed_everything_is_exported_and_returns_the_seed(restore_environment):
    """`kiln.seed_everything` returns the seed it was given, for logging."""
    assert kiln.seed_everything is seed_everything
    assert seed_everything(123) == 123


def test_seed_everything_reproduces_python_numpy_and_torch(restore_environment):
    """The same seed gives the same draws from random, NumPy and torch."""
    seed_everything(5)
    first = _draws()
    seed_everything(5)
    assert _draws() == first


def test_seed_everything_other_seed_other_draws(restore_environment):
    """Another seed gives other draws from every generator."""
    seed_everything(5)
    first = _draws()
    seed_everything(6)
    assert all(a != b for a, b in zip(first, _draws(), strict=True))


@pytest.mark.parametrize("seed", [2**32, 2**32 + 7, 2**63 - 1])
def test_seed_everything_accepts_seeds_beyond_numpy_range(restore_environment, seed):
    """Seeds of 2**32 and more are accepted (NumPy gets the seed modulo 2**32)."""
    assert seed_everything(seed) == seed
    assert np.random.rand() == np.random.RandomState(seed % 2**32).rand()


def test_seed_everything_sets_pythonhashseed(restore_environment):
    """`PYTHONHASHSEED` is set for worker processes started later."""
    seed_everything(42)
    assert os.environ["PYTHONHASHSEED"] == "42"


def test_seed_everything_deterministic_asks_torch(restore_environment, monkeypatch):
    """`deterministic=True` turns on deterministic algorithms and turns off cudnn benchmark."""
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", calls.append)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    seed_everything(0, deterministic=True)
    assert calls == [True]
    assert torch.backends.cudnn.benchmark is False
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_seed_everything_deterministic_keeps_a_cublas_setting(restore_environment, monkeypatch):
    """A `CUBLAS_WORKSPACE_CONFIG` already set by the user is kept."""
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda mode: None)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    seed_everything(0, deterministic=True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_seed_everything_is_not_deterministic_by_default(restore_environment, monkeypatch):
    """Without `deterministic`, torch's algorithm settings are left alone."""
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", calls.append)
    seed_everything(0)
    assert calls == []
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3", None, np.float64(2.0)])
def test_seed_everything_rejects_non_integers_and_negatives(seed):
    """A negative, non-integer or boolean seed is a ValueError showing the value."""
    with pytest.raises(ValueError, match=r"must be an integer in \[0, 2\*\*63\); received"):
        seed_everything(seed)


def test_seed_everything_takes_a_numpy_integer():
    """`seed_everything(np.int64(3))` seeds as 3 does (Python's `random` refuses numpy's ints)."""
    assert seed_everything(np.int64(3)) == 3
    first = torch.rand(1)
    seed_everything(3)
    assert torch.equal(first, torch.rand(1))
