"""Where batches come from: in-memory `Data`, `split`, `loader`, and turning any input into batches.

- `in_memory.py`: `Data` (tensors sliced a batch at a time), `split`, `loader`.
- `sources.py`: what `fit`, `evaluate` and `predict` accept, turned into batches.
- `batch.py`: reading a batch's parts and moving them to the device.
- `repeated.py`: several passes over the data in one epoch (`kiln.repeat`).
"""

from kiln.data.in_memory import Data, loader, split
from kiln.data.repeated import Repeated, repeat

__all__ = ["Data", "Repeated", "loader", "repeat", "split"]
