"""Building blocks for models: `MLP`.

What lives here: small, general layers users reach for when wrapping data quickly; each records
its constructor arguments, so `kiln.load` rebuilds it from a saved file. What does not: anything
specific to a task (those belong to the user's model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from kiln.options import whole_number
from kiln.saving.recipe import record_recipe

#: Activation names accepted by `MLP`.
#: Compatibility: QuNet's names, plus a few common ones.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu6": nn.ReLU6,
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "hswish": nn.Hardswish,
    "hsigmoid": nn.Hardsigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}


def _size(name: str, value: Any) -> int:
    size = whole_number(value)
    if size is None or size <= 0:
        raise ValueError(f"MLP: `{name}` must be a positive integer; received {value!r}.")
    return size


def _activation(act: str | Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    if callable(act):
        return act
    key = act.strip().lower()
    if key not in ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {act!r}. Known names: {', '.join(ACTIVATIONS)}; or pass a "
            "module class such as `nn.ReLU`."
        )
    return ACTIVATIONS[key]


class MLP(nn.Sequential):
    """A multilayer perceptron: `Linear -> activation -> Dropout` per hidden layer, then `Linear`.

    Args:
        input: Input features.
        hidden: Hidden layer widths: a list, an int for one layer, `0` or `[]` for none (a
            single `Linear`), or `None` for one layer of `stretch * input` units.
        output: Output features.
        drop: Dropout probability after each hidden activation (no Dropout layer when 0).
        act: Activation: a name (gelu, relu, sigmoid, tanh, relu6, swish, hswish, hsigmoid,
            leaky_relu, elu) or a module class.
        stretch: Width factor used when `hidden` is `None`.

    Example:
        >>> import kiln
        >>> kiln.MLP(input=2, hidden=[16], output=1, drop=0.1)
        MLP(
          (0): Linear(in_features=2, out_features=16, bias=True)
          (1): GELU(approximate='none')
          (2): Dropout(p=0.1, inplace=False)
          (3): Linear(in_features=16, out_features=1, bias=True)
        )
    """

    def __init__(
        self,
        input: int,
        hidden: int | Sequence[int] | None = None,
        output: int = 1,
        drop: float = 0.0,
        act: str | Callable[[], nn.Module] = "gelu",
        stretch: float = 4,
    ) -> None:
        if whole_number(hidden) is not None:  # numpy's integers too, recorded as ints
            hidden = int(hidden)  # type: ignore[arg-type]
        sizes = (("input", input), ("output", output))
        input, output = (_size(name, value) for name, value in sizes)
        if hidden is None:
            widths = [int(stretch * input)]
        elif isinstance(hidden, int):
            widths = [hidden] if hidden > 0 else []
        else:
            widths = [_size("hidden", width) for width in hidden]
        if not 0 <= drop < 1:
            raise ValueError(f"MLP: `drop` must be in [0, 1); received {drop!r}.")
        make_activation = _activation(act)
        layers: list[nn.Module] = []
        previous = input
        for width in widths:
            layers += [nn.Linear(previous, width), make_activation()]
            if drop > 0:
                layers.append(nn.Dropout(drop))
            previous = width
        layers.append(nn.Linear(previous, output))
        super().__init__(*layers)
        if type(self) is MLP:  # a subclass's constructor takes other arguments: not recorded
            recorded_hidden = hidden if hidden is None or isinstance(hidden, int) else widths
            arguments = {"input": input, "hidden": recorded_hidden, "output": output, "drop": drop}
            act_name = next((name for name, cls in ACTIVATIONS.items() if cls is act), act)
            record_recipe(self, MLP, (), {**arguments, "act": act_name, "stretch": stretch})
