"""Tests of `kiln.summary`: shapes, parameter and multiply-add counts, and cleanliness."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kiln.tools.mult_adds import count_mult_adds
from kiln.tools.summary import summary


def torchfusion_mlp() -> nn.Sequential:
    """The network of TorchFusion's tutorial, on 8x8 digits (seeds/transcripts/torchfusion_*)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 100),
        nn.ReLU(),
        nn.Linear(100, 100),
        nn.ReLU(),
        nn.Linear(100, 100),
        nn.ReLU(),
        nn.Linear(100, 10),
    )


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),  # 4*(1*9)+4 = 40 params; 4*8*8 outputs x 9 = 2304
        nn.BatchNorm2d(4),  # 8 params; 256 outputs
        nn.ReLU(),
        nn.MaxPool2d(2),  # -> [4, 4, 4]
        nn.Conv2d(4, 8, 3),  # 8*36+8 = 296 params; 8*2*2 outputs x 36 = 1152
        nn.Flatten(),
        nn.Linear(32, 10),  # 330 params; 10 x 32 = 320
    )


def test_mlp_matches_the_torchfusion_transcript():
    """Same network and input as the seed's printed summary: 27710 params, 27400 mult-adds."""
    table = summary(torchfusion_mlp(), (1, 8, 8))
    assert table.total_params == 27710
    assert table.trainable_params == 27710
    assert table.non_trainable_params == 0
    assert table.mult_adds == 27400
    assert [(row.name, row.kind) for row in table.rows][:2] == [("0", "Flatten"), ("1", "Linear")]
    assert [row.params for row in table.rows] == [0, 6500, 0, 10100, 0, 10100, 0, 1010]
    assert [row.mult_adds for row in table.rows] == [
        *(None, 6400, None, 10000, None, 10000, None, 1000)
    ]
    assert table.rows[0].input_shapes == ((1, 1, 8, 8),)
    assert table.rows[0].output_shapes == ((1, 64),)
    assert table.rows[-1].output_shapes == ((1, 10),)
    assert table.layer_counts == {"Flatten": 1, "Linear": 4, "ReLU": 3}


def test_the_printed_table_has_rows_and_totals():
    text = str(summary(torchfusion_mlp(), (1, 8, 8)))
    lines = text.splitlines()
    assert lines[0] == "Model summary: Sequential"
    assert lines[2].split() == ["Layer", "(type)", "Input", "shape", "Output", "shape"] + [
        "Param",
        "#",
        "Mult-adds",
    ]
    assert lines[5].split() == ["1", "(Linear)", "[1,", "64]", "[1,", "100]", "6,500", "6,400"]
    assert "Total params: 27,710" in lines
    assert "Total mult-adds: 27,400" in lines
    assert "Layers: Flatten: 1, Linear: 4, ReLU: 3" in lines
    assert "Params size (MB): 0.11" in lines  # 27710 float32 parameters


def test_small_cnn_counts_by_hand_and_scale_with_the_batch():
    one = summary(small_cnn(), (1, 8, 8))
    assert [row.params for row in one.rows] == [40, 8, 0, 0, 296, 0, 330]
    assert [row.mult_adds for row in one.rows] == [2304, 256, None, None, 1152, None, 320]
    assert one.total_params == 674
    assert one.mult_adds == 4032
    assert one.rows[3].output_shapes == ((1, 4, 4, 4),)
    three = summary(small_cnn(), (1, 8, 8), batch_size=3)
    assert three.mult_adds == 3 * 4032
    assert three.rows[0].input_shapes == ((3, 1, 8, 8),)
    assert three.input_bytes == 3 * 64 * 4


def test_frozen_parameters_are_not_trainable():
    net = small_cnn()
    net[0].requires_grad_(False)
    table = summary(net, (1, 8, 8))
    assert table.trainable_params == 674 - 40
    assert table.non_trainable_params == 40
    assert (table.rows[0].params, table.rows[0].trainable) == (40, 0)


