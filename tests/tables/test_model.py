"""The layers of `kiln.tables.model.TableNet`: what each computes."""

import pytest
import torch
from torch import nn

from kiln.saving.recipe import recipe_of
from kiln.tables.embeddings import PiecewiseLinearEmbedding
from kiln.tables.model import MaskDropout, MemberLinear, NTKLinear, ScaledActivation, TableNet


@pytest.mark.parametrize("rate", [0.15, 0.5, 0.9])
def test_mask_dropout_drops_its_rate_to_a_256th_and_keeps_the_mean(rate):
    torch.manual_seed(0)
    layer = MaskDropout(rate)
    out = layer(torch.ones(1_000_000))
    dropped = round(256 * rate) / 256
    assert (out == 0).float().mean().item() == pytest.approx(dropped, abs=0.003)
    assert out.unique().tolist() == [0.0, pytest.approx(1 / (1 - dropped))]
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)


def test_mask_dropout_passes_the_input_in_eval_mode_and_at_a_zero_rate():
    x = torch.randn(8, 5)
    assert MaskDropout(0.5).eval()(x) is x
    assert MaskDropout(0.0)(x) is x
    assert MaskDropout(0.001)(x) is x  # below 1/512: rounds to no dropout
    assert torch.equal(MaskDropout(0.999)(x), torch.zeros(8, 5))


def test_mask_dropout_is_reproducible_and_its_gradient_is_its_mask():
    x = torch.randn(64, 33, requires_grad=True)  # 2,112 values: not a multiple of 4 draws
    torch.manual_seed(3)
    out = MaskDropout(0.3)(x)
    torch.manual_seed(3)
    assert torch.equal(MaskDropout(0.3)(x), out)
    out.sum().backward()
    assert x.grad is not None
    scale = 256 / (256 - round(0.3 * 256))
    torch.testing.assert_close(x.grad, (out != 0).float() * scale)


def test_mask_dropout_is_an_nn_dropout_whose_rate_can_change():
    layer = MaskDropout(0.2)
    assert isinstance(layer, nn.Dropout)
    layer.p = 0.0
    x = torch.randn(4, 4)
    assert layer(x) is x


def test_scaled_activation_blends_the_activation_with_the_identity():
    torch.manual_seed(0)
    layer = ScaledActivation(nn.SELU(), 6)
    with torch.no_grad():
        layer.alpha.copy_(torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 1.5]))
    x = torch.randn(10, 6)
    expected = x + layer.alpha * (torch.selu(x) - x)
    torch.testing.assert_close(layer(x), expected)
    layer(x).sum().backward()
    assert layer.alpha.grad is not None
    torch.testing.assert_close(layer.alpha.grad, (torch.selu(x) - x).sum(0))


def test_member_linear_is_each_members_ntk_linear_side_by_side():
    torch.manual_seed(0)
    layer = MemberLinear(3, 5, 4)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 7, 5)
    out = layer(x)
    for member in range(3):
        single = NTKLinear(5, 4)
        with torch.no_grad():
            single.weight.copy_(layer.weight[member].T)
            single.bias.copy_(layer.bias[member, 0])
        torch.testing.assert_close(out[member], single(x[member]))
    shared = torch.randn(7, 5)  # one input for every member: the first layer's
    torch.testing.assert_close(layer(shared), layer(shared.expand(3, 7, 5)))


def test_member_linear_initialises_each_member_to_unit_outputs_on_its_inputs():
    torch.manual_seed(0)
    layer = MemberLinear(2, 6, 16)
    x = torch.randn(2, 300, 6) * torch.tensor([1.0, 10.0]).reshape(2, 1, 1)
    layer.initialize(x)
    outputs = layer(x) - layer.bias
    torch.testing.assert_close(outputs.std(1, correction=0), torch.ones(2, 16))
    assert not torch.equal(layer.weight[0], layer.weight[1])  # members start apart


