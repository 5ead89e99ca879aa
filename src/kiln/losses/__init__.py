"""Loss functions: resolving names, applying sample weights, checking the first batch.

What lives here: `LossFunction`, the wrapper the trainer calls, `resolve_loss`, and
`MixedCriterion`, the auto (mixed regression/classification) criterion of the auto preset. What
does not: the preset itself (`kiln.presets`).
"""

from kiln.losses.function import LOSS_NAMES, LossFunction, resolve_loss
from kiln.losses.mixed import MixedCriterion

__all__ = ["LOSS_NAMES", "LossFunction", "MixedCriterion", "resolve_loss"]
