"""Optimizer names and the resolution of `optimizer=` into a `torch.optim.Optimizer`.

What lives here: the table of torch optimizer classes by name, the composite names (`"ranger"`:
RAdam inside `Lookahead`), default learning rates and `resolve_optimizer`. What does not: the
`Lookahead` wrapper itself (`lookahead.py`) and learning-rate schedules.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from kiln.optim.lookahead import Lookahead

#: Learning rate used when `lr` is not given: 1e-2 for SGD, else 1e-3 (Adam's usual default).
#: Compatibility: Poutyne's default rates.
DEFAULT_LR = {"sgd": 1e-2}
FALLBACK_LR = 1e-3

OPTIMIZER_NAMES: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "radam": torch.optim.RAdam,
    "nadam": torch.optim.NAdam,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "adamax": torch.optim.Adamax,
    "adadelta": torch.optim.Adadelta,
    "asgd": torch.optim.ASGD,
    "rprop": torch.optim.Rprop,
}


#: Names whose foreach implementation computes, on the CPU, the very update of torch's default
#: (for-loop) one, bit for bit: measured over hundreds of steps in float32, float64, bfloat16 and
#: complex64, weights and optimizer state compared with `torch.equal`. kiln builds these with
#: `foreach=True` there, which is faster (torch already picks foreach on CUDA). RAdam, NAdam and
#: ASGD (and RMSprop, Adagrad, Adadelta in bfloat16) differ in the last bits, and so do torch's
#: fused kernels (Adam, AdamW, Adagrad): they keep torch's default.
FOREACH_SAME_UPDATE = frozenset({"sgd", "adam", "adamw", "adamax", "rprop"})


def fastest_options(key: str, params: list[nn.Parameter], lr: Any) -> dict[str, Any]:
    """Return the options that build the optimizer named `key` with torch's fastest same update.

    That is `foreach=True` for the names of `FOREACH_SAME_UPDATE` when every parameter is a
    plain tensor on the CPU (torch's own default there is its slower for-loop), and the rate a
    number (torch refuses a tensor `lr` with foreach); else nothing, torch's default.

    Example:
        >>> import torch
        >>> fastest_options("adam", list(torch.nn.Linear(2, 1).parameters()), 1e-3)
        {'foreach': True}
        >>> fastest_options("radam", list(torch.nn.Linear(2, 1).parameters()), 1e-3)
        {}
    """
    plain_cpu = all(
        type(p) in (torch.Tensor, nn.Parameter) and p.device.type == "cpu" for p in params
    )
    if key in FOREACH_SAME_UPDATE and plain_cpu and not isinstance(lr, torch.Tensor):
        return {"foreach": True}
    return {}


def _ranger(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Build RAdam inside Lookahead (k=5, alpha=0.5): the optimizer named "ranger"."""
    return Lookahead(torch.optim.RAdam(params, lr=lr))


#: Names that build more than one torch class: a function of the parameters and the lr.
COMPOSITE_OPTIMIZERS: dict[str, Callable[[list[nn.Parameter], float], torch.optim.Optimizer]] = {
    "ranger": _ranger,
}

OptimizerSpec = str | torch.optim.Optimizer | Callable[[Iterable[nn.Parameter]], Any]


def check_lr(lr: Any) -> None:
    """Raise a clear error for a learning rate torch would refuse, or for no number at all.

    Zero is a learning rate torch accepts (a frozen or evaluated model); a numpy float or a
    tensor passes as torch takes them.

    Raises:
        TypeError: If `lr` is not a number (a string, a bool).
        ValueError: If `lr` is negative or NaN.

    Example:
        >>> check_lr(0.0), check_lr(None)
        (None, None)
    """
    if lr is None or isinstance(lr, torch.Tensor):
        return
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        fix = f" Pass a number: lr={lr.strip()}." if isinstance(lr, str) and _is_number(lr) else ""
        raise TypeError(
            f"`lr` must be a number (such as 1e-3); received {lr!r} ({type(lr).__name__}).{fix}"
        )
    if not float(lr) >= 0:
        raise ValueError(
            f"`lr` must be a number of at least 0 (0 leaves the weights as they are); received "
            f"{lr!r}."
        )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def resolve_optimizer(
    optimizer: OptimizerSpec, model: nn.Module, lr: float | None
) -> torch.optim.Optimizer:
    """Return the optimizer an `optimizer=` argument names, over the model's parameters.

    Args:
        optimizer: A name (case-insensitive: sgd, adam, adamw, radam, nadam, rmsprop, adagrad,
            adamax, adadelta, asgd, rprop; ranger for RAdam inside `kiln.optim.Lookahead`
            with k=5, alpha=0.5), an optimizer instance, or a callable that takes
            the parameters and returns an optimizer (such as `functools.partial(SGD, lr=0.1)`).
        model: The model whose trainable parameters are optimized.
        lr: The learning rate for a name (default 1e-3; 1e-2 for SGD). An instance or a
            callable sets its own, so `lr` must stay `None` with them.

    A name builds torch's fastest implementation that computes the same update as its default
    one: `foreach=True` on the CPU where that is bit for bit the same (`fastest_options`).

    Raises:
        ValueError: For an unknown name (the message lists the known ones), or `lr` given
            with an instance or a callable, or a negative or NaN `lr` (0 is accepted, as torch
            accepts it: the model is then evaluated or kept frozen).
        TypeError: If `optimizer` is of no accepted kind, the callable returns no optimizer,
            or `lr` is not a number (such as the string `"0.1"`).

    Example:
        >>> import torch
        >>> resolve_optimizer("SGD", torch.nn.Linear(2, 1), lr=0.1).defaults["lr"]
        0.1
        >>> resolve_optimizer("ranger", torch.nn.Linear(2, 1), lr=None)
        Lookahead(RAdam, k=5, alpha=0.5)
    """
    check_lr(lr)
    if isinstance(optimizer, str):
        key = optimizer.strip().lower()
        if key not in OPTIMIZER_NAMES and key not in COMPOSITE_OPTIMIZERS:
            known = ", ".join([*OPTIMIZER_NAMES, *COMPOSITE_OPTIMIZERS])
            raise ValueError(
                f"Unknown optimizer {optimizer!r}. Known names: {known}. "
                "You can also pass an optimizer instance or a callable `fn(params)`."
            )
        rate = lr if lr is not None else DEFAULT_LR.get(key, FALLBACK_LR)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(
                "The model has no trainable parameters, so there is nothing to optimize. "
                "Check that its layers are registered as attributes (not in a plain list: use "
                "nn.ModuleList) and that `requires_grad` is not turned off everywhere. To only "
                "evaluate or predict, pass `optimizer=None`."
            )
        if key in COMPOSITE_OPTIMIZERS:
            return COMPOSITE_OPTIMIZERS[key](params, rate)
        fastest = fastest_options(key, params, rate)
        return OPTIMIZER_NAMES[key](params, lr=rate, **fastest)  # type: ignore[call-arg]
    if lr is not None:
        raise ValueError(
            f"`lr={lr}` cannot apply to an optimizer built outside the trainer; set the learning "
            "rate where you build it, or pass the optimizer by name: optimizer='adam', lr=..."
        )
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if callable(optimizer):
        built = optimizer(p for p in model.parameters() if p.requires_grad)
        if not isinstance(built, torch.optim.Optimizer):
            raise TypeError(
                "The `optimizer` callable must return a torch.optim.Optimizer; it returned "
                f"{type(built).__name__}."
            )
        return built
    raise TypeError(
        "`optimizer` must be a name, a torch.optim.Optimizer or a callable taking the "
        f"parameters; received {type(optimizer).__name__}."
    )
