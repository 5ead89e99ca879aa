"""Tests of `EMA` (weight_averaging.py) and `SWA` (swa.py): the averages, options and resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kiln
from kiln.callbacks.swa import SWA
from kiln.callbacks.weight_averaging import EMA
from kiln.checkpoint.weights import load_weights


class Record(kiln.Callback):
    """Copies of the live parameters after every step and at the end of every training pass."""

    def __init__(self) -> None:
        self.steps: list[list[torch.Tensor]] = []
        self.epochs: list[list[torch.Tensor]] = []

    def on_train_batch_end(self, trainer: kiln.Trainer) -> None:
        self.steps.append([p.detach().clone() for p in trainer.model.parameters()])

    def on_train_epoch_end(self, trainer: kiln.Trainer) -> None:
        self.epochs.append([p.detach().clone() for p in trainer.model.parameters()])


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    X = torch.randn(64, 3)
    return X, X @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(64, 1)


def _trainer(callbacks: list, net: nn.Module | None = None, **kwargs) -> kiln.Trainer:
    net = net if net is not None else nn.Linear(3, 1)
    kwargs.setdefault("optimizer", "sgd")
    return kiln.Trainer(
        net, loss="mse", callbacks=callbacks, device="cpu", progress=False, **kwargs
    )


def test_ema_follows_the_formula_step_by_step():
    """The EMA equals decay*ema + (1-decay)*weights after every step, from the first."""
    record, ema = Record(), EMA(decay=0.8, validate=False)
    _trainer([record, ema]).fit(_data(), epochs=2, batch_size=16)
    expected = record.steps[0]
    for weights in record.steps[1:]:
        expected = [0.8 * e + 0.2 * w for e, w in zip(expected, weights, strict=True)]
    assert ema.count == len(record.steps) == 8
    for ours, theirs in zip(ema.model.parameters(), expected, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_ema_averages_float_buffers_and_copies_integer_ones():
    """Batch-norm running statistics are averaged; num_batches_tracked is copied."""
    net = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 1))
    ema = EMA(decay=0.5, validate=False)
    trainer = _trainer([ema], net)
    trainer.fit(_data(), epochs=1, batch_size=16)
    averaged = ema.model[0]
    assert torch.equal(averaged.num_batches_tracked, net[0].num_batches_tracked)
    assert not torch.equal(averaged.running_mean, net[0].running_mean)


def test_ema_validation_is_logged_and_leaves_the_run_unchanged():
    """val_ema_loss is the average's value; the training run is the same as without EMA."""
    X, Y = _data()
    kiln.seed_everything(0)
    plain = _trainer([])
    plain.fit((X, Y), val=(X, Y), epochs=3, batch_size=16)
    kiln.seed_everything(0)
    ema = EMA(decay=0.9)
    trainer = _trainer([ema])
    history = trainer.fit((X, Y), val=(X, Y), epochs=3, batch_size=16)
    assert history.batch_losses == plain.history.batch_losses
    assert history.val_loss == plain.history.val_loss
    assert trainer.state.stage is None
    judge = _trainer([], ema.model)
    assert history.val_ema_loss[-1] == judge.evaluate((X, Y), batch_size=16).loss
    assert history.val_ema_loss[-1] != history.val_loss[-1]
    assert ema.added_logs({"loss", "val_loss"}) == {"val_ema_loss"}
    assert EMA(validate=False).added_logs({"val_loss"}) == set()


def test_ema_swap_apply_and_save(tmp_path):
    """swap=False keeps the model; apply loads the average; save writes it in dir."""
    ema = EMA(decay=0.9, validate=False, save="ema.pt")
    trainer = _trainer([ema], dir=tmp_path)
    trainer.fit(_data(), epochs=2, batch_size=16)
    assert not torch.equal(trainer.model.weight, ema.model.weight)
    assert ema.saved_path == tmp_path / "ema.pt"
    assert torch.equal(load_weights(tmp_path / "ema.pt")["weight"], ema.model.weight)
    ema.apply(trainer)
    assert torch.equal(trainer.model.weight, ema.model.weight)

    swapping = EMA(decay=0.9, validate=False, swap=True)
    trainer = _trainer([swapping])
    trainer.fit(_data(), epochs=1, batch_size=16)
    assert torch.equal(trainer.model.weight, swapping.model.weight)


def test_ema_bad_arguments():
    """decay out of (0, 1), non-bool flags, a bad save, and use before fit are refused."""
    for decay in (0, 1, 1.5, -0.1, True):
        with pytest.raises(ValueError, match=rf"`decay` must be a number in \(0, 1\).*{decay!r}"):
            EMA(decay=decay)
    with pytest.raises(TypeError, match=r"EMA: `validate` must be True or False; received 1"):
        EMA(validate=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"EMA: `save` must be a file name .* received int"):
        EMA(save=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"EMA has no average yet"):
        EMA().model  # noqa: B018
    with pytest.raises(TypeError, match=r"EMA\.apply needs a kiln\.Trainer or a torch\.nn\.Module"):
        EMA().apply("net")  # type: ignore[arg-type]


def _resumable(directory, make_callback) -> tuple[kiln.Trainer, kiln.Data, kiln.Data]:
    kiln.seed_everything(0)
    X, Y = _data()
    net = nn.Sequential(
        nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 1)
    )
    trainer = _trainer([make_callback()], net, dir=directory)
    return trainer, kiln.Data((X, Y), batch_size=16, shuffle=True), kiln.Data((X[:16], Y[:16]))


