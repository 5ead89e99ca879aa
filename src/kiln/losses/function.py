"""`LossFunction`: one callable for named losses, torch loss modules and plain functions.

What lives here: the table of loss names, the wrapper that applies per-sample or per-output
weights, and the resolution of the `loss=` argument. What does not: the checks of a batch's
shapes and labels (`checks.py`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from kiln.losses.checks import CLASSES, ELEMENTWISE, OTHER, check_loss_inputs

#: name -> (function taking `reduction=`, kind of targets it expects)
LOSS_NAMES: dict[str, tuple[Callable[..., Tensor], str]] = {
    "cross_entropy": (F.cross_entropy, CLASSES),
    "nll": (F.nll_loss, CLASSES),
    "bce": (F.binary_cross_entropy, ELEMENTWISE),
    "bce_with_logits": (F.binary_cross_entropy_with_logits, ELEMENTWISE),
    "mse": (F.mse_loss, ELEMENTWISE),
    "l1": (F.l1_loss, ELEMENTWISE),
    "smooth_l1": (F.smooth_l1_loss, ELEMENTWISE),
    "huber": (F.huber_loss, ELEMENTWISE),
    "kl_div": (F.kl_div, ELEMENTWISE),
    "poisson_nll": (F.poisson_nll_loss, ELEMENTWISE),
    "soft_margin": (F.soft_margin_loss, ELEMENTWISE),
    "multilabel_soft_margin": (F.multilabel_soft_margin_loss, OTHER),
}

_ALIASES = {
    "crossentropy": "cross_entropy",
    "ce": "cross_entropy",
    "nllloss": "nll",
    "binary_cross_entropy": "bce",
    "binary_cross_entropy_with_logits": "bce_with_logits",
    "mean_squared_error": "mse",
    "mae": "l1",
    "mean_absolute_error": "l1",
    "kl_divergence": "kl_div",
}

#: torch loss modules whose targets kiln knows how to check.
_MODULE_KINDS: dict[type[nn.Module], str] = {
    nn.CrossEntropyLoss: CLASSES,
    nn.NLLLoss: CLASSES,
    nn.BCELoss: ELEMENTWISE,
    nn.BCEWithLogitsLoss: ELEMENTWISE,
    nn.MSELoss: ELEMENTWISE,
    nn.L1Loss: ELEMENTWISE,
    nn.SmoothL1Loss: ELEMENTWISE,
    nn.HuberLoss: ELEMENTWISE,
    nn.KLDivLoss: ELEMENTWISE,
}


def normalize_name(name: str) -> str:
    """Return the canonical form of a loss name: `"CrossEntropyLoss"` -> `"cross_entropy"`."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key.endswith("loss") and key not in LOSS_NAMES:
        key = key[: -len("loss")].rstrip("_")
    if key in LOSS_NAMES:
        return key
    squeezed = key.replace("_", "")
    for known in (*LOSS_NAMES, *_ALIASES):
        if known.replace("_", "") == squeezed:
            return _ALIASES.get(known, known)
    return _ALIASES.get(key, key)


