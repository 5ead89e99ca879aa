"""Model weights in a file: written with the epoch and values they came from, read from any file.

What lives here: the small "kiln-weights" record that `kiln.callbacks.Checkpoint` writes (the
model's `state_dict` with its epoch and logged values), and `load_weights`, which finds a model's
`state_dict` in such a record, in a full trainer checkpoint (`last.ckpt`) or in a bare
`state_dict` file. What does not: file safety (`files.py`), the whole training state and loading
weights into a model with clear errors (`run.py`).
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kiln.checkpoint.files import CheckpointError, atomic_save, safe_load

#: The value of the "format" key of a weights record.
WEIGHTS_FORMAT = "kiln-weights"


def weights_record(
    model: nn.Module, epoch: int | None = None, logs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return the record `save_weights` writes: the weights with where they came from.

    Args:
        model: The network whose `state_dict` is recorded.
        epoch: The epoch after which the weights were taken (1-based), if known.
        logs: The values logged for that epoch (plain numbers).

    Example:
        >>> import torch
        >>> record = weights_record(torch.nn.Linear(2, 1), epoch=3, logs={"loss": 0.5})
        >>> record["format"], record["epoch"], sorted(record["model"])
        ('kiln-weights', 3, ['bias', 'weight'])
    """
    return {
        "format": WEIGHTS_FORMAT,
        "epoch": epoch,
        "logs": dict(logs or {}),
        "model": model.state_dict(),
    }


def save_weights(
    model: nn.Module,
    path: str | Path,
    epoch: int | None = None,
    logs: Mapping[str, Any] | None = None,
) -> Path:
    """Write `model`'s weights, with `epoch` and `logs`, to `path` atomically.

    Missing directories in `path` are created. Read the weights back with `load_weights`.

    Args:
        model: The network to save.
        path: The file to write.
        epoch: The epoch after which the weights were taken, if known.
        logs: The values logged for that epoch.

    Returns:
        The path written.

    Raises:
        CheckpointError: If the file cannot be written.

    Example:
        >>> import tempfile, torch
        >>> net = torch.nn.Linear(2, 1)
        >>> path = save_weights(net, tempfile.mkdtemp() + "/best/net.pt", epoch=2)
        >>> torch.equal(load_weights(path)["weight"], net.weight)
        True
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_save(weights_record(model, epoch, logs), path)


def load_weights(path: str | Path) -> dict[str, Any]:
    """Return the model `state_dict` held in the file at `path`, on the CPU.

    Three kinds of files are understood: a weights record written by `save_weights` or
    `kiln.callbacks.Checkpoint(what="model")`; a full checkpoint of a trainer (`last.ckpt`,
    `Checkpoint(what="trainer")`, or any dict whose `"model"` or `"state_dict"` entry is the
    weights); and a bare `state_dict` (a dict of tensors, as `torch.save(net.state_dict())`
    writes). The file is read without running any code from it.

    Args:
        path: The file.

    Returns:
        The weights, ready for `model.load_state_dict` or
        `kiln.checkpoint.run.load_model_state`.

    Raises:
        CheckpointError: If the file is missing, damaged, holds objects that are not plain
            data, or holds something other than model weights (a `ValueError` too).

    Example:
        >>> import tempfile, torch
        >>> path = tempfile.mkdtemp() + "/bare.pt"
        >>> torch.save(torch.nn.Linear(2, 1).state_dict(), path)
        >>> sorted(load_weights(path))
        ['bias', 'weight']
    """
    content = safe_load(path)
    if isinstance(content, dict):
        weights = next(
            (content[key] for key in ("model", "state_dict") if isinstance(content.get(key), dict)),
            content,
        )
        if weights and all(
            isinstance(key, str) and isinstance(value, torch.Tensor)
            for key, value in weights.items()
        ):
            return dict(weights)
        keys = ", ".join(repr(key) for key in list(content)[:10]) or "none"
        raise CheckpointError(
            errno.EINVAL,
            f"{path} holds a dict with the keys {keys}, but no model weights (a dict of tensors "
            "by name). Expected a file written by kiln's Checkpoint or save_weights (key "
            "'model'), a trainer checkpoint (key 'model' or 'state_dict'), or a bare state_dict: "
            "save the weights with `torch.save(model.state_dict(), path)`.",
        )
    raise CheckpointError(
        errno.EINVAL,
        f"{path} holds a {type(content).__name__}, but model weights are a dict of tensors. "
        "Save them with `torch.save(model.state_dict(), path)` or kiln's Checkpoint.",
    )
