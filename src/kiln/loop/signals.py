"""Ending a run cleanly on SIGINT (Ctrl-C) and SIGTERM (a scheduler's "please stop").

What lives here: `stop_on_signals`, the context in which `fit` runs. While it is active, the first
SIGINT or SIGTERM only asks the trainer to stop (`trainer.request_stop`); the loop finishes the
current optimizer step (with gradient accumulation, its group of batches), saves the unfinished
epoch where it stands (`dir/last.ckpt`, from which `resume=True` continues at the next batch),
closes the epoch without validating it (logged and counted, in memory), and runs the
end-of-training callbacks. A second signal raises `KeyboardInterrupt` at once, for a run that
must die now.
What does not: what the loop does once asked to stop (`trainer.py`), and saving (`checkpoint/`).

Handlers are Python's own: they run in the main thread between two bytecodes and only set flags,
so a signal that arrives in the middle of writing a checkpoint does not break the file. Outside
the main thread (Python allows handlers only there) nothing is installed. The handlers that
were installed before are put back when `fit` returns or raises.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.trainer import Trainer

#: The signals that end a run cleanly.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM request a clean stop of `trainer`'s run.

    The first signal sets `trainer.state.interrupt` to its name (`"SIGINT"`, `"SIGTERM"`) and
    calls `trainer.request_stop("interrupted by SIGINT")`. The stop is not final: the saved
    state can be resumed with `fit(..., resume=True)`. A second signal raises
    `KeyboardInterrupt` from wherever the program is.

    Example:
        >>> import os, signal, torch, kiln
        >>> trainer = kiln.Trainer(torch.nn.Linear(2, 1), loss="mse", device="cpu",
        ...                        progress=False)
        >>> with stop_on_signals(trainer):
        ...     os.kill(os.getpid(), signal.SIGTERM)
        >>> trainer.state.interrupt, trainer.state.stop_reason
        ('SIGTERM', 'interrupted by SIGTERM')
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        state = trainer.state
        if state.interrupt is not None:
            raise KeyboardInterrupt(f"{name} received again while stopping: aborting at once")
        state.interrupt = name
        if not state.should_stop:  # a stop already asked for (early stopping) keeps its reason
            trainer.request_stop(f"interrupted by {name}")
            state.stop_resumable = True

    previous: dict[signal.Signals, Any] = {}
    try:
        for number in SIGNALS:
            previous[number] = signal.signal(number, handle)
        yield
    finally:
        for number, handler in previous.items():
            # None: the handler was not installed from Python; the default is the best guess.
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
