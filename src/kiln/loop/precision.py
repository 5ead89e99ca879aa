"""Making batches faster without changing the loop: mixed precision and `torch.compile`.

What lives here: the autocast context of a precision, the gradient scaler fp16 needs, the cast of
half-precision predictions back to float32, and compiling a model's forward with a fallback to
eager execution. What does not: what happens to gradients (`optimizer_step.py`).

Precision, by `Trainer(precision=...)`:

| precision | forward and loss                 | gradients, weights, optimizer | devices    |
|-----------|----------------------------------|-------------------------------|------------|
| `"32"`    | float32                          | float32                       | all        |
| `"bf16"`  | autocast to bfloat16 where safe  | float32                       | CPU, CUDA  |
| `"fp16"`  | autocast to float16 where safe   | float32, loss scaled (scaler) | CUDA       |

Autocast runs the step methods of training, validation, evaluation and prediction; losses and
reductions stay in float32 (autocast's own rules), and `predict` returns float32.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

#: The autocast dtype of each mixed precision.
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Return the context a batch's computation runs in: autocast for a mixed precision, or a no-op.

    The returned object may be entered again and again (once per batch).

    Example:
        >>> import torch
        >>> with autocast("bf16", torch.device("cpu")):
        ...     torch.nn.Linear(2, 2)(torch.randn(1, 2)).dtype
        torch.bfloat16

    Raises:
        ValueError: For `"fp16"` on a device other than CUDA, or a mixed precision on a device
            autocast does not support.
    """
    if precision == "32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision='fp16' needs a CUDA device (float16 with a gradient scaler), but this "
            f"trainer runs on {device}. Use precision='bf16' on the CPU, or precision='32'."
        )
    if device.type not in ("cpu", "cuda"):
        raise ValueError(
            f"precision={precision!r} runs under torch.autocast on the CPU or CUDA; this trainer "
            f"runs on {device}. Use precision='32' there."
        )
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """Return the gradient scaler `"fp16"` needs (float16 gradients underflow), else None.

    Example:
        >>> import torch
        >>> grad_scaler("bf16", torch.device("cpu")) is None
        True
    """
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def full_precision(obj: Any) -> Any:
    """Return `obj` with half-precision floating tensors cast to float32 (nested structures too).

    Example:
        >>> import torch
        >>> full_precision({"y": torch.ones(2, dtype=torch.bfloat16)})["y"].dtype
        torch.float32
    """
    if isinstance(obj, Tensor):
        return obj.float() if obj.dtype in (torch.bfloat16, torch.float16) else obj
    if isinstance(obj, dict):
        return {key: full_precision(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [full_precision(value) for value in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    return obj


def _warn_eager(model: nn.Module, error: BaseException) -> None:
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    warnings.warn(
        f"compile=True: torch.compile could not compile {type(model).__name__} "
        f"({type(error).__name__}: {first_line}); training continues in eager mode, "
        "uncompiled. Pass compile=False to silence this.",
        RuntimeWarning,
        stacklevel=3,
    )


def compile_model(model: nn.Module, compiler: Callable[..., Any] | None = None) -> bool:
    """Compile `model`'s forward in place with `torch.compile`; return whether it is compiled.

    Compilation is lazy: `torch.compile` only wraps the forward, which is traced at its first
    call. If wrapping fails, or the first compiled calls fail inside torch's compiler (a missing
    C compiler, an unsupported operation), the model runs eagerly from then on, after one
    `RuntimeWarning` that says why. The model keeps its class and `state_dict` keys (the
    forward is compiled the way `nn.Module.compile` does it), so checkpoints are unaffected.

    Args:
        model: The module whose calls to compile.
        compiler: The compiling function (default `torch.compile`).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 2)
        >>> compile_model(model, compiler=lambda fn: fn)  # an identity "compiler"
        True
    """
    compiler = torch.compile if compiler is None else compiler
    eager = model._call_impl
    try:
        compiled = compiler(eager)
    except Exception as error:  # any failure: fall back, say why
        _warn_eager(model, error)
        return False
    from torch._dynamo.exc import TorchDynamoException  # imported only when compiling

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except TorchDynamoException as error:
            model._compiled_call_impl = None  # eager from now on
            _warn_eager(model, error)
            return eager(*args, **kwargs)  # type: ignore[no-untyped-call]

    model._compiled_call_impl = call
    return True
