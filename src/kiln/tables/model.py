"""The network and the loss `kiln fit` builds for a table, from its `TableSpec`.

What lives here: `TableNet`, the network, and its layers; `build_model` and `build_loss`. What
does not: the columns and their encoding (`spec.py`), the numeric columns' embeddings
(`embeddings.py`), how the network is trained (`recipe.py`), the run directory (`train.py`),
metrics (`metrics.py`).

The network follows the "Better by default" MLP (RealMLP, Holzmüller et al., NeurIPS 2024),
measured on kiln's development tables (docs/benchmarks.md):

- a learnable scale per input of the first layer (`FrontScale`), so that the network can
  ignore a noisy column or stretch an important one early in training;
- each numeric column embedded by periodic functions of itself (`PeriodicEmbedding`: cosines of
  random frequencies, mixed by a small linear map per column, beside the value itself), and by
  where it lies among its training quantiles (`PiecewiseLinearEmbedding`, Gorishniy et al.,
  NeurIPS 2022; for regression, `default_bins`), so that one column can carry a smooth or a
  sharp function of its value;
- categorical columns with many values as learned embeddings;
- hidden layers in the neural-tangent parametrisation (`NTKLinear`: weights drawn from N(0, 1),
  divided by the square root of the inputs in the forward pass), which makes one learning rate
  fit every width, and `ScaledActivation`s that can learn to be more linear;
- dropout whose rate the recipe lowers during training (the `p` attribute of each `MaskDropout`);
- and, after the shared inputs, several such MLPs side by side whose outputs are averaged
  (`MemberLinear`; `kiln fit` trains two of 3 x 160 units, as cheap as one of 3 x 256).

Example:
    >>> import torch
    >>> net = TableNet(numeric=2, dense=3, embeddings=[[20, 4]], hidden=[8], output=2)
    >>> x = torch.tensor([[0.1, -0.2, 1.0, 7.0], [0.0, 1.0, 0.0, 19.0]])
    >>> net(x).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from kiln.losses.mixed import MixedCriterion
from kiln.modules import MLP
from kiln.saving.recipe import record_recipe
from kiln.tables.embeddings import PeriodicEmbedding, PiecewiseLinearEmbedding
from kiln.tables.kinds import robust_scaling, smooth_clip
from kiln.tables.spec import TableSpec

#: The activations a `TableNet` can have: `build_model` takes SELU for classification and SiLU
#: for regression (RealMLP-TD's Mish scored the same on kiln's development tables, and its CPU
#: kernel is six times slower: a second of a regression run).
ACTIVATIONS = {"selu": nn.SELU, "silu": nn.SiLU, "mish": nn.Mish}


class NTKLinear(nn.Module):
    """A linear layer in the neural-tangent parametrisation: `x @ W.T / sqrt(inputs) + b`.

    The weights are drawn from N(0, 1) and divided by the square root of the number of inputs
    when used, so an optimizer step changes each layer's output by the same amount whatever its
    width. The biases start at zero.

    Args:
        inputs: Input features.
        outputs: Output features.

    Example:
        >>> layer = NTKLinear(4, 2)
        >>> layer(torch.ones(3, 4)).shape
        torch.Size([3, 2])
    """

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(outputs, inputs))
        self.bias = nn.Parameter(torch.zeros(outputs))
        self.factor = 1.0 / math.sqrt(inputs)

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set the weights and biases from a batch of this layer's inputs `x`.

        The weights are drawn from N(0, 1) and rescaled so that each output has standard
        deviation 1 on `x`; each bias is minus a random convex combination of 5 of that
        output's values on `x`, so that the units' activations bend where the data lie
        (RealMLP's "std" and "he+5" initialisations).
        """
        weight = torch.randn_like(self.weight)
        spread = (x @ (weight.T * self.factor)).std(dim=0, correction=0).clamp(min=1e-30)
        self.weight.copy_(weight / spread.unsqueeze(1))
        outputs = x @ (self.weight.T * self.factor)
        rows = torch.randint(0, len(x), (outputs.shape[1], 5), device=x.device)
        mix = torch.distributions.Exponential(1.0).sample((outputs.shape[1], 5)).to(x.device)
        picked = outputs.T.gather(1, rows)
        self.bias.copy_(-(picked * mix / mix.sum(1, keepdim=True)).sum(1))

    @torch.no_grad()
    def divide_outputs(self, outputs: slice, by: float) -> None:
        """Divide the `outputs` of this layer by `by` (their weights and biases)."""
        self.weight[outputs] /= by
        self.bias[outputs] /= by

    def forward(self, x: Tensor) -> Tensor:
        """Return `x @ (W / sqrt(inputs)).T + b`."""
        output: Tensor = nn.functional.linear(x, self.weight * self.factor, self.bias)
        return output


