"""Checkpoints: atomic, safe reading and writing of the whole training state.

What lives here: writing files so that a crash, a kill or a full disk never leaves a broken one
(`files.py`), loading them without running any code from them (`files.py`), and capturing every
random generator (`rng.py`). What does not: deciding when and what to save, which callbacks do.
"""

from kiln.checkpoint.files import CheckpointError, atomic_save, safe_load
from kiln.checkpoint.rng import get_rng_state, set_rng_state

__all__ = ["CheckpointError", "atomic_save", "get_rng_state", "safe_load", "set_rng_state"]