def test_a_table_net_ensemble_gives_members_in_training_and_their_mean_in_evaluation():
    torch.manual_seed(0)
    net = TableNet(numeric=2, dense=3, embeddings=[[5, 2]], hidden=[8, 8], output=3, members=4)
    x = torch.tensor([[0.5, -1.0, 1.0, 3.0], [0.0, 2.0, 0.0, 1.0]])
    net.initialize(x.repeat(10, 1))
    for module in net.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    members = net(x)
    assert members.shape == (2, 4, 3)
    assert not torch.allclose(members[:, 0], members[:, 1])
    torch.testing.assert_close(net.eval()(x), members.mean(1))
    with pytest.raises(ValueError, match="`members` must be a positive integer; received 0"):
        TableNet(numeric=1, dense=1, members=0)


def test_a_single_network_keeps_its_layers_and_record():
    net = TableNet(numeric=1, dense=1, hidden=[4], output=1)
    assert isinstance(net.layers[0], NTKLinear)
    assert net.members == 1
    assert "members" not in recipe_of(net)["kwargs"]  # saved runs rebuild as they were
    assert "bins" not in recipe_of(net)["kwargs"]
    assert net.piecewise is None
    ensemble = TableNet(numeric=1, dense=1, hidden=[4], output=1, members=2)
    assert recipe_of(ensemble)["kwargs"]["members"] == 2


def test_piecewise_linear_bins_lie_between_the_training_quantiles():
    torch.manual_seed(0)
    x = torch.randn(1000, 2) * torch.tensor([1.0, 5.0])
    embedding = PiecewiseLinearEmbedding(2, bins=8)
    embedding.fit(x)
    levels = torch.linspace(0, 1, 9, dtype=torch.float64)
    torch.testing.assert_close(embedding.edges, torch.quantile(x.double(), levels, dim=0).T.float())
    positions = embedding.positions(x)
    assert positions.min() == 0
    assert positions.max() == 1
    # bins before a value's are full, those after it empty: their sum says where the value is
    rank = (x.unsqueeze(-1) >= embedding.edges[:, 1:]).sum(-1)
    torch.testing.assert_close(positions.sum(-1).floor().clamp(max=7), rank.float().clamp(max=7))


def test_piecewise_linear_coinciding_quantiles_make_a_step_not_a_division_by_zero():
    embedding = PiecewiseLinearEmbedding(2, bins=4)
    column_of_two_values = torch.tensor([0.0, 1.0]).repeat_interleave(50)
    constant = torch.full((100,), 3.0)
    embedding.fit(torch.stack([column_of_two_values, constant], dim=1))
    positions = embedding.positions(torch.tensor([[0.0, 3.0], [1.0, 3.5], [-9.0, -9.0]]))
    assert torch.isfinite(positions).all()
    assert positions[0, 0].sum() < positions[1, 0].sum()  # 0 and 1 land on either side
    assert positions[0, 1].sum() == 0
    assert positions[1, 1].sum() == 4
    assert positions[2].sum() == 0  # below every edge: no bin filled, however far


def test_a_table_net_embeds_each_numeric_column_piecewise_with_bins_fitted_on_initialization():
    torch.manual_seed(0)
    net = TableNet(numeric=2, dense=3, hidden=[8], output=1, bins=4)
    assert net.layers[0].weight.shape == (8, 2 * 7 + 1)  # value, 3 periodic, 3 piecewise each
    x = torch.randn(200, 3)
    net.initialize(x)
    levels = torch.linspace(0, 1, 5, dtype=torch.float64)
    expected = torch.quantile(x[:, :2].double(), levels, dim=0).T.float()
    torch.testing.assert_close(net.piecewise.edges, expected)
    assert "edges" in dict(net.piecewise.named_buffers())  # saved with the weights
    assert recipe_of(net)["kwargs"]["bins"] == 4
    alone = TableNet(numeric=2, dense=3, hidden=[8], output=1, periodic=False, bins=4)
    assert alone.layers[0].weight.shape == (8, 2 * 4 + 1)
    assert alone(x).shape == (200, 1)
    with pytest.raises(ValueError, match="`bins` must be a non-negative integer"):
        TableNet(numeric=1, dense=1, bins=-1)
