"""Multiply-adds of one call of a layer, for `kiln.summary`.

A multiply-add is one multiplication and one addition (the usual "MACs"). Counted:

- `Linear`: output elements x `in_features`; `Bilinear`: output elements x `in1` x `in2`;
- convolutions: output elements x input channels per group x kernel size;
  transposed convolutions: input elements x output channels per group x kernel size;
- `RNN`, `LSTM`, `GRU` (and their cells): every (sample, time step) pair x the elements of the
  weight matrices of all layers and directions (the gate products; the gates' elementwise
  arithmetic is not counted);
- `MultiheadAttention`: the four projections and the two attention products;
- normalisation layers (batch, instance, layer, group and RMS norm): one per output element,
  the scale and shift applied to each value (their statistics are not counted).

Other layers (activations, pooling, dropout, embeddings, reshapes) show `-` and add nothing.
Biases are not counted. Counts are for the whole batch.

What lives here: `count_mult_adds` and the layers it knows. What does not: running the model
and the table (`summary.py`).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence


def count_mult_adds(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
) -> int | None:
    """Return the multiply-adds of one call of `module`, or `None` for a layer not counted.

    See the module docstring for what is counted.

    Example:
        >>> import torch
        >>> layer = torch.nn.Conv2d(3, 8, kernel_size=3, padding=1)
        >>> x = torch.zeros(1, 3, 4, 4)
        >>> count_mult_adds(layer, (x,), {}, layer(x))  # 8*4*4 outputs, 3*3*3 products each
        3456
    """
    first = next(iter(tensors_in((args, kwargs))), None)
    out = next(iter(tensors_in(output)), None)
    if first is None or out is None:
        return None
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    if isinstance(module, nn.Bilinear):
        return out.numel() * module.in1_features * module.in2_features
    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = module.out_channels if module.transposed else module.in_channels
        count = first.numel() if module.transposed else out.numel()
        return count * (per_output // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
        # Every (sample, time step) pair multiplies by every weight matrix once.
        pairs = first.numel() // module.input_size
        weights = [p for name, p in module.named_parameters() if name.startswith("weight")]
        return pairs * sum(p.numel() for p in weights)
    if isinstance(module, nn.MultiheadAttention):
        return _attention_mult_adds(module, [*args, *kwargs.values()])
    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
    if isinstance(module, norms):
        return int(out.numel())
    return None


def _attention_mult_adds(module: nn.MultiheadAttention, args: list[Any]) -> int | None:
    query, key = (args + [None, None])[:2]
    if not isinstance(query, Tensor) or not isinstance(key, Tensor):
        return None

    def length(tensor: Tensor) -> int:  # (L, E) unbatched, (N, L, E) or (L, N, E) batched
        return tensor.shape[-2] if tensor.dim() == 2 or module.batch_first else tensor.shape[0]

    batch = 1 if query.dim() == 2 else query.shape[0 if module.batch_first else 1]
    queries, keys, embed = length(query), length(key), module.embed_dim
    # The query and output projections, the key and value projections, then the scores and
    # the weighted sum of the values (over all heads together: each is embed wide).
    projections = 2 * queries * embed * embed + keys * embed * (module.kdim + module.vdim)
    return int(batch * (projections + 2 * queries * keys * embed))


def tensors_in(value: Any) -> list[Tensor]:
    """Every tensor in `value` (nested tuples, lists, dicts, packed sequences), in order."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, PackedSequence):  # a named tuple, but only its data is an input
        return [value.data]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [tensor for item in value for tensor in tensors_in(item)]
    return []
