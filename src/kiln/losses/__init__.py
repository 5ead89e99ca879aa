"""Loss functions: resolving names, applying sample weights, checking the first batch.

What lives here: `LossFunction`, the wrapper the trainer calls, and `resolve_loss`. What does
not: the auto (mixed regression/classification) criterion, which arrives with the auto preset.
"""

from kiln.losses.function import LOSS_NAMES, LossFunction, resolve_loss

__all__ = ["LOSS_NAMES", "LossFunction", "resolve_loss"]
