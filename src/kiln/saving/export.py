"""Exporting a model's weights alone: safetensors with the model's recipe, or a `state_dict`.

What lives here: `export_weights`, which picks the format by the file's suffix, and
`read_safetensors`, which `kiln.load` uses to read such a file back with its recipe. What does
not: saving a whole trainer (`trainer_file.py`), or files of weights written during training
(`checkpoint/weights.py`).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kiln.checkpoint.files import CheckpointError, atomic_save, atomic_write
from kiln.saving.recipe import recipe_of

#: What `export_weights` writes, by the file's suffix.
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
#: Bumped when the layout of the recipe in a safetensors file's metadata changes.
RECIPE_FORMAT = 1


def export_weights(
    model: nn.Module, path: str | os.PathLike[str], weights: dict[str, Any] | None = None
) -> Path:
    """Write `model`'s weights alone, in the format the suffix names, atomically.

    `.safetensors` writes a safetensors file (`pip install safetensors`) whose metadata holds
    the model's recipe as JSON, so `kiln.load` can rebuild the model from it; `.pt` and `.pth`
    write the plain `state_dict` with `torch.save`. Either loads into a model of the same
    architecture with `load_state_dict`, without kiln.

    Args:
        model: The network.
        path: The file to write (missing directories are created).
        weights: The weights to write instead of `model.state_dict()`: the gathered whole
            state of a model sharded over several processes.

    Returns:
        The path written.

    Raises:
        ValueError: If the suffix is none of `.safetensors`, `.pt`, `.pth`.
        ImportError: For `.safetensors` without the `safetensors` package.

    Example:
        >>> import tempfile, torch, kiln
        >>> net = kiln.MLP(4, [8], 2)
        >>> path = export_weights(net, tempfile.mkdtemp() + "/net.pt")
        >>> plain = kiln.MLP(4, [8], 2)
        >>> plain.load_state_dict(torch.load(path, weights_only=True))
        <All keys matched successfully>
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise ValueError(
            f"Cannot export weights to {path}: its suffix {path.suffix!r} names no known "
            f"format. Use one of {', '.join(WEIGHT_SUFFIXES)} (safetensors, or a torch "
            "state_dict), or .onnx or .pt2 for the model for serving (`trainer.export`); "
            "`trainer.save` writes the whole trainer instead."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    # On the CPU, so that the file loads on a machine without the accelerator.
    if weights is None:  # given when the model is sharded: its gathered whole state
        weights = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    if suffix == ".safetensors":
        return _write_safetensors(weights, recipe_of(model), path)
    return atomic_save(weights, path)


def _write_safetensors(weights: dict[str, Any], recipe: dict[str, Any], path: Path) -> Path:
    try:
        from safetensors.torch import save
    except ImportError as error:
        raise ImportError(
            "Exporting to .safetensors needs the safetensors package: `pip install "
            "safetensors` (or `pip install kiln[safetensors]`); or export to .pt instead."
        ) from error
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in weights.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"The model's state_dict holds {key!r}, a {type(value).__name__}, but "
                "safetensors holds tensors only. Export to .pt instead."
            )
        storage = value.untyped_storage().data_ptr()
        # safetensors refuses tensors that share memory (tied weights, such as an embedding
        # reused as the output layer): each later one gets its own copy of the values.
        shared = value.numel() > 0 and storage in seen
        seen.add(storage)
        tensors[key] = value.clone() if shared else value.contiguous()
    metadata = {
        "format": "pt",
        "kiln_recipe_format": str(RECIPE_FORMAT),
        "kiln_version": _kiln_version(),
        "kiln_recipe": json.dumps(recipe),
    }
    data = save(tensors, metadata=metadata)
    return atomic_write(path, lambda file: file.write(data))


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], Any]:
    """Return the weights of a safetensors file and the recipe in its metadata, if any.

    Raises:
        CheckpointError: If there is no file at `path`, or a directory, or it is not a
            safetensors file (empty, truncated, damaged), or its recipe is not valid JSON; the
            message names the file.

    Example:
        >>> import tempfile, kiln
        >>> path = export_weights(kiln.MLP(2, [4], 1), tempfile.mkdtemp() + "/net.safetensors")
        >>> weights, recipe = read_safetensors(path)
        >>> sorted(weights), recipe["target"], recipe["kwargs"]["hidden"]
        (['0.bias', '0.weight', '2.bias', '2.weight'], 'kiln:MLP', [4])
    """
    try:
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file
    except ImportError as error:
        raise ImportError(
            "Loading a .safetensors file needs the safetensors package: `pip install "
            "safetensors` (or `pip install kiln[safetensors]`)."
        ) from error
    if path.is_dir():
        raise CheckpointError(
            errno.EISDIR, f"{path} is a directory, where a .safetensors file was expected."
        )
    if not path.is_file():
        raise CheckpointError(errno.ENOENT, f"No weights file at {path}.")
    try:
        # safetensors checks the header's sizes and offsets against the file before reading.
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        weights = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            errno.EINVAL,
            f"{path} is damaged or is not a safetensors file ({error}): it may have been cut "
            "short or overwritten. Export it again, or load an intact copy.",
        ) from error
    text = metadata.get("kiln_recipe")
    try:
        recipe = None if text is None else json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointError(
            errno.EINVAL,
            f"The model recipe in the metadata of {path} is not valid JSON ({error}): the file "
            "is damaged. Pass the model: kiln.load(path, model=...).",
        ) from error
    return weights, recipe


def _kiln_version() -> str:
    from kiln import __version__  # here: kiln's __init__ imports this module

    return __version__
