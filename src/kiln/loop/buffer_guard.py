"""A refused batch leaves the model as it was, buffers included.

A forward pass in training mode updates some buffers on its own, before any loss is known:
BatchNorm's running mean and variance, its batch count. One NaN in an input batch writes NaN
into them, and every later prediction is NaN, even though the batch's non-finite loss stops
the optimizer step. `BufferGuard` keeps a copy of the buffers before each batch's forward and
puts it back when the batch is refused (`nonfinite="raise"`) or skipped (`"skip"`).

Its cost is one copy of the buffers per batch (a single `_foreach_copy_`), and nothing for a
model without buffers. It guards where each batch's loss is read before its backward (always on
the CPU, and with `"skip"`); where losses are checked at the end of the epoch, the run raises
then and no checkpoint keeps its weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BufferGuard:
    """Copies of a model's buffers, kept before each batch and restored when it is refused.

    Args:
        model: The model whose buffers (`model.buffers()`) to guard.

    Example:
        >>> import torch
        >>> net = torch.nn.BatchNorm1d(2)
        >>> guard = BufferGuard(net)
        >>> guard.keep()
        >>> _ = net(torch.tensor([[float("nan"), 1.0], [0.0, 2.0]]))
        >>> bool(net.running_mean.isnan().any())
        True
        >>> guard.restore()
        >>> net.running_mean.tolist()
        [0.0, 0.0]
    """

    def __init__(self, model: nn.Module) -> None:
        self.buffers: list[Tensor] = list(model.buffers())
        self.copies: list[Tensor] = [buffer.detach().clone() for buffer in self.buffers]

    def __bool__(self) -> bool:
        return bool(self.buffers)

    @torch.no_grad()
    def keep(self) -> None:
        """Copy the buffers as they are now."""
        if self.buffers:
            torch._foreach_copy_(self.copies, self.buffers)

    @torch.no_grad()
    def restore(self) -> None:
        """Put the buffers back as `keep` last copied them."""
        if self.buffers:
            torch._foreach_copy_(self.buffers, self.copies)
