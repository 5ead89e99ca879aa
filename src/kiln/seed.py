"""Seeding every random generator a training run uses.

What lives here: `seed_everything`. What does not: the per-pass orders of `Data`, which derive
from their own seed (`data.py`).
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed Python's `random`, NumPy and torch on every device, and return the seed.

    The same seed repeats a run exactly on the same machine with the same number of CPU threads
    (`torch.get_num_threads()`): reductions split over a different number of threads add in a
    different order.

    Args:
        seed: The seed, a non-negative integer.
        deterministic: Also ask torch for deterministic algorithms (slower on the GPU; the CPU
            is deterministic already).

    Returns:
        The seed, for logging.

    Raises:
        ValueError: If the seed is negative or not an integer.

    Example:
        >>> import torch, kiln
        >>> _ = kiln.seed_everything(0); a = torch.rand(1)
        >>> _ = kiln.seed_everything(0); bool(a == torch.rand(1))
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"`seed` must be an integer in [0, 2**63); received {seed!r}.")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA and MPS device
    os.environ["PYTHONHASHSEED"] = str(seed)  # inherited by worker processes started later
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return seed
