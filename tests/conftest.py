"""Shared fixtures: every test starts from the same random state, on one CPU thread."""

import pytest
import torch

import kiln

# One thread: tiny models gain nothing from more, and on a shared 2-core machine (CI) idle
# OpenMP threads spinning against other processes make a test 10x slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything() -> None:
    """Seed every generator with 0 before each test, so that tests are reproducible."""
    kiln.seed_everything(0)