class MemberLinear(nn.Module):
    """The linear layers of several ensemble members side by side, each an `NTKLinear`.

    Member `i` maps its own inputs `x[i]` to `x[i] @ W[i] / sqrt(inputs) + b[i]`: one batched
    matrix product for all of them, so that `members` small networks train in one pass as
    fast as the matrix products allow. The input is `(members, rows, inputs)`, or
    `(rows, inputs)` shared by every member (the first layer); the output is
    `(members, rows, outputs)`. The weights are stored `(members, inputs, outputs)`, drawn
    from N(0, 1); the biases `(members, 1, outputs)` start at zero.

    Args:
        members: The networks side by side.
        inputs: Input features of each.
        outputs: Output features of each.

    Example:
        >>> layer = MemberLinear(3, 4, 2)
        >>> layer(torch.ones(5, 4)).shape
        torch.Size([3, 5, 2])
    """

    def __init__(self, members: int, inputs: int, outputs: int) -> None:
        super().__init__()
        self.members = members
        self.weight = nn.Parameter(torch.randn(members, inputs, outputs))
        self.bias = nn.Parameter(torch.zeros(members, 1, outputs))
        self.factor = 1.0 / math.sqrt(inputs)

    def _shared(self, x: Tensor) -> Tensor:
        """`x` as `(members, rows, inputs)`: a shared input is broadcast, not copied."""
        return x.expand(self.members, *x.shape) if x.dim() == 2 else x

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set each member's weights and biases from a batch of its inputs, as `NTKLinear` does.

        Each output gets standard deviation 1 on `x`, and each bias is minus a random convex
        combination of 5 of that output's values, member by member.
        """
        x = self._shared(x)
        weight = torch.randn_like(self.weight)
        spread = torch.bmm(x, weight * self.factor).std(dim=1, correction=0, keepdim=True)
        self.weight.copy_(weight / spread.clamp(min=1e-30))
        outputs = torch.bmm(x, self.weight * self.factor)  # (members, rows, outputs)
        members, rows, units = outputs.shape
        picked = torch.randint(0, rows, (members, 5, units), device=x.device)
        mix = torch.distributions.Exponential(1.0).sample((members, 5, units)).to(x.device)
        values = outputs.gather(1, picked)
        self.bias.copy_(-(values * mix / mix.sum(1, keepdim=True)).sum(1, keepdim=True))

    @torch.no_grad()
    def divide_outputs(self, outputs: slice, by: float) -> None:
        """Divide the `outputs` of every member by `by` (their weights and biases)."""
        self.weight[..., outputs] /= by
        self.bias[..., outputs] /= by

    def forward(self, x: Tensor) -> Tensor:
        """Return `(members, rows, outputs)`: each member's `x @ W / sqrt(inputs) + b`."""
        # alpha applies the 1/sqrt(inputs) inside the product: no scaled copy of the weights
        return torch.baddbmm(self.bias, self._shared(x), self.weight, alpha=self.factor)


