"""The loop options a saved trainer records, and how `kiln.load` chooses them again.

`save_trainer` records how each optimizer step was made: the `LoopOptions` that change what a
run computes (precision, accumulation, clipping, non-finite losses), under the key `"step"`, as
plain data. `load` gives the new trainer those options; each one passed to `load` wins (`None`
included: `clip_norm=None` turns recorded clipping off). A file without the record (a save from
before it, a run's `last.ckpt`, a `state_dict`, a `.safetensors` export) gives the `Trainer`
defaults for the options not passed.

`compile` is not recorded: it is how one machine runs the model, not what the run computes.
"""

from __future__ import annotations

import enum
from typing import Any

from kiln.options import LoopOptions

__all__ = ["RECORDED", "RECORDED_OPTIONS", "Recorded", "recorded_options", "options_record"]

#: The loop options a saved trainer records, by their `Trainer(...)` names.
RECORDED_OPTIONS = ("precision", "accumulate", "clip_norm", "clip_value", "nonfinite")
#: One choice in two options: passing either replaces the recorded clipping as a whole.
_CLIPPING = ("clip_norm", "clip_value")


class Recorded(enum.Enum):
    """The type of `RECORDED`, a loop option `kiln.load` was not given."""

    RECORDED = "recorded"

    def __repr__(self) -> str:
        return "RECORDED"


#: "What the file recorded" (else the `Trainer` default): an option of `kiln.load` not passed.
RECORDED = Recorded.RECORDED


def options_record(options: LoopOptions) -> dict[str, Any]:
    """Return `options` as the plain data `save_trainer` writes under `"step"`.

    Example:
        >>> record = options_record(LoopOptions(precision="bfloat16", accumulate=4, clip_norm=1.0))
        >>> record["precision"], record["accumulate"], record["clip_norm"], record["clip_value"]
        ('bf16', 4, 1.0, None)
    """
    return {name: getattr(options, name) for name in RECORDED_OPTIONS}


def recorded_options(record: Any, given: dict[str, Any], source: str) -> dict[str, Any]:
    """Return the loop options of the trainer `load` builds: passed, else recorded.

    An option passed (anything but `RECORDED`) wins over its record, `None` included. Clipping
    is one choice: passing `clip_norm` or `clip_value` replaces both recorded values. Options
    neither passed nor recorded are left out, so the `Trainer` defaults apply.

    Args:
        record: The file's `"step"` entry; None for a file without one.
        given: The loop options passed to `kiln.load`, `RECORDED` where not passed.
        source: The file, for messages.

    Raises:
        ValueError: If the record is damaged, names options this kiln does not know, or holds
            a value it cannot use that is not overridden; the message names the file and the
            argument that overrides the value.

    Example:
        >>> given = dict.fromkeys(RECORDED_OPTIONS, RECORDED) | {"clip_value": 0.5}
        >>> record = options_record(LoopOptions(accumulate=4, clip_norm=1.0))
        >>> recorded_options(record, given, "run.kiln")
        {'precision': '32', 'accumulate': 4, 'nonfinite': 'raise', 'clip_value': 0.5}
    """
    passed = {name: value for name, value in given.items() if value is not RECORDED}
    recorded = _checked(record, source)
    if any(name in passed for name in _CLIPPING):
        recorded = {name: value for name, value in recorded.items() if name not in _CLIPPING}
    for name, value in recorded.items():
        if name not in passed:
            _check_value(name, value, source)
    if recorded.get("clip_norm") is not None and recorded.get("clip_value") is not None:
        raise ValueError(
            f"{source} records both clip_norm={recorded['clip_norm']!r} and clip_value="
            f"{recorded['clip_value']!r}; a trainer clips one way. Choose one: kiln.load(path, "
            "clip_norm=...) or kiln.load(path, clip_value=...)."
        )
    return {**recorded, **passed}


def _checked(record: Any, source: str) -> dict[str, Any]:
    """Return the record as a dict of the known options, all of them (empty: no record)."""
    if record is None:
        return {}
    names = set(map(str, record)) if isinstance(record, dict) else set()
    if not isinstance(record, dict) or names != set(RECORDED_OPTIONS):
        received = sorted(names) if isinstance(record, dict) else type(record).__name__
        unknown = sorted(names - set(RECORDED_OPTIONS))
        hint = (
            f"It names options this kiln does not know ({', '.join(unknown)}): load it with the "
            "kiln version that wrote it."
            if unknown
            else "Write it again with trainer.save(path)."
        )
        raise ValueError(
            f"The loop options recorded in {source} are damaged or were not written by kiln: "
            f"expected a dict of {', '.join(RECORDED_OPTIONS)}; received {received}. {hint}"
        )
    return dict(record)


def _check_value(name: str, value: Any, source: str) -> None:
    """Raise a `ValueError` naming `source` if `LoopOptions` refuses the recorded `value`."""
    try:
        LoopOptions(**{name: value})
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{source} records the loop option {name}={value!r}, which this kiln cannot use "
            f"({error}). Choose it when loading: kiln.load(path, {name}=...)."
        ) from error
