"""Reading a monitored value: which direction is better, and whether a value improved."""

from __future__ import annotations

import math

#: Words in a logged name that mean "larger is better", and "smaller is better".
_HIGHER = ("acc", "accuracy", "score", "f1", "auc", "auroc", "precision", "recall", "r2", "top")
_LOWER = ("loss", "error", "mse", "mae", "rmse", "perplexity")


def resolve_mode(owner: str, monitor: str, mode: str) -> str:
    """Return "min" or "max" for `monitor`, reading "auto" from the name.

    Raises:
        ValueError: If `mode` is not "auto", "min" or "max", or "auto" cannot tell.
    """
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise ValueError(f"{owner}: `mode` must be 'auto', 'min' or 'max'; received {mode!r}.")
    words = monitor.lower().removeprefix("val_").replace("-", "_").split("_")
    if any(word in _LOWER for word in words):
        return "min"
    if any(word in _HIGHER or word.startswith("top") for word in words):
        return "max"
    raise ValueError(
        f"{owner} received monitor={monitor!r}, but cannot tell whether that value should be "
        "minimized or maximized. Pass mode='min' (for a loss or an error) or mode='max' (for an "
        "accuracy or a score)."
    )


def improved(value: float, best: float, mode: str, min_delta: float = 0.0) -> bool:
    """Tell whether `value` beats `best` by more than `min_delta` (NaN never improves)."""
    if math.isnan(value):
        return False
    if mode == "min":
        return value < best - min_delta
    return value > best + min_delta


def initial_best(mode: str) -> float:
    """The value every first result beats."""
    return math.inf if mode == "min" else -math.inf
