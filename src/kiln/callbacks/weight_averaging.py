"""Averages of the weights along training: what `EMA` and `SWA` share, and `EMA` itself.

What lives here: `WeightAverage`, a `torch.optim.swa_utils.AveragedModel` kept beside the model
and updated after optimizer steps, evaluated on the validation data, swapped into the model or
saved at the end, as the user chooses; and `EMA`, its per-step exponential moving average. What
does not: `SWA` (`swa.py`), averaging the best epochs' snapshots at the end (`best_average.py`),
and the trainer's own checkpoint, which holds the averages through the callbacks' `state_dict`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from kiln.callbacks.base import Callback
from kiln.checkpoint.files import atomic_save, remove_leftover_temporaries
from kiln.checkpoint.weights import weights_record
from kiln.distributed.context import is_main_process
from kiln.options import check_flags

if TYPE_CHECKING:
    from kiln.trainer import Trainer


class WeightAverage(Callback):
    """What `EMA` and `SWA` share: the averaged copy, its evaluation, swap, file and state.

    The average is an `AveragedModel` (`.model` is the averaged network itself), created at the
    start of `fit` as a copy of the model on the model's device: one more copy of the weights
    in the device's memory. Its updates use foreach kernels and a host-side count, so that they
    never wait for the device.

    Attributes:
        tag: The word in the logged names (`val_{tag}_loss`, ...), set by each subclass.

    Args:
        validate: After each validation, evaluate the average on the validation data too and
            log its values as `val_{tag}_loss`, `val_{tag}_accuracy`, ... (once there is an
            average). These can be monitored by other callbacks.
        swap: At the end of a `fit` that raised no error, load the average into the model
            (parameters and buffers). Without it, the model keeps its own weights and
            `apply(model)` loads the average later.
        save: A file to write the average to at the end of `fit` (a `kiln-weights` record, read
            by `kiln.checkpoint.load_weights`); a relative path goes into the trainer's
            `dir`, or the current directory without one. `None`: no file.
    """

    tag = "average"

    def __init__(self, validate: bool, swap: bool, save: str | os.PathLike[str] | None) -> None:
        name = type(self).__name__
        check_flags(name, validate=validate, swap=swap)
        if save is not None and not isinstance(save, (str, os.PathLike)):
            raise TypeError(
                f"{name}: `save` must be a file name such as '{self.tag}.pt', or None; received "
                f"{type(save).__name__}."
            )
        self.validate, self.swap = validate, swap
        self.save = None if save is None else os.fspath(save)
        #: The file written at the end of the last `fit`, if any.
        self.saved_path: Path | None = None
        self._averaged: AveragedModel | None = None
        self._source: nn.Module | None = None
        self._count = 0  # updates so far: the host's copy of `n_averaged`, read without a sync
        self._pending: dict[str, Any] | None = None
        self._floats: tuple[list[Tensor], list[Tensor]] = ([], [])
        self._others: tuple[list[Tensor], list[Tensor]] = ([], [])

    @property
    def count(self) -> int:
        """How many times the weights were averaged in."""
        return self._count

    @property
    def model(self) -> nn.Module:
        """The averaged network (a copy of the trainer's model holding the average).

        Raises:
            ValueError: Before any update.
        """
        if self._averaged is None or self._count == 0:
            raise ValueError(
                f"{type(self).__name__} has no average yet: it is made by fit (and for SWA from "
                "`start_epoch` on)."
            )
        module: nn.Module = self._averaged.module
        return module

    def apply(self, target: Trainer | nn.Module) -> None:
        """Load the average (parameters and buffers) into a model, or a trainer's model.

        Raises:
            ValueError: Before any update.
        """
        model = target if isinstance(target, nn.Module) else getattr(target, "model", None)
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"{type(self).__name__}.apply needs a kiln.Trainer or a torch.nn.Module; "
                f"received {type(target).__name__}."
            )
        model.load_state_dict(self.model.state_dict())

    def added_logs(self, keys: set[str]) -> set[str]:
        """The names this callback adds to the logs, given the names the trainer logs."""
        if not self.validate:
            return set()
        return {f"val_{self.tag}_{key[4:]}" for key in keys if key.startswith("val_")}

    def on_fit_start(self, trainer: Trainer) -> None:
        """Copy the model for a new run; a resumed run or a further `fit` carries on."""
        model = trainer.model
        fresh = trainer.state.epoch == 0 and not trainer.state.resumed
        if self._averaged is None or fresh or self._source is not model:
            self._averaged = AveragedModel(model, multi_avg_fn=self._multi_avg_fn())
            self._count = 0
        if self._pending is not None:
            self._load_pending(self._pending)
            self._pending = None
        self._source = model
        self._cache(model, self._averaged)

    def _multi_avg_fn(self) -> Any:
        raise NotImplementedError

    def _averages_buffers(self) -> bool:
        return False

    def _cache(self, model: nn.Module, averaged: AveragedModel) -> None:
        """Pair each tensor of the average with the model's: floating ones to average."""
        pairs: list[tuple[Tensor, Tensor]] = list(
            zip(averaged.module.parameters(), model.parameters(), strict=True)
        )
        copied: list[tuple[Tensor, Tensor]] = list(
            zip(averaged.module.buffers(), model.buffers(), strict=True)
        )
        if self._averages_buffers():
            pairs += [pair for pair in copied if pair[0].is_floating_point()]
            copied = [pair for pair in copied if not pair[0].is_floating_point()]
        self._floats = ([a for a, _ in pairs], [m for _, m in pairs])
        self._others = ([a for a, _ in copied], [m for _, m in copied])

    @torch.no_grad()
    def _update(self) -> None:
        """Average the model's weights in; the first update copies them."""
        (averaged, live), (copies, sources) = self._floats, self._others
        if self._count == 0:
            torch._foreach_copy_(averaged, live)
        elif averaged:
            self._multi_avg_fn()(averaged, live, self._count)
        if copies:
            torch._foreach_copy_(copies, sources)
        self._count += 1
        if self._averaged is not None:
            self._averaged.n_averaged.add_(1)  # a CPU tensor: no wait for the device

    def on_validation_end(self, trainer: Trainer) -> None:
        """Evaluate the average on the validation data and log `val_{tag}_...` values."""
        state = trainer.state
        if not self.validate or self._count == 0 or state.val_data is None:
            return
        saved = (state.stage, state.batch_idx, state.data, state.batch, state.output)
        try:  # the trainer evaluates the averaged copy as it would the model (its step methods too)
            evaluation = trainer.evaluate(state.val_data, model=self.model)
        finally:
            state.stage, state.batch_idx, state.data, state.batch, state.output = saved
        state.logs.update({f"val_{self.tag}_{k}": v for k, v in evaluation.to_dict().items()})

    def on_fit_end(self, trainer: Trainer) -> None:
        """Finish the average, then swap it into the model and write it, as asked."""
        if trainer.state.error is not None or self._count == 0:
            return
        self._finish(trainer)
        if self.save is not None and is_main_process():  # under torchrun rank 0 writes
            path = Path(self.save).expanduser()
            if not path.is_absolute() and trainer.dir is not None:
                path = trainer.dir / path
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_leftover_temporaries(path.parent)  # of a run killed while writing
            record = weights_record(self.model, trainer.state.epoch, trainer.state.logs)
            self.saved_path = atomic_save(record, path)
        if self.swap:
            self.apply(trainer.model)

    def _finish(self, trainer: Trainer) -> None:
        """Last touches to the average before it is used (SWA: batch-norm statistics)."""

    def state_dict(self) -> dict[str, Any]:
        """Return the update count and the average (tensors on the model's device)."""
        if self._pending is not None:
            return self._pending
        averaged = self._averaged if self._count > 0 else None
        return {
            "count": self._count,
            "averaged": None if averaged is None else averaged.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (at the start of the next `fit`)."""
        self._pending = dict(state)

    def _load_pending(self, state: dict[str, Any]) -> None:
        if self._averaged is None:  # set by on_fit_start just before; tells the type checker
            return
        self._count = int(state["count"])
        if state["averaged"] is not None:
            self._averaged.load_state_dict(state["averaged"])


class EMA(WeightAverage):
    """Keep an exponential moving average of the weights, updated after every optimizer step.

    `average = decay * average + (1 - decay) * weights`, starting from the weights after the
    first step (torch's `get_ema_multi_avg_fn`). Floating-point buffers (batch-norm statistics)
    are averaged too; integer buffers are copied. The average lives in this callback's
    `state_dict`, so a resumed run continues it exactly.

    Args:
        decay: The weight of the past, in (0, 1); 0.999 averages over about 1000 steps.
        validate: Log the average's validation values as `val_ema_loss`, `val_ema_accuracy`...
        swap: At the end of `fit`, load the average into the model (default: keep it apart;
            `ema.apply(trainer)` loads it later, `ema.model` is the averaged network).
        save: A file for the average, written at the end of `fit` (relative to `dir`).

    Raises:
        ValueError: If `decay` is not in (0, 1).

    Example:
        >>> import torch, kiln
        >>> X, Y = torch.randn(64, 3), torch.randn(64, 1)
        >>> ema = EMA(decay=0.9)
        >>> trainer = kiln.Trainer(torch.nn.Linear(3, 1), loss="mse", callbacks=[ema],
        ...                        device="cpu", progress=False)
        >>> history = trainer.fit((X, Y), val=(X, Y), epochs=2, batch_size=16)
        >>> ema.count, "val_ema_loss" in history
        (8, True)
        >>> averaged = ema.model           # the averaged network, ready to use
        >>> ema.apply(trainer)             # or load the average into the trainer's model
    """

    tag = "ema"

    def __init__(
        self,
        decay: float = 0.999,
        validate: bool = True,
        swap: bool = False,
        save: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
            raise ValueError(
                f"EMA: `decay` must be a number in (0, 1), such as 0.999; received {decay!r}."
            )
        super().__init__(validate, swap, save)
        self.decay = float(decay)
        self._ema = get_ema_multi_avg_fn(self.decay)  # type: ignore[no-untyped-call]
        self._step = 0

    def _multi_avg_fn(self) -> Any:
        return self._ema

    def _averages_buffers(self) -> bool:
        return True

    def on_fit_start(self, trainer: Trainer) -> None:
        """Copy the model for a new run; a resumed run carries on."""
        super().on_fit_start(trainer)
        self._step = trainer.state.step

    def on_train_batch_end(self, trainer: Trainer) -> None:
        """Average the weights in after each optimizer step."""
        if trainer.state.step != self._step:
            self._step = trainer.state.step
            self._update()

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        """Catch a step taken after the last batch (a short group of accumulated batches)."""
        self.on_train_batch_end(trainer)
