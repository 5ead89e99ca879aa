"""The layers of `kiln.tables.model.TableNet`: what each computes."""

import pytest
import torch
from torch import nn

from kiln.tables.model import MaskDropout, ScaledActivation


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
