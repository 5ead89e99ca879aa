"""Gradient accumulation, clipping, the gradient scaler and non-finite losses, through fit."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

import kiln
from kiln.loop import optimizer_step
from tests.helpers import without_plots


def make(model: nn.Module, **kwargs) -> kiln.Trainer:
    kwargs.setdefault("optimizer", "sgd")
    kwargs.setdefault("lr", 0.1)
    trainer = kiln.Trainer(model, loss="mse", device="cpu", progress=False, **kwargs)
    # Without the plots an experiment directory gets at the end of fit, which take long.
    without_plots(trainer)
    return trainer


def regression(n: int = 16):
    X = torch.randn(n, 3)
    return X, X @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1


def trained(batch_size: int, epochs: int = 2, n: int = 16, **kwargs) -> kiln.Trainer:
    torch.manual_seed(3)
    trainer = make(nn.Linear(3, 1), **kwargs)
    trainer.fit(kiln.Data(regression(n), batch_size=batch_size), epochs=epochs)
    return trainer


def assert_close_weights(a: kiln.Trainer, b: kiln.Trainer) -> None:
    for ours, theirs in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_accumulating_4_batches_of_2_equals_one_batch_of_8():
    big = trained(batch_size=8)
    small = trained(batch_size=2, accumulate=4)
    assert_close_weights(big, small)
    assert big.state.step == small.state.step == 4
    assert small.history.loss == pytest.approx(big.history.loss, rel=1e-6)
    assert len(small.history.batch_losses) == 16


def test_short_last_group_is_divided_by_its_real_size():
    """10 samples: batches of 2 in groups of 4 -> steps over 8 then 2 samples, as batches 8, 2."""
    reference = trained(batch_size=8, n=10)
    accumulated = trained(batch_size=2, n=10, accumulate=4)
    assert accumulated.state.step == reference.state.step == 4
    assert_close_weights(reference, accumulated)


class Stream(IterableDataset):
    """Data without a length: the last group's size is known only when it ends."""

    def __init__(self, X: torch.Tensor, Y: torch.Tensor) -> None:
        self.X, self.Y = X, Y

    def __iter__(self):
        return iter(zip(self.X, self.Y, strict=True))


def test_short_last_group_of_data_without_a_length_is_rescaled():
    X, Y = regression(10)
    torch.manual_seed(3)
    reference = make(nn.Linear(3, 1))
    reference.fit(kiln.Data((X, Y), batch_size=8), epochs=2)
    torch.manual_seed(3)
    streamed = make(nn.Linear(3, 1), accumulate=4)
    streamed.fit(DataLoader(Stream(X, Y), batch_size=2), epochs=2)
    assert streamed.state.num_batches is None
    assert streamed.state.step == 4
    assert_close_weights(reference, streamed)


