"""Choosing the device to train on.

What lives here: `resolve_device`, which reads `device="auto" | "cpu" | "cuda:1" | 1 | False`.
What does not: moving batches (`data/batch.py`) or distributed placement (`distributed/`).
"""

from __future__ import annotations

import torch

from kiln.options import whole_number


def _best_cuda_device() -> torch.device:
    """Return the CUDA device with the most free memory."""
    free = [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]
    return torch.device("cuda", max(range(len(free)), key=free.__getitem__))


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | int | bool | torch.device | None = "auto") -> torch.device:
    """Return the `torch.device` that a `device` argument names.

    `"auto"` (or `None` or `True`) takes the CUDA device with the most free memory, then Apple's
    MPS, then the CPU. An int is a CUDA index; `False` is the CPU.

    Args:
        device: `"auto"`, `"cpu"`, `"cuda"`, `"cuda:1"`, `"mps"`, an int, a bool or a
            `torch.device`.

    Returns:
        The device.

    Raises:
        ValueError: If the device is unknown or not present on this machine.
        TypeError: If `device` is of another type.

    Example:
        >>> resolve_device(False)
        device(type='cpu')
    """
    if device is None or device is True or device == "auto":
        if torch.cuda.is_available():
            return _best_cuda_device()
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if device is False:
        return torch.device("cpu")
    if whole_number(device) is not None:  # numpy's integers too
        device = int(device)  # type: ignore[arg-type]
        if device < 0:
            raise ValueError(f"`device={device}` is not a CUDA index; indices start at 0.")
        device = torch.device("cuda", device)
    elif isinstance(device, str):
        try:
            device = torch.device(device)
        except RuntimeError as error:
            raise ValueError(
                f"`device={device!r}` is not a device name. Use 'auto', 'cpu', 'cuda', "
                "'cuda:1', 'mps', an int (a CUDA index) or False (the CPU)."
            ) from error
    if not isinstance(device, torch.device):
        raise TypeError(
            f"`device` must be 'auto', a device name, an int or a bool; received "
            f"{type(device).__name__}."
        )
    _check_present(device)
    return device


def _check_present(device: torch.device) -> None:
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"`device={str(device)!r}` asks for a GPU, but torch sees no CUDA device here. "
                "Use device='auto' to fall back to the CPU, or install a CUDA build of torch."
            )
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"`device={str(device)!r}` does not exist: this machine has {count} CUDA "
                f"device(s), cuda:0 to cuda:{count - 1}."
            )
    elif device.type == "mps" and not _mps_available():
        raise ValueError("`device='mps'` asks for Apple's GPU, which is not available here.")


def check_materialized(model: torch.nn.Module) -> None:
    """Raise `ValueError` if the model has tensors on the meta device (shapes, no values).

    Such a model can be neither moved to a device nor run; torch's own error from `.to` names
    a method without saying what the model lacks.

    Example:
        >>> check_materialized(torch.nn.Linear(2, 1))
    """
    tensors = [*model.named_parameters(), *model.named_buffers()]
    meta = [name for name, tensor in tensors if tensor.is_meta]
    if meta:
        shown = ", ".join(meta[:5]) + (f" and {len(meta) - 5} more" if len(meta) > 5 else "")
        raise ValueError(
            f"The model {type(model).__name__} has tensors on the meta device ({shown}): "
            "their shapes are known but they hold no values, so it can be neither moved to "
            "a device nor trained. Fix: build it on a real device, or give it values first: "
            "`model.to_empty(device='cpu')`, then `model.load_state_dict(weights)` or reset "
            "its parameters."
        )
