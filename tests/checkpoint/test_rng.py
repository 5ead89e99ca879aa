"""Tests of capturing and restoring random generators."""

from __future__ import annotations

import random

import numpy as np
import torch

from kiln.checkpoint import atomic_save, get_rng_state, safe_load, set_rng_state


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_state_restores_python_numpy_and_torch(tmp_path):
    """After set_rng_state, every generator repeats its draws, also through a file."""
    state = get_rng_state()
    first = draws()
    set_rng_state(state)
    assert draws() == first
    path = atomic_save(state, tmp_path / "rng.pt")
    set_rng_state(safe_load(path))
    assert draws() == first
