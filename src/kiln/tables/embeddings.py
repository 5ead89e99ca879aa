"""How a numeric column enters the table network: embeddings of its value.

What lives here: `PeriodicEmbedding` (smooth functions of a value: cosines of it) and
`PiecewiseLinearEmbedding` (sharp ones: where the value lies among its training quantiles).
What does not: scaling the columns (`kinds.py`, `model.RobustScale`), the network that puts the
embeddings beside each other (`model.TableNet`).

Example:
    >>> import torch
    >>> PeriodicEmbedding(3)(torch.zeros(5, 3)).shape
    torch.Size([5, 12])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PeriodicEmbedding(nn.Module):
    """Embed each numeric column by cosines of its value, mixed per column, beside the value.

    For column j: `z = cos(2 * pi * f_j * x_j + phase_j)` with `frequencies` random frequencies
    f_j drawn from N(0, sigma) and phases from U(-pi, pi), then a linear map of its own per
    column (neural-tangent scaled) to `width - 1` numbers, and the value itself in front: each
    column becomes `width` inputs.

    Args:
        columns: Numeric columns.
        frequencies: Cosines per column.
        width: Outputs per column, the value included.
        sigma: The spread of the frequencies.

    Example:
        >>> PeriodicEmbedding(3)(torch.zeros(5, 3)).shape
        torch.Size([5, 12])
    """

    def __init__(
        self, columns: int, frequencies: int = 16, width: int = 4, sigma: float = 0.1
    ) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(sigma * torch.randn(columns, frequencies))
        self.phases = nn.Parameter(math.pi * (2 * torch.rand(columns, frequencies) - 1))
        self.weight = nn.Parameter(torch.randn(columns, frequencies, width - 1))
        self.bias = nn.Parameter(torch.zeros(columns, width - 1))
        self.factor = 1.0 / math.sqrt(frequencies)

    def forward(self, x: Tensor) -> Tensor:
        """Return `(rows, columns * width)`: per column, its value then its embedding."""
        waves = torch.cos(2 * math.pi * x.unsqueeze(-1) * self.frequencies + self.phases)
        mixed = torch.einsum("rcf,cfw->rcw", waves, self.weight) * self.factor + self.bias
        return torch.cat([x.unsqueeze(-1), mixed], dim=-1).flatten(1)


class PiecewiseLinearEmbedding(nn.Module):
    """Embed each numeric column by where its value lies among the column's training quantiles.

    Column j's `bins` bins run between its quantiles `e_0 <= ... <= e_bins` on the training
    rows (set by `fit`); bin t encodes a value x as `clamp((x - e_t) / (e_t+1 - e_t), 0, 1)`:
    0 below the bin, 1 above it, linear within (the piecewise-linear encoding of Gorishniy et
    al., NeurIPS 2022). A linear map of its own per column (neural-tangent scaled) turns the
    `bins` numbers into `width` outputs: a function of the column that can jump between any
    two neighbouring quantiles, as a tree's split does, where the cosines of a
    `PeriodicEmbedding` only bend slowly. Where quantiles coincide (a column of few values) the
    bin is a step at that value. The edges are a buffer: saved and loaded with the weights.

    Args:
        columns: Numeric columns.
        bins: Bins per column.
        width: Outputs per column.

    Example:
        >>> embedding = PiecewiseLinearEmbedding(2, bins=4)
        >>> embedding.fit(torch.linspace(0, 8, 9).repeat(2, 1).T)
        >>> embedding.edges[0].tolist()
        [0.0, 2.0, 4.0, 6.0, 8.0]
        >>> embedding.positions(torch.tensor([[3.0, 9.0]]))[0].tolist()
        [[1.0, 0.5, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
        >>> embedding(torch.zeros(5, 2)).shape
        torch.Size([5, 2, 3])
    """

    edges: Tensor

    def __init__(self, columns: int, bins: int = 16, width: int = 3) -> None:
        super().__init__()
        # evenly spaced over the smoothly clipped range until `fit` sees the data
        self.register_buffer("edges", torch.linspace(-3.0, 3.0, bins + 1).repeat(columns, 1))
        self.weight = nn.Parameter(torch.randn(columns, bins, width))
        self.bias = nn.Parameter(torch.zeros(columns, width))
        self.factor = 1.0 / math.sqrt(bins)

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Set each column's bin edges to its quantiles on `x` (rows by columns)."""
        levels = torch.linspace(0, 1, self.edges.shape[1], dtype=torch.float64, device=x.device)
        self.edges.copy_(torch.quantile(x.double(), levels, dim=0).T)

    def positions(self, x: Tensor) -> Tensor:
        """Return `(rows, columns, bins)`: how far through each bin each value lies, in [0, 1]."""
        left = self.edges[:, :-1]
        # a bin of no width (coinciding quantiles) becomes a step at its edge
        span = (self.edges[:, 1:] - left).clamp(min=1e-6)
        return ((x.unsqueeze(-1) - left) / span).clamp(0.0, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        """Return `(rows, columns, width)`: each column's embedding."""
        mixed = torch.einsum("rcb,cbw->rcw", self.positions(x), self.weight)
        return mixed * self.factor + self.bias
