"""The table recipe: its curves, optimizer groups, schedule, best epoch, calibration, init."""

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

import kiln
from kiln.losses import MixedCriterion
from kiln.tables import recipe
from kiln.tables.model import NTKLinear, TableNet
from kiln.tables.recipe import (
    LR_FACTORS,
    ROUNDS,
    WD_FACTORS,
    BestEpoch,
    TableAdamW,
    TableSchedule,
    calibrate,
    coslog4,
    flat_cos,
    make_optimizer,
    parameter_groups,
    passes,
    rounds,
)


def test_coslog4_has_four_cycles_that_end_at_zero():
    ends = [1 / 15, 3 / 15, 7 / 15, 1.0]
    assert all(coslog4(t) == pytest.approx(0.0, abs=1e-12) for t in ends)
    peaks = [(2**k * math.sqrt(2) - 1) / 15 for k in range(4)]  # log2(1 + 15 t) = k + 1/2
    assert all(coslog4(t) == pytest.approx(1.0) for t in peaks)
    assert coslog4(-1.0) == coslog4(0.0)
    assert coslog4(2.0) == coslog4(1.0)


def test_flat_cos_holds_then_fades():
    assert [flat_cos(t) for t in (0.0, 0.25, 0.5)] == [1.0, 1.0, 1.0]
    assert flat_cos(0.75) == pytest.approx(0.5)
    assert flat_cos(1.0) == pytest.approx(0.0)


def test_every_parameter_is_in_exactly_one_group_with_its_factors():
    net = TableNet(numeric=3, dense=4, embeddings=[[12, 3]], hidden=[8, 8], output=2, bins=4)
    groups = parameter_groups(net)
    grouped = [id(p) for group in groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in net.parameters())
    for group in groups:
        assert group["lr_factor"] == LR_FACTORS[group["name"]]
        assert group["wd_factor"] == WD_FACTORS[group["name"]]
    by_name = {group["name"]: {id(p) for p in group["params"]} for group in groups}
    assert id(net.piecewise.weight) in by_name["weight"]
    assert id(net.piecewise.bias) in by_name["bias"]
    optimizer = make_optimizer(net, lr=0.04)
    rates = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert rates["scale"] == pytest.approx(0.24)
    assert rates["bias"] == pytest.approx(0.004)


def test_the_schedule_sets_rate_decay_and_dropout_from_the_step():
    net = TableNet(numeric=2, dense=2, hidden=[4], output=1, drop=0.2)
    trainer = kiln.Trainer(net, loss="mse", optimizer=make_optimizer(net, 0.1), device="cpu",
                           progress=False)  # fmt: skip
    schedule = TableSchedule(lr=0.1, drop=0.2, steps=100)
    schedule.on_fit_start(trainer)
    trainer.state.step = 75  # three quarters: rate on its last cycle, dropout half faded
    schedule.on_train_batch_start(trainer)
    weights = next(g for g in trainer.optimizer.param_groups if g["name"] == "weight")
    assert weights["lr"] == pytest.approx(0.1 * coslog4(0.75))
    assert weights["weight_decay"] == pytest.approx(0.02 * 0.5)
    assert next(m for m in net.modules() if isinstance(m, nn.Dropout)).p == pytest.approx(0.1)


def test_passes_and_rounds():
    assert passes(100, 256) == 256  # small tables: RealMLP's 256 epochs
    assert passes(100_000, 256) == 16  # large ones: few long epochs
    for epochs in (1, 7, 33, 100, 256):
        count, per_round = rounds(epochs)
        assert count <= ROUNDS
        assert count * per_round >= epochs
        assert (count - 1) * per_round < epochs  # no round more than needed


def test_best_epoch_keeps_each_cycles_best_and_restores_no_worse_than_the_best_epoch():
    torch.manual_seed(0)
    x = torch.randn(64, 2)
    y = x[:, :1] * 2
    net = TableNet(numeric=2, dense=2, hidden=[8], output=1, drop=0.0)
    criterion = MixedCriterion(kinds=["regression"], scale=[[0.0], [1.0]])
    best = BestEpoch(x, y, criterion, steps_per_epoch=4, steps=4 * 16)
    trainer = kiln.Trainer(net, loss=criterion, optimizer=make_optimizer(net, 0.01),
                           callbacks=[best], device="cpu", progress=False)  # fmt: skip
    history = trainer.fit((x, y), epochs=16, batch_size=16)
    assert len(history) == 16
    assert best.epoch is not None
    assert 1 <= best.epoch <= 16
    assert sorted(best.cycles) == [0, 1, 2, 3]  # 16 epochs reach into every cycle
    losses = {cycle: loss for cycle, (loss, _) in best.cycles.items()}
    assert min(losses.values()) == best.loss
    again = BestEpoch(x, y, criterion, steps_per_epoch=4, steps=4 * 16)
    again.load_state_dict(best.state_dict())  # what a resumed run starts from
    assert (again.epoch, again.loss, sorted(again.cycles)) == (best.epoch, best.loss, [0, 1, 2, 3])
    best.restore(net)
    with torch.no_grad():
        restored = float(criterion(net(x), y, unscaled=True))
    assert restored <= best.loss * (1 + 1e-6)
    assert losses[best.mixed[0]] == best.loss  # the mix starts from the best epoch
    assert best.cycles == {}  # spent: a model saved now carries its weights once
    assert best.state_dict()["cycles"] == {}


def _line(weight: float) -> dict[str, torch.Tensor]:
    return {"weight": torch.tensor([[weight]])}


