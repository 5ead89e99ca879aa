"""`TrainState`: everything a callback may want to know about the run, in one place.

What lives here: the state's fields and their meaning. What does not: the code that advances
them (`trainer.py`) or the values' history across epochs (`history.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.loop.step_methods import StepOutput


@dataclass
class TrainState:
    """The run-time state of a `Trainer`, read by callbacks as `trainer.state`.

    Counters count completed work and start at 0: in the first epoch `epoch` is 0, and after it
    `epoch` is 1, which is also the 1-based number under which the epoch is logged.

    | field             | meaning                                                                  |
    |-------------------|--------------------------------------------------------------------------|
    | `epoch`           | training epochs completed, across all `fit` calls of this trainer        |
    | `max_epochs`      | the epoch count the current `fit` runs to                                |
    | `max_steps`       | the step count the current `fit` stops at (`fit(max_steps=)`), or `None` |
    | `max_samples`     | the sample count it stops at (`fit(max_samples=)`), or `None`            |
    | `step`            | optimizer steps completed (one per `accumulate` batches)                 |
    | `samples`         | training samples processed                                               |
    | `skipped_batches` | batches left out for a non-finite loss (`nonfinite="skip"`)              |
    | `num_batches`     | batches in one training epoch (all its passes), or `None` if unknown     |
    | `batch_idx`       | 0-based index of the current batch in its pass (training or validation)  |
    | `data`            | the data of the current pass (what `fit`, `evaluate` received, batched)  |
    | `val_data`        | the validation data of the current `fit`, or `None`                      |
    | `batch`           | the current batch, already on the device                                 |
    | `output`          | the `StepOutput` of the last training or validation batch                |
    | `logs`            | the current epoch's values (`loss`, `accuracy`, `val_loss`, `lr`, ...)   |
    | `stage`           | `"train"`, `"validation"` or `None` between passes                       |
    | `resumed`         | whether the current `fit` continued a run saved in the directory         |
    | `should_stop`     | set by `trainer.request_stop`; the loop stops after the current step     |
    | `stop_reason`     | why the run stopped early, in words                                      |
    | `stop_resumable`  | the stop only pauses the run (a signal, `max_steps`, `max_samples`)      |
    |                   | and `resume=True` continues it; a `request_stop` ends it for good        |
    | `interrupt`       | `"SIGINT"` or `"SIGTERM"` when a signal stopped the run, else `None`     |
    | `pre_val_logs`    | the values of the validation before training (`fit(pre_val=True)`)       |
    | `error`           | the exception being raised, during the `EXCEPTION` event                 |

    Example:
        >>> from kiln import TrainState
        >>> TrainState().epoch
        0
    """

    epoch: int = 0
    max_epochs: int = 0
    max_steps: int | None = None
    max_samples: int | None = None
    step: int = 0
    samples: int = 0
    skipped_batches: int = 0
    num_batches: int | None = None
    batch_idx: int = 0
    data: Any = None
    val_data: Any = None
    batch: Any = None
    output: StepOutput | None = None
    logs: dict[str, float] = field(default_factory=dict)
    stage: str | None = None
    resumed: bool = False
    should_stop: bool = False
    stop_reason: str | None = None
    stop_resumable: bool = False
    interrupt: str | None = None
    pre_val_logs: dict[str, float] = field(default_factory=dict)
    error: BaseException | None = None

    def reset_stop(self) -> None:
        """Forget the previous `fit`'s stop and error (a new `fit` call starts)."""
        self.should_stop, self.stop_reason, self.stop_resumable = False, None, False
        self.interrupt, self.error = None, None

    def state_dict(self) -> dict[str, Any]:
        """Return the counters and the last logs: what a checkpoint needs to resume the run.

        The stop reason is kept only for a stop that ends the run: a resumed run continues
        after a pause (a signal, a step or sample budget).
        """
        return {
            "epoch": self.epoch,
            "step": self.step,
            "samples": self.samples,
            "skipped_batches": self.skipped_batches,
            "logs": dict(self.logs),
            "stop_reason": None if self.stop_resumable else self.stop_reason,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the counters and logs saved by `state_dict`."""
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        self.samples = int(state["samples"])
        self.skipped_batches = int(state.get("skipped_batches", 0))
        self.logs = dict(state["logs"])
