"""`SWA`: stochastic weight averaging, the mean of the weights at the end of epochs.

What lives here: when SWA averages (from `start_epoch`, once an epoch), its learning rate
(torch's `SWALR`), and batch-norm statistics recomputed for the average at the end. What does
not: the averaged copy, its evaluation, swap, file and state (`weight_averaging.py`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import SWALR, get_swa_multi_avg_fn, update_bn

from kiln.callbacks.weight_averaging import WeightAverage
from kiln.data.batch import call_model, on_device, split_batch
from kiln.options import check_flags
from kiln.seed import get_rng_state, set_rng_state

if TYPE_CHECKING:
    from kiln.trainer import Trainer


class _BatchForward(nn.Module):
    """Feed whole batches to a network, as the trainer would: its `training_step`, else x."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch: Any) -> Any:
        method = getattr(self.module, "training_step", None)
        if callable(method):
            return method(batch, 0)
        return call_model(self.module, split_batch(batch)[0])


class SWA(WeightAverage):
    """Stochastic weight averaging: the mean of the weights at the end of epochs.

    From epoch `start_epoch` (1-based) on, the weights at the end of each epoch's training pass
    are averaged in with equal weights (torch's `get_swa_multi_avg_fn`). With `lr`, torch's
    `SWALR` then anneals the learning rate to `lr` over `anneal_epochs` epochs and keeps it
    there (it sets the learning rate each epoch from then on, so other schedules should stop by
    `start_epoch`). At the end of `fit`, when the model has batch normalisation, its statistics
    are recomputed for the averaged weights with one pass over the training data (torch's
    `update_bn`; the random generators are left as they were). The average and the scheduler
    live in this callback's `state_dict`, so a resumed run continues them exactly.

    Args:
        start_epoch: The first epoch whose weights are averaged in.
        lr: The learning rate of the averaging phase, or None to leave the learning rate alone.
        anneal_epochs: Epochs over which the learning rate moves to `lr`.
        anneal_strategy: `"cos"` or `"linear"`.
        recompute_bn: Recompute batch-norm statistics of the average at the end of `fit`.
        validate: Log the average's validation values as `val_swa_loss`, ... (from
            `start_epoch` on).
        swap: At the end of `fit`, load the average into the model (the default: the averaged
            model is the result of SWA). `swa.model` is the averaged network either way.
        save: A file for the average, written at the end of `fit` (relative to `dir`).

    Raises:
        ValueError: For values out of range (see the messages).

    Example:
        >>> import torch, kiln
        >>> X, Y = torch.randn(64, 3), torch.randn(64, 1)
        >>> swa = SWA(start_epoch=2, lr=0.005)
        >>> trainer = kiln.Trainer(torch.nn.Linear(3, 1), loss="mse", optimizer="sgd",
        ...                        callbacks=[swa], device="cpu", progress=False)
        >>> history = trainer.fit((X, Y), val=(X, Y), epochs=4)
        >>> swa.count, "val_swa_loss" in history.epochs[-1], "val_swa_loss" in history.epochs[0]
        (3, True, False)
    """

    tag = "swa"

    def __init__(
        self,
        start_epoch: int = 1,
        lr: float | None = None,
        anneal_epochs: int = 5,
        anneal_strategy: str = "cos",
        recompute_bn: bool = True,
        validate: bool = True,
        swap: bool = True,
        save: str | os.PathLike[str] | None = None,
    ) -> None:
        if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 1:
            raise ValueError(
                f"SWA: `start_epoch` must be a positive integer (the first epoch averaged, "
                f"1-based); received {start_epoch!r}."
            )
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
            raise ValueError(f"SWA: `lr` must be a positive number or None; received {lr!r}.")
        if (
            isinstance(anneal_epochs, bool)
            or not isinstance(anneal_epochs, int)
            or anneal_epochs < 0
        ):
            raise ValueError(
                f"SWA: `anneal_epochs` must be a non-negative integer; received {anneal_epochs!r}."
            )
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"SWA: `anneal_strategy` must be 'cos' or 'linear'; received {anneal_strategy!r}."
            )
        check_flags("SWA", recompute_bn=recompute_bn)
        super().__init__(validate, swap, save)
        self.start_epoch, self.lr = start_epoch, None if lr is None else float(lr)
        self.anneal_epochs, self.anneal_strategy = anneal_epochs, anneal_strategy
        self.recompute_bn = recompute_bn
        self.scheduler: SWALR | None = None
        self._scheduler_state: dict[str, Any] | None = None
        self._train_data: Any = None
        self._swa = get_swa_multi_avg_fn()  # type: ignore[no-untyped-call]

    def _multi_avg_fn(self) -> Any:
        return self._swa

    def on_fit_start(self, trainer: Trainer) -> None:
        """Copy the model and build the scheduler for a new run; a resumed run carries on."""
        fresh = trainer.state.epoch == 0 and not trainer.state.resumed
        super().on_fit_start(trainer)
        optimizer = trainer.optimizer
        if self.lr is not None and optimizer is not None:
            if self.scheduler is None or fresh or self.scheduler.optimizer is not optimizer:
                self.scheduler = SWALR(
                    optimizer,
                    self.lr,
                    self.anneal_epochs,
                    self.anneal_strategy,  # type: ignore[arg-type]
                )
            if self._scheduler_state is not None:
                self.scheduler.load_state_dict(self._scheduler_state)
        self._scheduler_state = None

    def on_train_epoch_start(self, trainer: Trainer) -> None:
        """Remember the training data, for the batch-norm statistics at the end."""
        self._train_data = trainer.state.data

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        """From `start_epoch` on, average the weights in and step the learning rate."""
        if trainer.state.epoch >= self.start_epoch:
            self._update()
            if self.scheduler is not None:
                self.scheduler.step()

    @torch.no_grad()
    def _finish(self, trainer: Trainer) -> None:
        """Recompute batch-norm statistics of the average over the training data."""
        model, data = self.model, self._train_data
        if not self.recompute_bn or data is None:
            return
        if not any(isinstance(module, _BatchNorm) for module in model.modules()):
            return
        rng = get_rng_state()  # dropout and shuffling here must not change the run's randomness
        try:
            batches = ((batch,) for batch in on_device(data, trainer.device))
            update_bn(batches, _BatchForward(model))
        finally:
            set_rng_state(rng)

    def state_dict(self) -> dict[str, Any]:
        """Return the update count, the average and the scheduler's counters."""
        state = dict(super().state_dict())
        if self._pending is None:
            scheduler = None if self.scheduler is None else self.scheduler.state_dict()
            # Plain values only (an old torch keeps the annealing function here).
            state["scheduler"] = (
                None
                if scheduler is None
                else {key: value for key, value in scheduler.items() if not callable(value)}
            )
        return state

    def _load_pending(self, state: dict[str, Any]) -> None:
        super()._load_pending(state)
        self._scheduler_state = state.get("scheduler")