def test_recurrent_layers_count_every_weight_for_every_time_step():
    lstm = nn.LSTM(5, 7, num_layers=2, bidirectional=True, batch_first=True)
    table = summary(lstm, (3, 5), batch_size=2)
    # Per (sample, step): layer 0: 4*7*5 + 4*7*7 = 336, layer 1: 4*7*14 + 4*7*7 = 588, x2 dirs.
    assert table.mult_adds == 2 * 3 * 2 * (336 + 588)
    assert table.rows[0].output_shapes == ((2, 3, 14), (4, 2, 7), (4, 2, 7))
    gru = nn.GRUCell(4, 6)
    assert summary(gru, (4,), batch_size=5).mult_adds == 5 * (3 * 6 * 4 + 3 * 6 * 6)


def test_transposed_convolution_counts_per_input_element():
    layer = nn.ConvTranspose2d(2, 3, kernel_size=2, stride=2)
    x = torch.zeros(1, 2, 4, 4)
    assert count_mult_adds(layer, (x,), {}, layer(x)) == 2 * 4 * 4 * 3 * 4


def test_attention_counts_projections_and_products():
    attention = nn.MultiheadAttention(6, 2, batch_first=True)

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = attention

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attention(x, x, x)[0]

    table = summary(SelfAttention(), (5, 6), batch_size=2)
    # q, out: 5*6*6 each; k, v: 5*6*6 each; scores and mixing: 5*5*6 each.
    assert table.mult_adds == 2 * (4 * 5 * 36 + 2 * 25 * 6)
    # `out_proj` is used through its weights, not called: its parameters stay in the row.
    assert [row.kind for row in table.rows] == ["MultiheadAttention"]
    assert table.rows[0].params == table.total_params == 4 * 6 * 6 + 4 * 6


def test_several_inputs_dtypes_and_a_container_with_its_own_parameters():
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.scale = nn.Parameter(torch.ones(4))

        def forward(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return self.embed(tokens) * self.scale + x

    table = summary(TwoInputs(), [(3,), (3, 4)], dtypes=[torch.long, torch.float32])
    root, embed = table.rows
    assert (root.name, root.kind, root.params, root.is_layer) == ("", "TwoInputs", 4, False)
    assert root.input_shapes == ((1, 3), (1, 3, 4))
    assert (embed.name, embed.params, embed.mult_adds) == ("embed", 40, None)
    assert table.total_params == 44
    assert table.layer_counts == {"Embedding": 1}
    assert str(table).splitlines()[4].startswith("TwoInputs  ")


def test_modes_hooks_and_random_state_are_restored():
    net = small_cnn()
    net.train()
    net[1].eval()
    expected = torch.get_rng_state()
    summary(net, (1, 8, 8))
    assert torch.equal(torch.get_rng_state(), expected)
    assert net.training
    assert not net[1].training
    assert net[0].training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_an_error_in_forward_restores_the_model_and_says_what_ran():
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(5, 2))
    net.train()
    with pytest.raises(RuntimeError) as raised:
        summary(net, (4,))
    assert "summary ran Sequential on [1, 4]" in "\n".join(getattr(raised.value, "__notes__", []))
    assert net.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())


def test_runs_on_the_device_of_the_model_without_gradients():
    seen = {}

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen["grad"], seen["device"] = torch.is_grad_enabled(), x.device
            return x

    summary(Probe(), (2,))
    assert seen == {"grad": False, "device": torch.device("cpu")}


@pytest.mark.parametrize(
    ("size", "error", "message"),
    [
        (
            "1x28x28",
            TypeError,
            r"`input_size` must be the size of one sample .* received '1x28x28'",
        ),
        ([(1, 2), 3], TypeError, r"or a list of such sizes .* received \[\(1, 2\), 3\]"),
        ((1, 2.5), TypeError, r"received \(1, 2.5\)"),
        ((1, 0, 4), ValueError, r"every dimension of an input size must be positive; received "),
    ],
)
def test_bad_input_sizes(size, error, message):
    with pytest.raises(error, match=message):
        summary(nn.Linear(2, 2), size)


def test_bad_batch_size_and_dtypes():
    net = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"`batch_size` must be an int; received 2.0"):
        summary(net, (2,), batch_size=2.0)
    with pytest.raises(ValueError, match=r"`batch_size` must be positive; received 0"):
        summary(net, (2,), batch_size=0)
    with pytest.raises(TypeError, match=r"`dtypes` must be a torch dtype .* received 'float'"):
        summary(net, (2,), dtypes="float")
    with pytest.raises(ValueError, match=r"`dtypes` has 3 dtypes for 2 inputs"):
        summary(net, [(2,), (2,)], dtypes=[torch.float32] * 3)