class LossFunction:
    """The loss the trainer calls: `loss(output, target, weight=None)` returns a scalar.

    Weights come from `(x, w, y)` batches: a weight per sample (shape `(N,)` or `(N, 1)`) or per
    output (the shape of the unreduced loss, such as the target's). The weighted loss is the mean
    of `weight * loss` over the loss's elements, so weights need no normalisation.
    For cross-entropy, per-output weights of shape `(N, classes)` weigh each sample by the
    weight of its true class.

    Args:
        fn: A function with a `reduction=` argument (a torch functional loss), a torch loss
            module, or any callable `fn(output, target)`.
        name: The name shown in messages.
        kind: What targets it expects: `"classes"`, `"elementwise"` or `"other"`.

    Example:
        >>> import torch
        >>> loss = resolve_loss("mse")
        >>> float(loss(torch.zeros(2, 1), torch.ones(2, 1), torch.tensor([1.0, 3.0])))
        2.0
    """

    def __init__(self, fn: Callable[..., Tensor], name: str, kind: str = OTHER) -> None:
        self.fn = fn
        self.name = name
        self.kind = kind
        self._takes_reduction = _accepts(fn, "reduction")
        self._weight_keyword = next((k for k in ("weights", "weight") if _accepts(fn, k)), None)
        if isinstance(fn, nn.Module) and hasattr(fn, "reduction"):
            self._takes_reduction = False  # copied with reduction="none" when weights appear
        self.postproc: Callable[[Tensor], Tensor] | None = getattr(fn, "postproc", None)
        #: The class label the loss skips (torch's `ignore_index`: padding), or None.
        self.ignore_index: int | None = _ignore_index(fn) if kind == CLASSES else None
        #: Whether the targets must lie in [0, 1] (binary cross-entropy).
        self.unit_interval = _is_any(fn, _UNIT_FUNCTIONS) or isinstance(fn, _UNIT_MODULES)
        # torch's own losses take one tensor as output: how a fix message calls them.
        self._torch_loss: str | None = None
        if _is_any(fn, [known for known, _ in LOSS_NAMES.values()]):
            self._torch_loss = f"F.{fn.__name__}"
        elif type(fn) in _MODULE_KINDS:  # not a subclass, whose forward may take a tuple
            self._torch_loss = "criterion"
        #: When set, the next call checks its inputs first; the trainer arms it at each pass.
        self.armed = True

    def __call__(self, output: Any, target: Any, weight: Tensor | None = None) -> Tensor:
        """Return the mean loss of a batch, weighted when `weight` is given."""
        if self.armed:
            self.armed = False
            self.check(output, target)
        if weight is None:
            return self._mean(output, target)
        if self._weight_keyword is not None and not self._takes_reduction:
            return self.fn(output, target, **{self._weight_keyword: weight})
        unreduced = self._unreduced(output, target)
        if (
            self.kind == CLASSES
            and weight.dim() == 2
            and weight.shape[1] != 1
            and unreduced.dim() == 1
        ):
            weight = weight.gather(1, target.long().unsqueeze(1)).squeeze(1)
        elif weight.dim() == 1 or (weight.dim() == 2 and weight.shape[1] == 1):
            weight = weight.reshape(-1, *([1] * (unreduced.dim() - 1)))
        if self.fn is F.kl_div:  # batchmean, as without weights
            return (unreduced * weight).sum() / unreduced.shape[0]
        return (unreduced * weight).mean()

    def _mean(self, output: Any, target: Any) -> Tensor:
        if self.fn is F.kl_div:  # "mean" divides by classes too; batchmean is the KL divergence
            return F.kl_div(output, target, reduction="batchmean")
        return self.fn(output, target)

    def _unreduced(self, output: Any, target: Any) -> Tensor:
        if self._takes_reduction:
            return self.fn(output, target, reduction="none")
        if isinstance(self.fn, nn.Module) and hasattr(self.fn, "reduction"):
            unreduced_fn = _copy_with_reduction_none(self.fn)
            return unreduced_fn(output, target)  # type: ignore[no-any-return]
        raise TypeError(
            f"The loss {self.name} cannot weigh samples: it has no `reduction` argument and no "
            "`weight`/`weights` argument, yet the batches are `(x, w, y)`. Use a named loss "
            "(such as 'mse'), a torch loss module, or a callable `fn(output, target, weights)`."
        )

    def check(self, output: Any, target: Any) -> None:
        """Raise a clear error if `output` and `target` cannot meet in this loss."""
        check_loss_inputs(
            self.name,
            self.kind,
            output,
            target,
            ignore_index=self.ignore_index,
            unit_interval=self.unit_interval,
            torch_loss=self._torch_loss,
        )

    def __repr__(self) -> str:
        return f"LossFunction({self.name})"


#: Losses whose targets lie in [0, 1].
_UNIT_FUNCTIONS = (F.binary_cross_entropy, F.binary_cross_entropy_with_logits)
_UNIT_MODULES = (nn.BCELoss, nn.BCEWithLogitsLoss)


def _ignore_index(fn: Callable[..., Any]) -> int | None:
    """The label a classification loss skips: the module's `ignore_index`, else torch's -100."""
    if isinstance(fn, nn.Module):
        value = getattr(fn, "ignore_index", None)
        return value if isinstance(value, int) else None
    return -100 if _is_any(fn, (F.cross_entropy, F.nll_loss)) else None


def _is_any(fn: Any, functions: Sequence[Any]) -> bool:
    return any(fn is function for function in functions)


def _accepts(fn: Callable[..., Any], keyword: str) -> bool:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return keyword in parameters


def _copy_with_reduction_none(module: nn.Module) -> nn.Module:
    import copy

    unreduced = copy.copy(module)
    unreduced.reduction = "none"  # type: ignore[assignment]
    return unreduced


def resolve_loss(loss: str | Callable[..., Tensor] | LossFunction | None) -> LossFunction | None:
    """Return the `LossFunction` a `loss=` argument names, or `None` for `None`.

    Args:
        loss: A name (case-insensitive, such as `"cross_entropy"` or `"CrossEntropyLoss"`), a
            torch loss module, a callable `fn(output, target)`, or `None`.

    Raises:
        ValueError: If the name is unknown; the message lists the known names.
        TypeError: If `loss` is neither a name nor callable.

    Example:
        >>> resolve_loss("CrossEntropyLoss")
        LossFunction(cross_entropy)
    """
    if loss is None or isinstance(loss, LossFunction):
        return loss
    if isinstance(loss, str):
        key = normalize_name(loss)
        if key not in LOSS_NAMES:
            known = ", ".join(sorted(LOSS_NAMES))
            raise ValueError(
                f"Unknown loss {loss!r}. Known names: {known}. You can also pass a torch loss "
                "module such as `nn.CrossEntropyLoss()` or any callable `fn(output, target)`."
            )
        fn, kind = LOSS_NAMES[key]
        return LossFunction(fn, key, kind)
    if callable(loss):
        kind = next((k for cls, k in _MODULE_KINDS.items() if isinstance(loss, cls)), OTHER)
        name = type(loss).__name__ if isinstance(loss, nn.Module) else _callable_name(loss)
        return LossFunction(loss, name, kind)
    raise TypeError(
        f"`loss` must be a loss name, a torch loss module or a callable; received "
        f"{type(loss).__name__}."
    )


def _callable_name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__name__", type(fn).__name__))