@pytest.mark.parametrize(
    "make_callback",
    [lambda: EMA(decay=0.7), lambda: SWA(start_epoch=2, lr=0.05, anneal_epochs=2)],
    ids=["ema", "swa"],
)
def test_resume_continues_the_average_bitwise(tmp_path, make_callback):
    """2 epochs, resume to 4 == 4 epochs straight: history, average and model, bitwise."""
    straight, train, val = _resumable(tmp_path / "straight", make_callback)
    straight.fit(train, val=val, epochs=4)
    first, train, val = _resumable(tmp_path / "resumed", make_callback)
    first.fit(train, val=val, epochs=2, resume=True)
    second, train, val = _resumable(tmp_path / "resumed", make_callback)
    second.fit(train, val=val, epochs=4, resume=True)
    assert second.state.resumed
    strip = [{k: v for k, v in row.items() if k != "time"} for row in straight.history.epochs]
    assert [{k: v for k, v in row.items() if k != "time"} for row in second.history.epochs] == strip
    ours, theirs = second.callbacks.callbacks[0], straight.callbacks.callbacks[0]
    assert ours.count == theirs.count > 0
    for mine, reference in zip(
        ours.model.state_dict().values(), theirs.model.state_dict().values(), strict=True
    ):
        assert torch.equal(mine, reference)
    for mine, reference in zip(
        second.model.state_dict().values(), straight.model.state_dict().values(), strict=True
    ):
        assert torch.equal(mine, reference)


def test_swa_is_the_mean_of_end_of_epoch_weights_from_start_epoch():
    """start_epoch=2 of 4: the mean of the weights after epochs 2, 3 and 4, swapped in."""
    record, swa = Record(), SWA(start_epoch=2)
    X, Y = _data()
    trainer = _trainer([record, swa])
    history = trainer.fit((X, Y), val=(X, Y), epochs=4, batch_size=16)
    assert swa.count == 3
    for index, parameter in enumerate(trainer.model.parameters()):
        mean = sum(epoch[index] for epoch in record.epochs[1:]) / 3
        torch.testing.assert_close(parameter.detach(), mean)
    assert ["val_swa_loss" in row for row in history.epochs] == [False, True, True, True]
    assert history.lr == [0.01] * 4  # no lr: the learning rate is left alone


def test_swa_learning_rate_anneals_to_lr():
    """With lr, SWALR anneals after start_epoch and then holds lr."""
    swa = SWA(start_epoch=2, lr=0.001, anneal_epochs=2, anneal_strategy="linear", validate=False)
    history = _trainer([swa]).fit(_data(), epochs=6, batch_size=16)
    assert history.lr[:2] == [0.01, 0.01]
    assert 0.001 < history.lr[2] < 0.01
    assert history.lr[3:] == pytest.approx([0.001] * 3)


def test_swa_recomputes_batch_norm_statistics_without_touching_randomness():
    """BN running mean of the average is the training data's mean; the RNG is as without it."""
    X, Y = _data()
    states = []
    for recompute in (True, False):
        kiln.seed_everything(0)
        net = nn.Sequential(nn.BatchNorm1d(3), nn.Dropout(0.1), nn.Linear(3, 1))
        swa = SWA(start_epoch=1, recompute_bn=recompute, swap=False, validate=False)
        _trainer([swa], net).fit((X, Y), epochs=2, batch_size=16)
        states.append(torch.get_rng_state())
        if recompute:
            torch.testing.assert_close(swa.model[0].running_mean, X.mean(0))
            assert not torch.allclose(net[0].running_mean, X.mean(0))
    assert torch.equal(states[0], states[1])


def test_swa_batch_norm_with_a_model_defined_step():
    """A model with training_step gets its batches whole for the statistics."""

    class Stepper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn, self.linear = nn.BatchNorm1d(3), nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch["x"], batch["y"]
            return nn.functional.mse_loss(self.linear(self.bn(x)), y)

    X, Y = _data()

    class Dicts(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 64

        def __getitem__(self, index):
            return {"x": X[index], "y": Y[index]}

    swa = SWA(start_epoch=1, swap=False, validate=False)
    trainer = kiln.Trainer(
        Stepper(), optimizer="sgd", callbacks=[swa], device="cpu", progress=False
    )
    trainer.fit(torch.utils.data.DataLoader(Dicts(), batch_size=16), epochs=1)
    torch.testing.assert_close(swa.model.bn.running_mean, X.mean(0))


def test_swa_bad_arguments():
    """Each bad value names itself and what is expected."""
    cases = [
        ({"start_epoch": 0}, r"`start_epoch` must be a positive integer .*received 0"),
        ({"lr": -1.0}, r"`lr` must be a positive number or None; received -1\.0"),
        ({"anneal_epochs": -1}, r"`anneal_epochs` must be a non-negative integer; received -1"),
        (
            {"anneal_strategy": "exp"},
            r"`anneal_strategy` must be 'cos' or 'linear'; received 'exp'",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            SWA(**kwargs)
    with pytest.raises(TypeError, match=r"`recompute_bn` must be True or False; received 'yes'"):
        SWA(recompute_bn="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"SWA: `swap` must be True or False; received None"):
        SWA(swap=None)  # type: ignore[arg-type]


def test_ema_updates_once_per_optimizer_step_with_accumulation():
    """5 batches, 2 per step: 3 steps (the last one short), 3 updates."""
    ema = EMA(decay=0.9, validate=False)
    trainer = _trainer([ema], accumulate=2)
    trainer.fit(_data(), epochs=1, batch_size=13)
    assert trainer.state.step == ema.count == 3
