"""Optimizers: resolving the `optimizer=` argument of the trainer.

What lives here: the table of optimizer names and `resolve_optimizer`. What does not: learning
rate schedules and optimizer wrappers, which arrive with the training-control work.
"""

from kiln.optim.names import OPTIMIZER_NAMES, resolve_optimizer

__all__ = ["OPTIMIZER_NAMES", "resolve_optimizer"]
