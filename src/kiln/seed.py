"""Every random generator a training run uses: seeding them, capturing and restoring their state.

What lives here: `seed_everything`, and `get_rng_state`/`set_rng_state` (tensors and plain data,
which checkpoints hold). What does not: the per-pass orders of `Data`, which derive
from their own seed (`data/in_memory.py`).
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

from kiln.options import whole_number


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
    if whole_number(seed) is None or not 0 <= seed < 2**63:
        raise ValueError(f"`seed` must be an integer in [0, 2**63); received {seed!r}.")
    seed = int(seed)  # numpy's integers too
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA and MPS device
    os.environ["PYTHONHASHSEED"] = str(seed)  # inherited by worker processes started later
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return seed


def get_rng_state() -> dict[str, Any]:
    """Return the states of Python's, NumPy's and torch's generators (CPU and every CUDA device).

    The result holds only tensors and plain data, so `safe_load` can read it back.

    Example:
        >>> import torch
        >>> state = get_rng_state(); a = torch.rand(1)
        >>> set_rng_state(state); bool(torch.rand(1) == a)
        True
    """
    version, internal, gauss = random.getstate()
    numpy_state: tuple[Any, ...] = np.random.get_state(legacy=True)  # type: ignore[assignment]
    name, keys, position, has_gauss, cached = numpy_state
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _tensor_of(value: Any, dtype: torch.dtype, shape: tuple[int, ...] | None) -> bool:
    return (
        isinstance(value, torch.Tensor)
        and value.dtype == dtype
        and (tuple(value.shape) == shape if shape is not None else value.dim() == 1)
    )


def rng_state_problem(state: Any) -> str | None:
    """Say what is wrong with `state` as what `get_rng_state` returns, or return `None`.

    Every part is checked, down to the sizes (624 NumPy keys, torch's state in bytes), so that a
    damaged checkpoint is refused before any generator changes.

    Example:
        >>> rng_state_problem(get_rng_state()) is None
        True
        >>> rng_state_problem({"python": [3, [], None]})
        "Python's generator state is not [version, 625 integers, gauss]"
    """
    if not isinstance(state, dict):
        return f"the generators' state is a {type(state).__name__}, not a dict"
    python, numpy_state = state.get("python"), state.get("numpy")
    if not (
        isinstance(python, (list, tuple))
        and len(python) == 3
        and type(python[0]) is int
        and isinstance(python[1], (list, tuple))
        and len(python[1]) == 625
        and all(type(item) is int for item in python[1])
        and (python[2] is None or type(python[2]) is float)
    ):
        return "Python's generator state is not [version, 625 integers, gauss]"
    if not (
        isinstance(numpy_state, (list, tuple))
        and len(numpy_state) == 5
        and numpy_state[0] == "MT19937"
        and _tensor_of(numpy_state[1], torch.int64, (624,))
        and all(type(item) is int for item in numpy_state[2:4])
        and type(numpy_state[4]) is float
    ):
        return "NumPy's generator state is not ['MT19937', 624 keys, position, has_gauss, gauss]"
    if not _tensor_of(state.get("torch"), torch.uint8, tuple(torch.get_rng_state().shape)):
        return f"torch's generator state is not {torch.get_rng_state().numel()} bytes (uint8)"
    cuda = state.get("cuda")
    if not (isinstance(cuda, list) and all(_tensor_of(item, torch.uint8, None) for item in cuda)):
        return "the CUDA generators' states are not a list of byte tensors"
    return None


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators to a state returned by `get_rng_state`.

    The whole state is checked first (`rng_state_problem`): a damaged one changes no generator.

    Raises:
        ValueError: If `state` is not what `get_rng_state` returns, saying which part.
    """
    problem = rng_state_problem(state)
    if problem is not None:
        raise ValueError(
            f"Cannot restore the random generators: {problem}. Pass what get_rng_state() "
            "returned (a checkpoint's 'rng'), unchanged."
        )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
