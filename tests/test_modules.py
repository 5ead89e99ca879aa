"""Tests of `kiln.MLP`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kiln


def layer_types(mlp: nn.Module) -> list[type]:
    return [type(layer) for layer in mlp]


def test_mlp_builds_linear_activation_dropout_per_hidden_layer():
    """MLP(2, [16], 1, drop=0.1) is Linear-GELU-Dropout-Linear, as QuNet's."""
    mlp = kiln.MLP(input=2, hidden=[16], output=1, drop=0.1)
    assert layer_types(mlp) == [nn.Linear, nn.GELU, nn.Dropout, nn.Linear]
    assert mlp[2].p == 0.1
    assert mlp(torch.randn(5, 2)).shape == (5, 1)


@pytest.mark.parametrize(
    ("hidden", "widths"), [(None, [8]), (0, []), ([], []), (5, [5]), ([6, 4], [6, 4])]
)
def test_mlp_hidden_forms(hidden, widths):
    """hidden=None gives stretch*input units; 0 or [] a single Linear; ints and lists widths."""
    mlp = kiln.MLP(input=2, hidden=hidden, output=3)
    linears = [layer for layer in mlp if isinstance(layer, nn.Linear)]
    assert [layer.out_features for layer in linears[:-1]] == widths
    assert linears[-1].out_features == 3
    assert nn.Dropout not in layer_types(mlp)


@pytest.mark.parametrize(
    ("act", "cls"),
    [
        ("relu", nn.ReLU),
        ("swish", nn.SiLU),
        ("hswish", nn.Hardswish),
        ("TANH", nn.Tanh),
        (nn.ELU, nn.ELU),
    ],
)
def test_mlp_activations_by_name_or_class(act, cls):
    """The activation is chosen by (case-insensitive) name or given as a module class."""
    assert layer_types(kiln.MLP(3, [4], 1, act=act))[1] is cls


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"act": "wiggle"}, "Unknown activation 'wiggle'. Known names: gelu"),
        ({"drop": 1.5}, r"`drop` must be in \[0, 1\)"),
        ({"hidden": [4, -1]}, "`hidden` must be a positive integer; received -1"),
        ({"output": 0}, "`output` must be a positive integer; received 0"),
    ],
)
def test_mlp_rejects_bad_arguments(kwargs, message):
    """Bad arguments raise ValueError naming the argument and the value."""
    with pytest.raises(ValueError, match=message):
        kiln.MLP(**{"input": 2, **kwargs})


def test_mlp_takes_numpy_integers_and_records_python_ints():
    """Sizes computed with numpy build the network, and its recipe holds plain ints."""
    import numpy as np

    from kiln.saving.recipe import recipe_of

    net = kiln.MLP(np.int64(4), [np.int32(8)], np.int64(3))
    assert (net[0].in_features, net[0].out_features, net[-1].out_features) == (4, 8, 3)
    kwargs = recipe_of(net)["kwargs"]
    assert [type(kwargs[k]) for k in ("input", "output")] == [int, int]
    assert kwargs["hidden"] == [8]
    assert type(kwargs["hidden"][0]) is int
    assert kiln.MLP(4, np.int64(6), 1)[0].out_features == 6
