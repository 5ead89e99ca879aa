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


def improved(
    value: float, best: float, mode: str, min_delta: float = 0.0, min_rel_delta: float = 0.0
) -> bool:
    """Tell whether `value` beats `best` by more than `min_delta` and `min_rel_delta` of `best`.

    The relative margin is a fraction of `best`'s magnitude: for "min" with a positive `best`,
    `value < (1 - min_rel_delta) * best`, such as `value < 0.995 * best`. Both margins add up.
    NaN never improves; the first finite value beats an infinite `best`.

    Example:
        >>> improved(0.996, 1.0, "min", min_rel_delta=0.005), improved(0.99, 1.0, "min", 0, 0.005)
        (False, True)
    """
    if math.isnan(value):
        return False
    # Scaling best (not subtracting a product) gives exactly `0.995 * best`, the rule as written.
    if mode == "min":
        scale = 1.0 - min_rel_delta if best >= 0 else 1.0 + min_rel_delta
        return value < (best * scale if min_rel_delta else best) - min_delta
    scale = 1.0 + min_rel_delta if best >= 0 else 1.0 - min_rel_delta
    return value > (best * scale if min_rel_delta else best) + min_delta


def read_monitored(owner: str, monitor: str, logs: dict[str, float]) -> float | None:
    """Return `monitor`'s value in an epoch's `logs`, or None in an epoch without validation.

    Raises:
        ValueError: If a value the epoch has is missing (the logged values are listed).
    """
    if monitor not in logs:
        if monitor.startswith("val_") and not any(key.startswith("val_") for key in logs):
            return None  # no validation this epoch
        raise ValueError(
            f"{owner}(monitor={monitor!r}) names a value that is not logged. "
            f"Logged values: {', '.join(sorted(logs))}."
        )
    return float(logs[monitor])


def initial_best(mode: str) -> float:
    """The value every first result beats."""
    return math.inf if mode == "min" else -math.inf
