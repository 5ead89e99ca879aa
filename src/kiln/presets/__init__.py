"""Presets: ready-made configurations of the one `kiln.Trainer` loop, never a second loop.

What lives here: `AutoTrainer`, which trains a network on a dataset in one call (the auto
criterion, RAdam with Lookahead, a reproducible validation split, relative early stopping,
golden-ratio decay with restarts, best-N averaging, a stop file), `fit_table` for in-memory
tables, and the pieces they add to a `Trainer`: `CriterionTrainer` (logs a criterion's unscaled
loss) and `Score`.
What does not: the loop (`kiln.trainer`), the criterion (`kiln.losses.MixedCriterion`).

Example:
    >>> from kiln.presets import AutoTrainer, fit_table
    >>> AutoTrainer.__name__, fit_table.__name__
    ('AutoTrainer', 'fit_table')
"""

from kiln.presets.auto import AutoTrainer, auto_callbacks, fit_table
from kiln.presets.files import read_auto_record
from kiln.presets.scored import CriterionTrainer, Score

__all__ = [
    "AutoTrainer",
    "CriterionTrainer",
    "Score",
    "auto_callbacks",
    "fit_table",
    "read_auto_record",
]
