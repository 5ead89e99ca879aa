"""Optimizers and learning-rate schedules.

What lives here: the table of optimizer names and `resolve_optimizer`, `Lookahead` (and
RAdam inside it, by the name "ranger"); learning-rate curves with a warmup (`WarmupCosine`,
`LinearSchedule`, `ExponentialSchedule`, `ConstantSchedule`), their chain and its planned curve
(`ScheduleChain`, `Plan`, `plot_plan`), a per-epoch function (`EpochFunction`), and a plateau
decay by the golden ratio (`golden_ratio_plateau`).
What does not: applying a schedule during training, which the
`kiln.callbacks.LRScheduler` callback does (it also takes any `torch.optim.lr_scheduler`).
"""

from kiln.optim.lookahead import Lookahead
from kiln.optim.names import COMPOSITE_OPTIMIZERS, OPTIMIZER_NAMES, resolve_optimizer
from kiln.optim.plateau import GOLDEN_FACTOR, golden_ratio_plateau
from kiln.optim.schedule_chain import Plan, ScheduleChain
from kiln.optim.schedule_plot import plot_plan
from kiln.optim.schedules import (
    ConstantSchedule,
    EpochFunction,
    ExponentialSchedule,
    LinearSchedule,
    Schedule,
    WarmupCosine,
)

__all__ = [
    "COMPOSITE_OPTIMIZERS",
    "GOLDEN_FACTOR",
    "OPTIMIZER_NAMES",
    "ConstantSchedule",
    "EpochFunction",
    "ExponentialSchedule",
    "LinearSchedule",
    "Lookahead",
    "Plan",
    "Schedule",
    "ScheduleChain",
    "WarmupCosine",
    "golden_ratio_plateau",
    "plot_plan",
    "resolve_optimizer",
]
