"""The learning-rate range test: suggestion, early stop, exact restore, the trainer's own step."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

import kiln
from kiln.tools.lr_finder import LRFinderResult, lr_find, schedule, smooth_losses


def regression(n: int = 64) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Linear regression data and the rate above which full-batch gradient descent diverges.

    For the mean squared error of a linear model, the Hessian is `2/N X^T X` (with a column of
    ones for the bias); gradient descent diverges for rates above `2 / largest eigenvalue`.
    """
    X = torch.randn(n, 3)
    Y = X @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(n, 1)
    X1 = torch.cat([X, torch.ones(n, 1)], 1)
    largest = torch.linalg.eigvalsh(2 * X1.T @ X1 / n).max().item()
    return X, Y, 2 / largest


def sgd_trainer(**kwargs) -> kiln.Trainer:
    return kiln.Trainer(
        nn.Linear(3, 1), loss="mse", optimizer="sgd", device="cpu", progress=False, **kwargs
    )


def assert_same(a, b) -> None:
    """Equal, bit for bit, through nested dicts, lists and tensors."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor)
        assert (a.dtype, a.device) == (b.dtype, b.device)
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


def test_suggestion_lies_in_the_stable_range_and_divergence_stops_early():
    X, Y, diverges_at = regression()
    trainer = sgd_trainer()
    result = lr_find(trainer, kiln.Data((X, Y), batch_size=64), start_lr=1e-4, end_lr=100)

    assert 1e-4 < result.suggestion < diverges_at
    assert result.suggestion > diverges_at / 30  # not needlessly timid either
    assert result.best_lr == pytest.approx(10 * result.suggestion)
    assert result.diverged
    assert len(result.lrs) < 100  # stopped before the last rate
    assert result.lrs[-1] > diverges_at
    last = result.smoothed[-1]
    assert not math.isfinite(last) or last > 4 * min(result.smoothed)
    assert len(result.losses) == len(result.smoothed) == len(result.lrs)


def test_all_rates_are_tried_without_divergence_check_looping_over_the_data():
    X, Y, _ = regression(48)
    result = lr_find(
        sgd_trainer(),
        (X, Y),
        start_lr=1e-5,
        end_lr=1e-2,
        num_steps=10,
        batch_size=16,
        diverge=None,
    )  # 3 batches a pass: 4 passes
    assert not result.diverged
    assert result.lrs == pytest.approx(schedule(1e-5, 1e-2, 10))
    assert (result.lrs[0], result.lrs[-1]) == pytest.approx((1e-5, 1e-2))
    assert len(result.losses) == 10


def test_schedules():
    exp = schedule(1e-6, 1.0, 7)
    assert exp == pytest.approx([10.0**k for k in range(-6, 1)])
    linear = schedule(0.1, 0.7, 4, mode="linear")
    assert linear == pytest.approx([0.1, 0.3, 0.5, 0.7])


def test_smoothing_starts_at_the_first_loss_and_smooth_one_is_raw():
    assert smooth_losses([5.0, 1.0, 3.0], 1.0) == [5.0, 1.0, 3.0]
    smoothed = smooth_losses([2.0, 2.0, 2.0], 0.05)
    assert smoothed == pytest.approx([2.0, 2.0, 2.0])  # bias-corrected: no start at zero
    X, Y, _ = regression()
    result = lr_find(sgd_trainer(), (X, Y), start_lr=1e-4, end_lr=1e-2, num_steps=5, smooth=1.0)
    assert result.smoothed == result.losses


def the_state(trainer: kiln.Trainer) -> dict:
    return copy.deepcopy(
        {
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "state": trainer.state.state_dict(),
            "history": trainer.history.state_dict(),
            "modes": [m.training for m in trainer.model.modules()],
            "grads": [p.grad for p in trainer.model.parameters()],
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "numpy_rng": torch.from_numpy(np.random.get_state()[1].copy()),
        }
    )


class Events(kiln.Callback):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_train_batch_end(self, trainer):
        self.seen.append("batch")

    def on_epoch_end(self, trainer):
        self.seen.append("epoch")


def bn_trainer(directory) -> tuple[kiln.Trainer, kiln.Data, Events]:
    X = torch.randn(64, 4)
    Y = (X[:, 0] > 0).long()
    net = nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2)
    )
    events = Events()
    trainer = kiln.Trainer(
        net,
        loss="cross_entropy",
        optimizer="adam",
        metrics=["accuracy"],
        callbacks=[events],
        dir=directory,
        device="cpu",
        progress=False,
    )
    return trainer, kiln.Data((X, Y), batch_size=16, shuffle=True), events


def test_everything_is_restored_bitwise_and_nothing_written(tmp_path):
    trainer, data, events = bn_trainer(tmp_path / "run")
    trainer.fit(data, epochs=1)  # optimizer state, history, counters, files
    trainer.model.eval()
    trainer.model(torch.randn(4, 4)).sum().backward()  # gradients left by the user
    events.seen.clear()
    files = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()}
    before = the_state(trainer)
    attributes = dict(vars(trainer))
    callbacks, data_epoch = trainer.callbacks, data.epoch

    result = lr_find(trainer, data, num_steps=20)

    assert len(result.lrs) >= 2
    assert_same(the_state(trainer), before)
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-3
    assert vars(trainer) == attributes
    assert trainer.callbacks is callbacks
    assert trainer.dir == tmp_path / "run"
    assert data.epoch == data_epoch
    assert events.seen == []  # the trainer's callbacks did not run
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run").iterdir()} == files


def test_a_trainer_that_never_trained_leaves_no_directory(tmp_path):
    trainer, data, _ = bn_trainer(tmp_path / "run")
    lr_find(trainer, data, num_steps=5)
    assert not (tmp_path / "run").exists()
    assert trainer.optimizer.state_dict()["state"] == {}


def test_training_after_lr_find_equals_training_without_it(tmp_path):
    kiln.seed_everything(1)
    plain, data, _ = bn_trainer(tmp_path / "plain")
    plain.fit(data, epochs=2)

    kiln.seed_everything(1)
    tested, data, _ = bn_trainer(tmp_path / "tested")
    lr_find(tested, data, num_steps=12)
    tested.fit(data, epochs=2)

    assert_same(tested.model.state_dict(), plain.model.state_dict())
    assert_same(tested.optimizer.state_dict(), plain.optimizer.state_dict())
    assert tested.history.batch_losses == plain.history.batch_losses
    assert (tested.state.epoch, len(tested.history)) == (2, 2)


class Failing(kiln.Trainer):
    """Raises in the middle of the range test, after some optimizer steps."""

    calls = 0

    def training_step(self, batch, batch_idx):
        self.calls += 1
        if self.calls == 4:
            raise RuntimeError("boom")
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("optimizer", ["adam", "ranger"])  # ranger: Lookahead's slow weights
def test_restored_after_an_exception(optimizer):
    X, Y, _ = regression()
    trainer = Failing(
        nn.Linear(3, 1), loss="mse", optimizer=optimizer, device="cpu", progress=False
    )
    trainer.fit((X, Y), epochs=1)
    before, state = the_state(trainer), trainer.state
    trainer.calls = 0
    with pytest.raises(RuntimeError, match="boom"):
        lr_find(trainer, (X, Y), batch_size=8)
    assert_same(the_state(trainer), before)
    assert trainer.state is state


class Counting(kiln.Trainer):
    def training_step(self, batch, batch_idx):
        self.batch_indices.append(batch_idx)
        return super().training_step(batch, batch_idx)


def test_runs_the_trainer_subclass_step():
    X, Y, _ = regression(48)
    trainer = Counting(nn.Linear(3, 1), loss="mse", optimizer="sgd", device="cpu", progress=False)
    trainer.batch_indices = []
    result = lr_find(trainer, (X, Y), num_steps=7, diverge=None, batch_size=16)
    assert len(result.lrs) == 7
    assert trainer.batch_indices == [0, 1, 2, 0, 1, 2, 0]  # over the data as often as needed


class SelfTrained(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, x):
        return self.linear(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        return {"loss": loss, "score": -loss.detach()}


def test_runs_a_model_defined_training_step():
    X, Y, diverges_at = regression()
    trainer = kiln.Trainer(SelfTrained(), optimizer="sgd", device="cpu", progress=False)
    result = lr_find(trainer, kiln.Data((X, Y), batch_size=64), start_lr=1e-4, end_lr=100)
    assert 1e-4 < result.suggestion < diverges_at


class GroupRates(kiln.Callback):
    def __init__(self) -> None:
        self.rates: list[list[float]] = []

    def on_before_optimizer_step(self, trainer):
        self.rates.append([group["lr"] for group in trainer.optimizer.param_groups])
        self.kinds = {type(group["lr"]) for group in trainer.optimizer.param_groups}


def test_parameter_groups_keep_their_ratio_and_extra_callbacks_run():
    X, Y, _ = regression()
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    optimizer = torch.optim.SGD(
        [{"params": net[0].parameters(), "lr": 0.01}, {"params": net[1].parameters()}],
        lr=0.02,
    )
    trainer = kiln.Trainer(net, loss="mse", optimizer=optimizer, device="cpu", progress=False)
    rates = GroupRates()
    result = lr_find(
        trainer, (X, Y), start_lr=1e-3, end_lr=1e-1, num_steps=3, diverge=None, callbacks=[rates]
    )
    assert [first for first, _ in rates.rates] == pytest.approx(result.lrs)
    assert all(second == pytest.approx(2 * first) for first, second in rates.rates)
    assert [group["lr"] for group in optimizer.param_groups] == [0.01, 0.02]


def test_plot_marks_the_suggestion_on_a_log_axis(tmp_path):
    from matplotlib.figure import Figure

    X, Y, _ = regression()
    result = lr_find(sgd_trainer(), kiln.Data((X, Y), batch_size=64), start_lr=1e-4, end_lr=100)
    figure = result.plot()
    assert isinstance(figure, Figure)
    axes = figure.axes[0]
    assert axes.get_xscale() == "log"
    assert any(line.get_xdata()[0] == result.suggestion for line in axes.lines)
    assert "suggestion" in axes.get_legend().get_texts()[-1].get_text()
    figure.savefig(tmp_path / "lr.png")
    assert (tmp_path / "lr.png").stat().st_size > 0


def test_a_hand_made_result_plots():
    result = LRFinderResult([1e-3, 1e-2, 1e-1], [1.0, 0.5, 9.0], [1.0, 0.6, 3.0], 1e-3, True)
    assert result.plot().axes[0].get_title().endswith("(stopped: the loss diverged)")


class NaNLoss(kiln.Trainer):
    def training_step(self, batch, batch_idx):
        return super().training_step(batch, batch_idx).loss * float("nan")


def test_a_loss_never_finite_is_an_error_after_restoring():
    X, Y, _ = regression()
    trainer = NaNLoss(nn.Linear(3, 1), loss="mse", optimizer="sgd", device="cpu", progress=False)
    before = the_state(trainer)
    with pytest.raises(ValueError, match="not finite at any rate tried"):
        lr_find(trainer, (X, Y), num_steps=5)
    assert_same(the_state(trainer), before)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start_lr": 1.0, "end_lr": 1.0}, "`start_lr` must be below `end_lr`"),
        ({"start_lr": 0.0}, "`start_lr` must be a positive finite number; received 0.0"),
        ({"end_lr": math.inf}, "`end_lr` must be a positive finite number; received inf"),
        ({"start_lr": True}, "`start_lr` must be a positive finite number; received True"),
        ({"num_steps": 1}, "`num_steps` must be an integer of at least 2"),
        (
            {"num_steps": 10.0},
            r"`num_steps` must be an integer of at least 2 \(the rates tried\); received 10.0",
        ),
        ({"mode": "log"}, "`mode` must be 'exp' or 'linear'; received 'log'"),
        ({"smooth": 0.0}, r"`smooth` must be in \(0, 1\] \(1: no smoothing\); received 0.0"),
        ({"smooth": 1.5}, r"`smooth` must be in \(0, 1\] .*; received 1.5"),
        ({"diverge": 1.0}, r"`diverge` \(.*\) must be a number above 1 .*; received 1.0"),
        ({"batch_size": 0}, "`batch_size` must be a positive integer; received 0"),
    ],
)
def test_bad_arguments(kwargs, message):
    X, Y, _ = regression()
    trainer = sgd_trainer()
    before = the_state(trainer)
    with pytest.raises(ValueError, match=message):
        lr_find(trainer, (X, Y), **kwargs)
    assert_same(the_state(trainer), before)


def test_a_trainer_without_optimizer_or_loss_is_refused():
    X, Y, _ = regression()
    no_optimizer = kiln.Trainer(
        nn.Linear(3, 1), loss="mse", optimizer=None, device="cpu", progress=False
    )
    with pytest.raises(ValueError, match="lr_find varies the optimizer's learning rate, but"):
        lr_find(no_optimizer, (X, Y))
    no_loss = kiln.Trainer(nn.Linear(3, 1), device="cpu", progress=False)
    with pytest.raises(ValueError, match="nothing to minimize"):
        lr_find(no_loss, (X, Y))


def test_not_a_trainer_is_a_type_error():
    with pytest.raises(TypeError, match="lr_find tests a kiln.Trainer; received Linear"):
        lr_find(nn.Linear(3, 1), (torch.randn(4, 3), torch.randn(4, 1)))


def test_extra_callbacks_must_be_callbacks():
    X, Y, _ = regression()
    trainer = sgd_trainer()
    with pytest.raises(TypeError, match="is not a callback"):
        lr_find(trainer, (X, Y), callbacks=[object()])
    assert trainer.callbacks.callbacks == []


def test_a_tensor_learning_rate_stays_a_tensor():
    X, Y, _ = regression()
    net = nn.Linear(3, 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=torch.tensor(1e-3), foreach=False)
    trainer = kiln.Trainer(net, loss="mse", optimizer=optimizer, device="cpu", progress=False)
    rates = GroupRates()
    result = lr_find(trainer, (X, Y), num_steps=4, diverge=None, callbacks=[rates])
    assert rates.kinds == {torch.Tensor}  # filled in place, not replaced by a float
    assert len(result.lrs) == 4
    assert_same(optimizer.param_groups[0]["lr"], torch.tensor(1e-3))


class ExplodesAt(kiln.Trainer):
    """A NaN loss from the `at`-th step on, as a run whose loss overflows."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx).loss
        return loss * float("nan") if self.state.step >= self.at else loss