class GradProbe(kiln.Callback):
    """Records the gradients' norm at before_optimizer_step and the weights around each step."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer: kiln.Trainer) -> None:
        grads = [p.grad for p in trainer.model.parameters()]
        self.norms.append(float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))))
        self.before = [p.detach().clone() for p in trainer.model.parameters()]

    def on_train_batch_end(self, trainer: kiln.Trainer) -> None:
        after = [p.detach() for p in trainer.model.parameters()]
        self.update = torch.cat(
            [(b - a).flatten() for a, b in zip(after, self.before, strict=True)]
        )


def test_clip_norm_clips_after_the_event_that_sees_raw_gradients():
    probe = GradProbe()
    trainer = make(nn.Linear(3, 1), optimizer="sgd", lr=1.0, clip_norm=0.5, callbacks=[probe])
    X, Y = regression(4)
    trainer.fit((X, 100 * Y), batch_size=4)
    assert probe.norms[0] > 10  # the callback saw the gradients before clipping
    assert float(torch.linalg.vector_norm(probe.update)) == pytest.approx(0.5, rel=1e-5)


def test_clip_value_bounds_every_element():
    probe = GradProbe()
    trainer = make(nn.Linear(3, 1), optimizer="sgd", lr=1.0, clip_value=0.01, callbacks=[probe])
    X, Y = regression(4)
    trainer.fit((X, 100 * Y), batch_size=4)
    assert float(probe.update.abs().max()) == pytest.approx(0.01)


def cpu_scaler(monkeypatch, growth_interval: int = 2) -> None:
    """Give the trainer a real GradScaler on the CPU: the fp16 code path, without CUDA."""
    monkeypatch.setattr(
        optimizer_step,
        "grad_scaler",
        lambda precision, device: torch.amp.GradScaler(
            "cpu", init_scale=2.0**8, growth_interval=growth_interval
        ),
    )


@pytest.mark.parametrize("options", [{}, {"clip_norm": 0.3}, {"accumulate": 3}])
def test_gradient_scaler_path_equals_the_plain_path(monkeypatch, options):
    """Scaling by powers of two and unscaling before clipping is exact: same weights, bitwise."""
    plain = trained(batch_size=2, epochs=3, **options)
    cpu_scaler(monkeypatch)
    scaled = trained(batch_size=2, epochs=3, **options)
    assert scaled._stepper.scaler is not None
    assert scaled._stepper.scaler.get_scale() > 2.0**8  # it grew: steps were taken through it
    for ours, theirs in zip(scaled.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_scaler_state_is_checkpointed_and_restored(monkeypatch, tmp_path):
    cpu_scaler(monkeypatch)
    trainer = make(nn.Linear(3, 1), dir=tmp_path)
    trainer.fit(regression(), epochs=2, batch_size=2)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["optimizer_step"]
    assert saved["scaler"]["scale"] == trainer._stepper.scaler.get_scale() > 2.0**8
    fresh = make(nn.Linear(3, 1), dir=tmp_path)
    fresh.fit(regression(), epochs=2, batch_size=2, resume=True)
    assert fresh._stepper.scaler.get_scale() == trainer._stepper.scaler.get_scale()


class Poisonable(nn.Module):
    """A linear model whose output turns NaN at chosen (epoch, batch) positions."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)
        self.poison = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x)
        return out * float("nan") if self.poison else out


class PoisonAt(kiln.Callback):
    def __init__(self, *where: tuple[int, int]) -> None:
        self.where = set(where)
        self.weights_before: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer: kiln.Trainer) -> None:
        state = trainer.state
        trainer.model.poison = (state.epoch, state.batch_idx) in self.where
        if trainer.model.poison:
            self.weights_before = [p.detach().clone() for p in trainer.model.parameters()]


