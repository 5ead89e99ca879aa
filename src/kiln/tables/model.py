"""The network and the loss `kiln fit` builds for a table, from its `TableSpec`.

What lives here: `TableNet` (embeddings for wide categorical columns, then a `kiln.MLP`),
`build_model` (a plain `kiln.MLP` when no column is embedded) and `build_loss` (the auto
preset's `MixedCriterion` for the targets' kinds). What does not: the columns (`spec.py`), the
training recipe and the run directory (`train.py`), metrics (`metrics.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from kiln.losses.mixed import MixedCriterion
from kiln.modules import MLP
from kiln.saving.recipe import record_recipe
from kiln.tables.spec import TableSpec


class TableNet(nn.Module):
    """An MLP over dense inputs and embedded categories: what `kiln fit` trains on wide columns.

    The input is one float tensor: `dense` columns that go straight in, then one column of
    category indices per embedding (stored as floats, exact below 2**24). The embedded vectors
    are concatenated to the dense inputs and fed to a `kiln.MLP`. The constructor's arguments
    are recorded, so `kiln.load` rebuilds it from a saved file.

    Args:
        dense: Dense inputs (numbers, indicators, one-hot slots).
        embeddings: `[slots, dim]` per embedded column.
        hidden: Hidden layer widths of the MLP.
        output: Outputs.
        drop: Dropout after each hidden layer.

    Example:
        >>> import torch
        >>> net = TableNet(dense=3, embeddings=[[20, 4]], hidden=[8], output=2)
        >>> x = torch.tensor([[0.1, 0.2, 0.3, 7.0], [0.0, 1.0, 0.0, 19.0]])
        >>> net(x).shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        dense: int,
        embeddings: Sequence[Sequence[int]],
        hidden: Sequence[int] = (64, 64),
        output: int = 1,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.dense = dense
        self.embeddings = nn.ModuleList(nn.Embedding(slots, dim) for slots, dim in embeddings)
        width = dense + sum(dim for _, dim in embeddings)
        self.mlp = MLP(width, list(hidden), output, drop)
        arguments = {
            "dense": dense,
            "embeddings": [[int(s), int(d)] for s, d in embeddings],
            "hidden": [int(w) for w in hidden],
            "output": output,
            "drop": drop,
        }
        record_recipe(self, TableNet, (), arguments)

    def forward(self, x: Tensor) -> Tensor:
        """Embed the index columns, concatenate them to the dense ones, and run the MLP."""
        indices = x[:, self.dense :].long()
        parts = [x[:, : self.dense]]
        parts += [embedding(indices[:, i]) for i, embedding in enumerate(self.embeddings)]
        output: Tensor = self.mlp(torch.cat(parts, dim=1))
        return output


def build_model(spec: TableSpec, hidden: Sequence[int], drop: float) -> nn.Module:
    """Return the network for `spec`: a `kiln.MLP`, or a `TableNet` when columns are embedded.

    Example:
        >>> import numpy as np
        >>> from kiln.tables.read import Table
        >>> values = np.linspace(0, 1, 5)
        >>> table = Table(["x", "y"], {"x": values, "y": values}, "memory")
        >>> build_model(TableSpec.infer(table, ["y"]), [8], 0.0)
        MLP(
          (0): Linear(in_features=1, out_features=8, bias=True)
          (1): GELU(approximate='none')
          (2): Linear(in_features=8, out_features=1, bias=True)
        )
    """
    output = sum(width for _, width in spec.output_layout)
    if spec.embeddings:
        return TableNet(spec.dense_width, spec.embeddings, list(hidden), output, drop)
    return MLP(spec.dense_width, list(hidden), output, drop)


def build_loss(spec: TableSpec) -> MixedCriterion:
    """Return the auto preset's criterion for `spec`'s targets, in the order of its outputs.

    Each target is a column of `kiln.losses.MixedCriterion` of its kind (a multiclass target
    of K labels: K outputs). The targets reach it already standardised (`TableSpec`), so its
    own scaling is the identity, and its `postproc` leaves probabilities and standardised
    values, as `TableSpec.decode` expects. Missing (NaN) targets are left out of the loss.

    Example:
        >>> spec = TableSpec([], [{"name": "r", "kind": "regression", "mean": 0.0, "std": 1.0},
        ...                       {"name": "m", "kind": "multiclass", "labels": ["a", "b", "c"]}])
        >>> build_loss(spec)
        MixedCriterion(kinds=['regression', 3])
    """
    kinds: list[str | int] = [
        len(c["labels"]) if c["kind"] == "multiclass" else c["kind"] for c in spec.targets
    ]
    count = len(kinds)
    return MixedCriterion(kinds=kinds, scale=[[0.0] * count, [1.0] * count])
