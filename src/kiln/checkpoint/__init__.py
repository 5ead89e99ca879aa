"""Checkpoints: atomic, safe reading and writing of the whole training state.

What lives here: writing files so that a crash, a kill or a full disk never leaves a broken one
(`files.py`), loading them without running any code from them (`files.py`), checking a file
that may be damaged or declare more than it holds before and after torch reads it
(`reading.py`), and files of weights with their epoch and logs (`weights.py`, what
`kiln.callbacks.Checkpoint` writes). What does not: deciding when and what to save, which
callbacks do.
"""

from kiln.checkpoint.files import CheckpointError, atomic_save, atomic_write, safe_load
from kiln.checkpoint.weights import load_weights, save_weights
from kiln.seed import get_rng_state, set_rng_state

__all__ = [
    "CheckpointError",
    "atomic_save",
    "atomic_write",
    "get_rng_state",
    "load_weights",
    "safe_load",
    "save_weights",
    "set_rng_state",
]