@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
@pytest.mark.parametrize("diverge", [4.0, None])
def test_a_nan_loss_ends_the_test_as_divergence(nonfinite, diverge):
    X, Y, _ = regression()
    trainer = ExplodesAt(
        nn.Linear(3, 1),
        loss="mse",
        optimizer="sgd",
        device="cpu",
        progress=False,
        nonfinite=nonfinite,
    )
    trainer.at = 6
    before = the_state(trainer)
    result = lr_find(trainer, (X, Y), start_lr=1e-6, end_lr=1e-3, num_steps=20, diverge=diverge)
    assert result.diverged
    assert len(result.lrs) == 7
    assert math.isnan(result.losses[-1])
    assert all(math.isfinite(loss) for loss in result.losses[:-1])
    assert result.suggestion <= result.lrs[5] / 10
    assert_same(the_state(trainer), before)


def test_accumulation_sets_one_rate_per_optimizer_step():
    X, Y, _ = regression(48)
    trainer = Counting(
        nn.Linear(3, 1), loss="mse", optimizer="sgd", device="cpu", progress=False, accumulate=3
    )
    trainer.batch_indices = []
    rates = GroupRates()
    result = lr_find(trainer, (X, Y), num_steps=4, diverge=None, batch_size=8, callbacks=[rates])
    assert len(result.lrs) == 4
    assert len(trainer.batch_indices) == 12  # 4 steps of 3 batches: 6 batches a pass, 2 passes
    assert [lr for (lr,) in rates.rates] == pytest.approx(result.lrs)  # one optimizer step each

    plain = sgd_trainer()
    plain.model.load_state_dict(trainer.model.state_dict())
    first = lr_find(
        plain, kiln.Data((X, Y), batch_size=24, shuffle=True, seed=3), num_steps=2, diverge=None
    )
    trainer.model.load_state_dict(plain.model.state_dict())
    grouped = lr_find(
        trainer, kiln.Data((X, Y), batch_size=8, shuffle=True, seed=3), num_steps=2, diverge=None
    )  # a step's loss: the mean over its 3 batches
    assert grouped.losses[0] == pytest.approx(first.losses[0], rel=1e-5)


def test_data_without_a_batch_is_an_error():
    data = kiln.Data((torch.randn(5, 3), torch.randn(5, 1)), batch_size=8, drop_last=True)
    with pytest.raises(ValueError, match="`train` yielded no batch, so no rate was tried"):
        lr_find(sgd_trainer(), data, num_steps=5)