def test_best_epoch_averages_in_a_cycle_only_when_the_average_is_better():
    x = torch.linspace(-1, 1, 21).unsqueeze(1)
    y = 2 * x
    criterion = MixedCriterion(kinds=["regression"], scale=[[0.0], [1.0]])
    net = nn.Linear(1, 1, bias=False)
    best = BestEpoch(x, y, criterion, steps_per_epoch=1, steps=10)
    # the best cycle undershoots the slope 2, the next overshoots it: their mean is exact
    best.cycles = {3: (0.1, _line(1.6)), 2: (0.2, _line(2.5)), 1: (9.0, _line(-5.0))}
    best.restore(net)
    assert best.mixed == [3, 2]  # the far-off cycle would spoil the mean: left out
    assert net.weight.item() == pytest.approx(2.05)
    best.cycles = {0: (0.1, _line(1.9)), 1: (0.5, _line(1.0))}
    best.restore(net)
    assert best.mixed == [0]
    assert net.weight.item() == pytest.approx(1.9)


def test_calibration_folds_a_temperature_into_the_last_layer_and_keeps_the_classes():
    torch.manual_seed(0)
    x = torch.randn(200, 2)
    y = (x[:, :1] + 0.8 * torch.randn(200, 1) > 0).float()  # noisy labels: overconfidence costs
    net = TableNet(numeric=2, dense=2, hidden=[8], output=1, drop=0.0)
    with torch.no_grad():
        net.layers[-1].weight.mul_(20)  # a far too confident network
    before = net(x).detach()
    loss_before = nn.functional.binary_cross_entropy_with_logits(before, y)
    (temperature,) = calibrate(net, [("binary", 1)], x, y)
    after = net(x).detach()
    assert temperature == pytest.approx(2.0)  # at the edge of the allowed range
    torch.testing.assert_close(after, before / temperature, rtol=1e-5, atol=1e-6)
    assert nn.functional.binary_cross_entropy_with_logits(after, y) < loss_before
    assert torch.equal(after > 0, before > 0)
    assert calibrate(net, [("regression", 1)], x, y) == [1.0]  # regression is left alone


def test_calibration_divides_every_members_logits_of_an_ensemble():
    torch.manual_seed(0)
    x = torch.randn(200, 2)
    y = (x[:, :1] + 0.8 * torch.randn(200, 1) > 0).float()
    net = TableNet(numeric=2, dense=2, hidden=[8], output=1, drop=0.0, members=3)
    net.initialize(x)
    with torch.no_grad():
        net.layers[-1].weight.mul_(20)
        net.layers[-1].bias.add_(1.0)
    before = net.eval()(x).detach()
    (temperature,) = calibrate(net, [("binary", 1)], x, y)
    assert temperature > 1
    torch.testing.assert_close(net(x).detach(), before / temperature, rtol=1e-5, atol=1e-5)
    groups = parameter_groups(net)
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(
        id(p) for p in net.parameters()
    )
    weights = {g["name"]: g["params"] for g in groups}
    assert any(p is net.layers[0].weight for p in weights["weight"])
    assert any(p is net.layers[0].bias for p in weights["bias"])
    assert any(p is net.layers[1].alpha for p in weights["alpha"])


def test_initialization_gives_unit_outputs_on_the_data():
    torch.manual_seed(0)
    x = torch.randn(512, 3) * torch.tensor([1.0, 5.0, 0.1])
    net = TableNet(numeric=3, dense=3, hidden=[32, 32], output=1)
    net.initialize(x)
    first = net.layers[0]
    assert isinstance(first, NTKLinear)
    outputs = first(net.front(net.features(x))) - first.bias
    torch.testing.assert_close(outputs.std(0, correction=0), torch.ones(32), rtol=1e-4, atol=1e-4)
    assert not torch.equal(first.bias, torch.zeros(32))  # biases placed among the data


@pytest.mark.parametrize("fused", [True, False])
def test_table_adamw_computes_torchs_adamw_update(fused, monkeypatch):
    monkeypatch.setattr(recipe, "_FUSED_KERNEL", fused and recipe._FUSED_KERNEL)
    torch.manual_seed(0)
    ours, theirs = nn.Linear(5, 3), nn.Linear(5, 3)
    theirs.load_state_dict(ours.state_dict())
    options = {"lr": 0.05, "betas": (0.9, 0.95), "weight_decay": 0.02}

    def groups(model):  # a rate and a decay of their own for the biases
        return [{"params": [model.weight]},
                {"params": [model.bias], "lr": 0.01, "weight_decay": 0.0}]  # fmt: skip

    optimizers = [TableAdamW(groups(ours), **options),
                  torch.optim.AdamW(groups(theirs), foreach=True, **options)]  # fmt: skip
    for _ in range(20):
        x = torch.randn(8, 5)
        for model, optimizer in zip((ours, theirs), optimizers, strict=True):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    for mine, reference in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-6, atol=1e-7)
    again = TableAdamW(groups(ours), **options)
    again.load_state_dict(optimizers[0].state_dict())  # resumes from its state
    assert int(again.state[ours.bias]["step"]) == 20


def test_a_table_run_does_not_import_torch_dynamo(tmp_path):
    script = (
        "import sys, numpy as np\n"
        "from kiln.tables.read import Table\n"
        "from kiln.tables.train import TableOptions, train_table\n"
        "x = np.linspace(0, 1, 64)\n"
        "table = Table(['x', 'y'], {'x': x, 'y': 2 * x}, 'memory')\n"
        f"train_table(table, ['y'], {str(tmp_path / 'run')!r}, TableOptions(epochs=2, "
        "hidden=(8,)), progress=False)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True, timeout=120)  # fmt: skip
    assert result.stdout.strip() == "False"  # its import costs a second or more
