"""`LRMonitor`: log the learning rate of every parameter group, and optionally momentum and decay.

The trainer logs `lr`, the rate of the first parameter group, once per epoch. `LRMonitor` adds
the rates of the other groups, momentum (or Adam's first beta) and weight decay, and values per
optimizer step. It puts them in `trainer.state.logs`, so every logger, the history and the
progress line pick them up.

What lives here: the callback and `optimizer_values`, which reads the values. What does not:
changing the rate (`LRScheduler`) or writing the values anywhere (the loggers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from kiln.callbacks.base import Callback
from kiln.options import check_flags

if TYPE_CHECKING:
    from kiln.trainer import Trainer

INTERVALS = ("epoch", "step")


def optimizer_values(
    optimizer: torch.optim.Optimizer, momentum: bool = False, weight_decay: bool = False
) -> dict[str, float]:
    """Return the learning rate of each parameter group, and optionally momentum and decay.

    The first group's values are named `lr`, `momentum`, `weight_decay`; the others' add
    `_group_{i}`, such as `lr_group_1`. Momentum is the group's `momentum` (SGD, RMSprop) or
    else the first of its `betas` (Adam and its kin); a group with neither has no momentum
    value.

    Compatibility: Poutyne's `lr_group_{i}` names.

    Example:
        >>> import torch
        >>> w, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
        >>> sgd = torch.optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.5}], lr=0.1,
        ...                       momentum=0.9)
        >>> optimizer_values(sgd, momentum=True)
        {'lr': 0.1, 'momentum': 0.9, 'lr_group_1': 0.5, 'momentum_group_1': 0.9}
    """
    values: dict[str, float] = {}
    for index, group in enumerate(optimizer.param_groups):
        suffix = f"_group_{index}" if index else ""
        values[f"lr{suffix}"] = float(group["lr"])
        if momentum:
            value = group.get("momentum", (group.get("betas") or [None])[0])
            if value is not None:
                values[f"momentum{suffix}"] = float(value)
        if weight_decay and "weight_decay" in group:
            values[f"weight_decay{suffix}"] = float(group["weight_decay"])
    return values


class LRMonitor(Callback):
    """Log the learning rate of every parameter group, and optionally momentum and weight decay.

    At the end of each training pass the values go into the epoch's logs: `lr` (the first
    group, as the trainer logs it anyway), `lr_group_1`, `lr_group_2`, ... for the others, and
    with the options `momentum`, `weight_decay` and their `_group_{i}` forms. They are the values
    the epoch's last step used, read from the optimizer: no device synchronisation.

    With `interval="step"` the values are also put in `trainer.state.logs` before every
    optimizer step, during the training pass (where the logs are otherwise empty until the
    epoch ends): loggers that write per step, such as `TensorBoard(batch_interval=...)`, write
    them as `batch_lr` and so on.

    Args:
        interval: `"epoch"` or `"step"`.
        momentum: Also log momentum (SGD, RMSprop) or Adam's first beta.
        weight_decay: Also log weight decay.

    Raises:
        ValueError: At `fit`, if `momentum=True` and the optimizer has no momentum.

    Example:
        >>> import torch, kiln
        >>> from kiln.callbacks.lr_monitor import LRMonitor
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Linear(4, 1))
        >>> optimizer = torch.optim.SGD([{"params": net[0].parameters()},
        ...                              {"params": net[1].parameters(), "lr": 0.01}], lr=0.1)
        >>> trainer = kiln.Trainer(net, loss="mse", optimizer=optimizer, device="cpu",
        ...                        callbacks=[LRMonitor()], progress=False)
        >>> history = trainer.fit((torch.randn(8, 2), torch.randn(8, 1)), epochs=2)
        >>> history.lr, history.lr_group_1
        ([0.1, 0.1], [0.01, 0.01])
    """

    def __init__(
        self, interval: str = "epoch", momentum: bool = False, weight_decay: bool = False
    ) -> None:
        if not isinstance(interval, str):
            raise TypeError(
                f"LRMonitor: `interval` must be a string, 'epoch' or 'step'; received "
                f"{type(interval).__name__}."
            )
        if interval not in INTERVALS:
            raise ValueError(
                f"LRMonitor: `interval` must be 'epoch' or 'step'; received {interval!r}."
            )
        check_flags("LRMonitor", momentum=momentum, weight_decay=weight_decay)
        self.interval = interval
        self.momentum = momentum
        self.weight_decay = weight_decay

    def on_fit_start(self, trainer: Trainer) -> None:
        """Check that the optimizer has what was asked for."""
        optimizer = trainer.optimizer
        if optimizer is None:
            raise ValueError(
                "LRMonitor reads the optimizer's learning rate, but this trainer has no "
                "optimizer. Create the trainer with one, e.g. `optimizer='adam'`."
            )
        if self.momentum and "momentum" not in optimizer_values(optimizer, momentum=True):
            raise ValueError(
                f"LRMonitor(momentum=True): the optimizer {type(optimizer).__name__} has no "
                "momentum or betas to log. Use momentum=False with this optimizer."
            )

    def on_before_optimizer_step(self, trainer: Trainer) -> None:
        """Per step: put the rates this step is about to use in the logs."""
        if self.interval == "step":
            trainer.state.logs.update(self._values(trainer))

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        """Put the rates the epoch's last step used in the epoch's logs."""
        trainer.state.logs.update(self._values(trainer))

    def _values(self, trainer: Trainer) -> dict[str, Any]:
        optimizer = trainer.optimizer
        if optimizer is None:  # checked at fit start; tells the type checker
            return {}
        return optimizer_values(optimizer, self.momentum, self.weight_decay)