class ScaledActivation(nn.Module):
    """`x + alpha * (act(x) - x)` with one learnable `alpha` per unit, starting at 1.

    Args:
        act: The activation module.
        width: Units.
        members: For the layers of ensemble members side by side (`MemberLinear`'s
            `(members, rows, width)` outputs), an `alpha` per member and unit.

    Example:
        >>> layer = ScaledActivation(nn.SELU(), 3)
        >>> torch.equal(layer(torch.zeros(2, 3)), torch.zeros(2, 3))
        True
        >>> ScaledActivation(nn.SELU(), 3, members=2).alpha.shape
        torch.Size([2, 1, 3])
    """

    def __init__(self, act: nn.Module, width: int, members: int | None = None) -> None:
        super().__init__()
        self.act = act
        self.alpha = nn.Parameter(torch.ones(width if members is None else (members, 1, width)))

    def forward(self, x: Tensor) -> Tensor:
        """Blend the activation with the identity, unit by unit."""
        # One lerp kernel instead of a subtraction, a product and a sum: ~20% of this layer's
        # forward and backward on the CPU.
        return torch.lerp(x, self.act(x), self.alpha)


class MaskDropout(nn.Dropout):
    """`nn.Dropout` with a cheaper mask: random bytes compared with the rate, in 1/256ths.

    Written here because speed demands it: torch's CPU dropout draws one `bernoulli_` number
    per value, which on the development machine made three dropout layers a sixth of a table
    run's step. This layer draws one random byte per value (four per 32-bit draw) and drops
    the values whose byte is below `round(256 * p)`: the rate is `p` rounded to 1/256, the
    kept values are scaled by the inverse of the kept fraction, as in `nn.Dropout`, and the
    mask costs a quarter of the draws. In evaluation mode, or at a rate below 1/512, the
    input passes unchanged.

    Example:
        >>> layer = MaskDropout(0.5).eval()
        >>> torch.equal(layer(torch.ones(2, 3)), torch.ones(2, 3))
        True
        >>> dropped = MaskDropout(0.25)(torch.ones(10_000))
        >>> abs((dropped > 0).float().mean().item() - 0.75) < 0.03, dropped.max().item()
        (True, 1.3333333730697632)
    """

    def forward(self, input: Tensor) -> Tensor:
        """Zero each value with probability `p` (to 1/256), and scale the rest to keep the mean."""
        dropped = round(256 * self.p)
        if not self.training or dropped == 0:
            return input
        if dropped >= 256:
            return input * 0
        count = input.numel()
        draws = torch.randint(
            -(2**31), 2**31, ((count + 3) // 4,), dtype=torch.int32, device=input.device
        )
        kept = draws.view(torch.uint8)[:count].view(input.shape) >= dropped
        return input * (kept * (256 / (256 - dropped)))


class FrontScale(nn.Module):
    """Multiply each input by its own learnable factor, starting at 1.

    Example:
        >>> FrontScale(3)(torch.ones(2, 3)).tolist()
        [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(width))

    def forward(self, x: Tensor) -> Tensor:
        """Scale the inputs."""
        return x * self.scale


class RobustScale(nn.Module):
    """Scale each input column as `kiln fit` scales a numeric column, inside the network.

    `smooth_clip((x - center) / spread)`: centred on the training median, divided by the
    distance between the quartiles (`kinds.robust_scaling`), and softly kept within +-3, so
    that neither a column's units nor its outliers decide how fast the next layer learns. The
    statistics are buffers: they are saved and loaded with the weights.

    Args:
        center: Per column, the value that maps to 0.
        spread: Per column, the distance that maps to about 1.

    Example:
        >>> scale = RobustScale.fit(torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]]))
        >>> scale.center.tolist(), scale.spread.tolist()
        ([2.0, 20.0], [1.0, 10.0])
        >>> [round(v, 3) for v in scale(torch.tensor([[2.0, 50.0]]))[0].tolist()]
        [0.0, 2.121]
    """

    center: Tensor
    spread: Tensor

    def __init__(self, center: Sequence[float], spread: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("center", torch.tensor([float(v) for v in center]))
        self.register_buffer("spread", torch.tensor([float(v) for v in spread]))

    @classmethod
    def fit(cls, x: Tensor) -> RobustScale:
        """Return the scaling of the columns of `x` (rows by columns; NaN cells left out)."""
        columns = x.detach().double().cpu().numpy().T
        stats = [robust_scaling(column[~np.isnan(column)]) for column in columns]
        return cls([center for center, _ in stats], [spread for _, spread in stats])

    def forward(self, x: Tensor) -> Tensor:
        """Return the scaled columns."""
        return smooth_clip((x - self.center) / self.spread)


class ScaledMLP(nn.Sequential):
    """A `kiln.MLP` behind a `RobustScale` of its inputs: what `fit_table` trains.

    Args:
        center: Per input column, its training median (`RobustScale`).
        spread: Per input column, its robust spread.
        hidden: The MLP's hidden widths.
        output: Outputs.
        drop: The MLP's dropout.

    Example:
        >>> net = ScaledMLP([0.0, 5.0], [1.0, 2.0], hidden=[8], output=3)
        >>> net(torch.zeros(4, 2)).shape
        torch.Size([4, 3])
    """

    def __init__(
        self,
        center: Sequence[float],
        spread: Sequence[float],
        hidden: Sequence[int] = (64, 64),
        output: int = 1,
        drop: float = 0.0,
    ) -> None:
        if len(center) != len(spread):
            raise ValueError(
                f"ScaledMLP: `center` and `spread` need one value per input column; received "
                f"{len(center)} and {len(spread)}."
            )
        super().__init__(
            RobustScale(center, spread), MLP(len(center), list(hidden), output, drop=drop)
        )
        arguments = {
            "center": [float(v) for v in center],
            "spread": [float(v) for v in spread],
            "hidden": [int(w) for w in hidden],
            "output": output,
            "drop": drop,
        }
        record_recipe(self, ScaledMLP, (), arguments)


class TableNet(nn.Module):
    """The network `kiln fit` trains: scaled, embedded inputs, then an MLP.

    The input is one float tensor: `numeric` numeric columns, then the other `dense - numeric`
    dense inputs (missing-value indicators and one-hot slots), then one column of category
    indices per embedding (stored as floats, exact below 2**24). Each numeric input becomes
    its value, its `PeriodicEmbedding` and, with `bins`, its `PiecewiseLinearEmbedding` (smooth
    and sharp functions of it); the categories go through `nn.Embedding`s; all of it, scaled by
    a `FrontScale`, feeds hidden `NTKLinear` layers with a `ScaledActivation` and
    `MaskDropout` each, and an `NTKLinear` output layer. The constructor's arguments are
    recorded, so `kiln.load` rebuilds it from a saved file.

    With `members` above 1 the network is an ensemble: after the shared inputs, `members`
    MLPs side by side (`MemberLinear` layers), each initialised on its own. In training mode
    the output is every member's, `(rows, members, outputs)`, so that each member learns from
    its own loss (`kiln.losses.MixedCriterion` averages the members' losses); in evaluation
    mode it is their mean, `(rows, outputs)`: the averaged logits or values. Several
    independently trained networks average out the luck of one initialisation (TabM,
    Gorishniy et al., ICLR 2025, trains its members side by side in the same way).

    Args:
        numeric: Numeric columns (the first inputs).
        dense: Dense inputs, the numeric ones included.
        embeddings: `[slots, dim]` per embedded column.
        hidden: Hidden layer widths.
        output: Outputs.
        drop: Dropout after each hidden layer (the recipe changes it during training).
        activation: "selu", "silu" or "mish".
        periodic: Embed the numeric columns (`PeriodicEmbedding`).
        members: The MLPs side by side whose outputs are averaged (1: a single network).
        bins: Also embed each numeric column by a `PiecewiseLinearEmbedding` of this many bins
            (0: none). Without either embedding the numeric columns go in as they are.

    Example:
        >>> net = TableNet(numeric=1, dense=2, embeddings=[], hidden=[8, 8], output=3)
        >>> net(torch.zeros(4, 2)).shape
        torch.Size([4, 3])
        >>> ensemble = TableNet(numeric=1, dense=2, hidden=[8], output=3, members=2)
        >>> ensemble(torch.zeros(4, 2)).shape, ensemble.eval()(torch.zeros(4, 2)).shape
        (torch.Size([4, 2, 3]), torch.Size([4, 3]))
    """

    def __init__(
        self,
        numeric: int,
        dense: int,
        embeddings: Sequence[Sequence[int]] = (),
        hidden: Sequence[int] = (256, 256, 256),
        output: int = 1,
        drop: float = 0.15,
        activation: str = "selu",
        periodic: bool = True,
        members: int = 1,
        bins: int = 0,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"TableNet: `activation` must be one of {', '.join(ACTIVATIONS)}; received "
                f"{activation!r}."
            )
        if isinstance(members, bool) or not isinstance(members, int) or members < 1:
            raise ValueError(
                f"TableNet: `members` must be a positive integer; received {members!r}."
            )
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 0:
            raise ValueError(
                f"TableNet: `bins` must be a non-negative integer (0: no piecewise-linear "
                f"embedding); received {bins!r}."
            )
        self.members = members
        self.numeric, self.dense = numeric, dense
        self.periodic = PeriodicEmbedding(numeric) if periodic and numeric else None
        self.piecewise = PiecewiseLinearEmbedding(numeric, bins) if bins and numeric else None
        # per numeric column: its value, then each embedding's outputs
        per_column = 1 + sum(
            embedding.weight.shape[-1]
            for embedding in (self.periodic, self.piecewise)
            if embedding is not None
        )
        numeric_width = numeric * per_column
        self.embeddings = nn.ModuleList(nn.Embedding(slots, dim) for slots, dim in embeddings)
        width = numeric_width + dense - numeric + sum(dim for _, dim in embeddings)
        self.front = FrontScale(width)
        layers: list[nn.Module] = []
        for units in hidden:
            act = ScaledActivation(
                ACTIVATIONS[activation](), units, members if members > 1 else None
            )
            layers += [self._linear(width, units), act, MaskDropout(drop)]
            width = units
        layers.append(self._linear(width, output))
        self.layers = nn.Sequential(*layers)
        arguments = {
            "numeric": numeric,
            "dense": dense,
            "embeddings": [[int(s), int(d)] for s, d in embeddings],
            "hidden": [int(w) for w in hidden],
            "output": output,
            "drop": drop,
            "activation": activation,
            "periodic": periodic,
        }
        # recorded only where used: networks saved before these existed load as they were
        if members > 1:
            arguments["members"] = members
        if bins:
            arguments["bins"] = bins
        record_recipe(self, TableNet, (), arguments)

    def _linear(self, inputs: int, outputs: int) -> nn.Module:
        """A linear layer of this network: one `NTKLinear`, or one `MemberLinear` for all."""
        if self.members == 1:
            return NTKLinear(inputs, outputs)
        return MemberLinear(self.members, inputs, outputs)

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set every `NTKLinear` layer from a batch of training inputs `x` (`NTKLinear.initialize`).

        Each layer is set in turn, on the outputs of the layers before it, so that every
        layer starts with outputs of standard deviation 1 on the data. The piecewise-linear
        embedding, if any, takes its bin edges from the quantiles of `x` first.
        """
        if self.piecewise is not None:
            self.piecewise.fit(x[:, : self.numeric])
        hidden = self.front(self.features(x))
        for layer in self.layers:
            if isinstance(layer, (NTKLinear, MemberLinear)):
                layer.initialize(hidden)
            if not isinstance(layer, nn.Dropout):  # the statistics of the data as it is
                hidden = layer(hidden)

    def features(self, x: Tensor) -> Tensor:
        """The embedded inputs, before the front scale."""
        numbers, others = x[:, : self.numeric], x[:, self.numeric : self.dense]
        if self.piecewise is not None:
            before = numbers.unsqueeze(-1) if self.periodic is None else self.periodic(numbers)
            columns = [before.view(len(x), self.numeric, -1), self.piecewise(numbers)]
            numbers = torch.cat(columns, dim=-1).flatten(1)
        elif self.periodic is not None:
            numbers = self.periodic(numbers)
        parts = [numbers, others]
        if len(self.embeddings):
            indices = x[:, self.dense :].long()
            parts += [embedding(indices[:, i]) for i, embedding in enumerate(self.embeddings)]
        return torch.cat(parts, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Embed the inputs, scale each, then run the layers (and average the members)."""
        output: Tensor = self.layers(self.front(self.features(x)))
        if self.members == 1:
            return output
        # (members, rows, outputs): each member's own in training, their mean otherwise
        return output.transpose(0, 1) if self.training else output.mean(0)


def _regression_only(spec: TableSpec) -> bool:
    """Whether every target of `spec` is regression."""
    return all(c["kind"] == "regression" for c in spec.targets)


def default_activation(spec: TableSpec) -> str:
    """The hidden units for `spec`'s targets: "silu" when all are regression, else "selu"."""
    return "silu" if _regression_only(spec) else "selu"


def default_bins(spec: TableSpec) -> int:
    """The bins of each numeric column's `PiecewiseLinearEmbedding` for `spec`'s targets.

    16 when every target is regression, else 0 (none). On the development tables the
    embedding let a regression network follow a step in one column (`sharp_step`: R2 0.87
    without it, 0.94 with it, at each of three seeds) and changed the other regression tables
    within the seeds' noise, while on classification it raised the log loss on five tables of
    seven (docs/benchmarks.md).

    Example:
        >>> spec = TableSpec([], [{"name": "y", "kind": "regression", "mean": 0.0, "std": 1.0}])
        >>> default_bins(spec)
        16
    """
    return 16 if _regression_only(spec) else 0


def build_model(
    spec: TableSpec,
    hidden: Sequence[int],
    drop: float,
    periodic: bool = True,
    activation: str | None = None,
    members: int = 1,
    bins: int = 0,
) -> TableNet:
    """Return the network for `spec`, with `activation` units (default: `default_activation`).

    Example:
        >>> import numpy as np
        >>> from kiln.tables.read import Table
        >>> values = np.linspace(0, 1, 5)
        >>> table = Table(["x", "y"], {"x": values, "y": values}, "memory")
        >>> net = build_model(TableSpec.infer(table, ["y"]), [8], 0.0)
        >>> net.numeric, net.dense, sum(p.numel() for p in net.parameters()) > 0
        (1, 1, True)
    """
    output = sum(width for _, width in spec.output_layout)
    return TableNet(
        spec.numeric_width, spec.dense_width, spec.embeddings, list(hidden), output, drop,
        activation or default_activation(spec), periodic, members, bins,
    )  # fmt: skip


def build_loss(spec: TableSpec, smoothing: float = 0.0) -> MixedCriterion:
    """Return the criterion for `spec`'s targets, in the order of its outputs.

    Each target is a column of `kiln.losses.MixedCriterion` of its kind (a multiclass target
    of K labels: K outputs). The targets reach it already standardised (`TableSpec`), so its
    own scaling is the identity, and its `postproc` leaves probabilities and standardised
    values, as `TableSpec.decode` expects. Missing (NaN) targets are left out of the loss.
    `smoothing` smooths the classification labels of the loss training minimises.

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
    return MixedCriterion(kinds=kinds, scale=[[0.0] * count, [1.0] * count], smoothing=smoothing)
