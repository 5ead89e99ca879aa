"""Golden-ratio decay: a `ReduceLROnPlateau` that divides the rate by 1.618 on a plateau.

What lives here: `golden_ratio_plateau`, a factory of the torch scheduler. What does not:
stepping it with the monitored value after each epoch, which `kiln.callbacks.LRScheduler` does
(`kiln.callbacks.lr_scheduler.golden_ratio_decay` is the ready-made callback).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau

#: The decay factor: 1 / golden ratio, about 0.618.
GOLDEN_FACTOR = 2 / (1 + math.sqrt(5))


def golden_ratio_plateau(
    optimizer: torch.optim.Optimizer,
    patience: int = 3,
    min_lr_ratio: float = 0.1,
    mode: Literal["min", "max"] = "min",
) -> ReduceLROnPlateau:
    """Divide the rate by the golden ratio after `patience` epochs without improvement.

    `ReduceLROnPlateau(mode, factor=2/(1+sqrt(5)), patience, min_lr=lr*min_lr_ratio)`, where `lr`
    is each parameter group's rate when it is built: by default the rate stops at a tenth.

    Compatibility: PytorchTrainer's decay factor, patience and floor.

    Example:
        >>> import torch
        >>> from kiln.optim import golden_ratio_plateau
        >>> optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> plateau = golden_ratio_plateau(optimizer)
        >>> round(plateau.factor, 4), plateau.patience, [round(lr, 6) for lr in plateau.min_lrs]
        (0.618, 3, [0.01])
    """
    floors = [group["lr"] * min_lr_ratio for group in optimizer.param_groups]
    return ReduceLROnPlateau(
        optimizer, mode=mode, factor=GOLDEN_FACTOR, patience=patience, min_lr=floors
    )