def test_nonfinite_loss_raises_before_the_step_naming_where():
    poison = PoisonAt((1, 2))
    trainer = make(Poisonable(), callbacks=[poison])
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 2, batch 2 \(after 6 opt"):
        trainer.fit(kiln.Data(regression(), batch_size=4), epochs=3)
    for param, before in zip(trainer.model.parameters(), poison.weights_before, strict=True):
        assert torch.equal(param, before)
        assert torch.isfinite(param).all()


def test_nonfinite_loss_never_reaches_the_checkpoint(tmp_path):
    """The run with a directory stops; last.ckpt holds the last good epoch, finite."""
    X, Y = regression()
    kiln.seed_everything(5)
    reference = make(Poisonable(), callbacks=[PoisonAt()], dir=tmp_path / "ref")
    reference.fit(kiln.Data((X, Y), batch_size=4, seed=1), epochs=1)
    kiln.seed_everything(5)
    broken = make(Poisonable(), callbacks=[PoisonAt((1, 1))], dir=tmp_path / "broken")
    with pytest.raises(FloatingPointError):
        broken.fit(kiln.Data((X, Y), batch_size=4, seed=1), epochs=3)
    saved = torch.load(tmp_path / "broken" / "last.ckpt", weights_only=True)
    assert saved["state"]["epoch"] == 1
    for key, value in reference.model.state_dict().items():
        assert torch.equal(saved["model"][key], value)
        assert torch.isfinite(saved["model"][key]).all()


def test_deferred_check_raises_at_the_end_of_the_epoch_and_refuses_to_save(tmp_path):
    """Where a read per batch would wait for the device, losses are checked at reads and saves."""
    saver = kiln.callbacks.StepCheckpoint(every_n_steps=1)
    trainer = make(Poisonable(), callbacks=[PoisonAt((1, 1)), saver], dir=tmp_path)
    trainer._stepper.check_each_batch = False  # as on CUDA
    with pytest.raises(
        FloatingPointError, match=r"was nan at epoch 2, batch 1, found at the end of the ep"
    ):
        trainer.fit(kiln.Data(regression(), batch_size=4), epochs=3)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["state"]["step"] == 5  # the save after the bad batch was refused
    assert all(torch.isfinite(value).all() for value in saved["model"].values())

    unsaved = make(Poisonable(), callbacks=[PoisonAt((0, 3))], dir=tmp_path / "epoch")
    unsaved._stepper.check_each_batch = False
    with pytest.raises(FloatingPointError, match=r"was nan at epoch 1, batch 3"):
        unsaved.fit(kiln.Data(regression(), batch_size=4), epochs=2)
    assert not (tmp_path / "epoch" / "last.ckpt").exists()


def test_skip_leaves_bad_batches_out_and_counts_them():
    X, Y = regression()
    trainer = make(Poisonable(), callbacks=[PoisonAt((0, 1), (0, 3), (1, 0))], nonfinite="skip")
    with pytest.warns(RuntimeWarning, match=r"batch\(es\) of epoch \d were skipped") as record:
        history = trainer.fit(kiln.Data((X, Y), batch_size=4), epochs=2)
    assert [str(w.message)[:26] for w in record] == [
        "2 batch(es) of epoch 1 wer",
        "1 batch(es) of epoch 2 wer",
    ]
    assert history.skipped_batches == [2.0, 1.0]
    assert trainer.state.skipped_batches == 3
    assert trainer.state.step == 5  # 8 batches, 3 skipped
    assert trainer.state.samples == 20
    assert all(math.isfinite(value) for value in history.loss)
    good = [loss for loss in history.batch_losses[:4] if loss != 0.0]
    assert history.loss[0] == pytest.approx(sum(good) / 2)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_skip_with_metrics_and_accumulation():
    class Net(Poisonable):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3, 2)

    X = torch.randn(16, 3)
    Y = (X[:, 0] > 0).long()
    trainer = kiln.Trainer(
        Net(),
        loss="cross_entropy",
        metrics=["accuracy"],
        callbacks=[PoisonAt((0, 1))],
        nonfinite="skip",
        accumulate=2,
        device="cpu",
        progress=False,
    )
    with pytest.warns(RuntimeWarning, match="1 batch"):
        history = trainer.fit((X, Y), batch_size=4)
    assert trainer.state.step == 2  # the first group kept its good batch
    assert 0.0 <= history.accuracy[0] <= 1.0


def test_validation_loss_that_is_not_finite_stops_the_run():
    class NaNOnEval(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = super().forward(x)
            return out if self.training else out * float("nan")

    trainer = make(NaNOnEval(3, 1))
    with pytest.raises(FloatingPointError, match=r"validation loss is nan after epoch 1"):
        trainer.fit(regression(), val=regression(), epochs=2)


def test_stepper_state_dict_holds_unfinished_group_gradients():
    model = nn.Linear(3, 1)
    trainer = make(model, accumulate=4)
    steps = trainer._stepper
    steps.begin_pass(trainer.optimizer, num_batches=8, first=0)
    X, Y = regression(4)
    output = kiln.StepOutput(nn.functional.mse_loss(model(X), Y), 4)
    steps.backward(output, trainer.state)
    saved = steps.state_dict(trainer.optimizer)
    assert saved["grads"] is not None
    grads = [g.clone() for g in saved["grads"]]
    other = make(copy.deepcopy(model), accumulate=4)
    other._stepper.load_state_dict(saved, other.optimizer)
    for param, grad in zip(other.model.parameters(), grads, strict=True):
        assert torch.equal(param.grad, grad)
    other._stepper.load_state_dict(None, other.optimizer)
    assert all(p.grad is None for p in other.model.parameters())
    with pytest.raises(ValueError, match=r"gradients of 2 parameters .* but the optimizer has 1"):
        other._stepper.load_state_dict(saved, torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=1))
