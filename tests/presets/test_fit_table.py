"""`kiln.presets.fit_table`: the auto preset on an in-memory table, its inputs scaled inside."""

import numpy as np
import pytest
import torch

from kiln.presets import AutoTrainer, fit_table
from kiln.tables.model import RobustScale, ScaledMLP


def test_inputs_in_large_units_train_and_the_saved_network_keeps_its_scaling(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(400, 3) * torch.tensor([1000.0, 1.0, 0.001]) + torch.tensor([500.0, 0.0, 0.0])
    y = (x[:, 0] - 1000) / 300 + torch.sin(6 * x[:, 1]) + 1000 * x[:, 2]
    name = tmp_path / "units"
    auto = fit_table(x, y, name=name, n_epochs=30, verbose=False, device="cpu")
    assert isinstance(auto.net, ScaledMLP)
    predicted = auto.predict(x)[:, 0]
    r2 = 1 - np.mean((predicted - y.numpy()) ** 2) / np.var(y.numpy())
    assert r2 > 0.8  # the MLP on raw units diverged here (R2 of -2e13)
    again = AutoTrainer.load(name, device="cpu")  # rebuilt from its class, with its scaling
    assert isinstance(again.net, ScaledMLP)
    assert torch.equal(again.net[0].center, auto.net[0].center)
    np.testing.assert_allclose(again.predict(x), auto.load(name).predict(x), rtol=1e-6)


def test_robust_scale_leaves_out_missing_cells_and_copes_with_constant_columns():
    x = torch.tensor([[1.0, 7.0], [2.0, 7.0], [float("nan"), 7.0], [3.0, 7.0], [100.0, 7.0]])
    scale = RobustScale.fit(x)
    assert scale.center.tolist() == [2.5, 7.0]
    assert scale.spread.tolist() == [pytest.approx(25.5), 1.0]  # quartiles 1.75 and 27.25
    out = scale(x)
    assert out[:, 1].tolist() == [0.0] * 5
    assert torch.isnan(out[2, 0])
    assert out.nan_to_num().abs().max() < 3  # smoothly clipped


def test_scaled_mlp_refuses_mismatched_statistics():
    with pytest.raises(ValueError, match="one value per input column"):
        ScaledMLP([0.0, 1.0], [1.0])
