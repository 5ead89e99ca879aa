"""Tests of `LRScheduler`: every kind of schedule in a real `fit`, restarts, errors, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import LinearLR, ReduceLROnPlateau, StepLR

import kiln
from kiln.callbacks import PlotLogs, StepCheckpoint
from kiln.callbacks.lr_scheduler import LRScheduler, golden_ratio_decay
from kiln.optim import (
    GOLDEN_FACTOR,
    ConstantSchedule,
    EpochFunction,
    ExponentialSchedule,
    LinearSchedule,
    WarmupCosine,
)
from tests.helpers import CrashAtStep, SimulatedCrashError

X, Y = torch.randn(10, 2), torch.randn(10, 1)
QUNET_CHAIN = [
    1e-4, 5.05e-3, 1e-2, 8.68e-3, 5.5e-3, 2.32e-3, 1e-3, 1e-3,
    1e-3, 1e-3, 3.16e-4, 1e-4, 3.16e-5, 1e-5, 1e-5, 1e-5,
]  # fmt: skip


class StepLRs(kiln.Callback):
    """Records the rate each optimizer step uses."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_before_optimizer_step(self, trainer: kiln.Trainer) -> None:
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])


def make_trainer(*callbacks, optimizer="sgd", lr=0.1, **kwargs) -> kiln.Trainer:
    return kiln.Trainer(
        nn.Linear(2, 1),
        loss="mse",
        optimizer=optimizer,
        lr=lr,
        callbacks=list(callbacks),
        device="cpu",
        progress=False,
        **kwargs,
    )


def test_qunet_chain_in_a_run_logs_the_rate_each_epoch_used():
    scheduler = LRScheduler()
    scheduler.set(WarmupCosine(1e-4, 1e-2, 1e-3, epochs=6, warmup=2))
    scheduler.add(ConstantSchedule(1e-3, epochs=3))
    scheduler.add(ExponentialSchedule(1e-3, 1e-5, epochs=4))
    steps = StepLRs()
    history = make_trainer(scheduler, steps).fit((X, Y), epochs=16, batch_size=5)
    assert history["lr"] == pytest.approx(QUNET_CHAIN, rel=3e-3)
    assert steps.lrs[::2] == history["lr"]  # two steps an epoch, both at the logged rate
    assert scheduler.ends == [[6, 12, 60], [9, 18, 90], [13, 26, 130]]


def test_samples_stepped_per_epoch_and_per_step():
    per_epoch = LRScheduler(LinearSchedule(1.0, 0.0, samples=40))
    history = make_trainer(per_epoch).fit((X, Y), epochs=6, batch_size=4)
    assert history["lr"] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0])

    steps = StepLRs()
    per_step = LRScheduler(LinearSchedule(1.0, 0.0, samples=20), interval="step")
    history = make_trainer(per_step, steps).fit((X, Y), epochs=3, batch_size=4)  # 4, 4, 2
    assert steps.lrs == pytest.approx([1.0, 0.8, 0.6, 0.5, 0.3, 0.1, 0.0, 0.0, 0.0])
    assert history["lr"] == pytest.approx([0.6, 0.1, 0.0])  # each epoch's last step


def test_per_step_counts_optimizer_steps_not_batches():
    """With gradient accumulation, the schedule steps once per optimizer step."""
    steps = StepLRs()
    factory = LRScheduler(lambda opt: StepLR(opt, step_size=1, gamma=0.5), interval="step")
    trainer = make_trainer(factory, steps, lr=1.0, accumulate=2)
    history = trainer.fit((X, Y), epochs=2, batch_size=2)  # 5 batches: groups of 2, 2, 1
    assert trainer.state.step == 6
    assert steps.lrs == [1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125]
    assert history["lr"] == [0.25, 0.03125]


def test_plan_matches_the_run():
    schedule = [
        WarmupCosine(0.01, 0.1, 0.0, samples=30, warmup=10),
        ConstantSchedule(0.05, samples=5),
    ]
    steps = StepLRs()
    make_trainer(LRScheduler(schedule, interval="step"), steps).fit((X, Y), epochs=4, batch_size=4)
    planned = LRScheduler(schedule, interval="step").plan(4, samples_per_epoch=10, batch_size=4)
    assert planned.lrs == steps.lrs
    assert planned.ends == [9, 11]  # 30 samples in batches of 4, 4, 2; then 5 more


@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_torch_scheduler_instance_and_factory(interval):
    net = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    instance = LRScheduler(StepLR(optimizer, step_size=2, gamma=0.5), interval=interval)
    trainer = kiln.Trainer(net, loss="mse", optimizer=optimizer, callbacks=[instance],
                           device="cpu", progress=False)  # fmt: skip
    by_instance = trainer.fit((X, Y), epochs=4, batch_size=5)["lr"]
    factory = LRScheduler(lambda opt: StepLR(opt, step_size=2, gamma=0.5), interval=interval)
    by_factory = make_trainer(factory).fit((X, Y), epochs=4, batch_size=5)["lr"]
    expected = [0.1, 0.1, 0.05, 0.05] if interval == "epoch" else [0.1, 0.05, 0.025, 0.0125]
    assert by_instance == by_factory == pytest.approx(expected)
    assert isinstance(factory.scheduler, StepLR)


def test_reduce_on_plateau_receives_the_monitored_value():
    received = []

    class Spy(ReduceLROnPlateau):
        def step(self, metrics, epoch=None):
            received.append(metrics)
            super().step(metrics)

    trainer = make_trainer(LRScheduler(lambda opt: Spy(opt), monitor="val_loss"))
    history = trainer.fit((X, Y), val=(X, Y), epochs=3, batch_size=5)
    assert received == history["val_loss"]


class ConstantValLoss(kiln.Callback):
    def on_validation_end(self, trainer: kiln.Trainer) -> None:
        trainer.state.logs["val_loss"] = 1.0


def test_golden_ratio_decay_divides_by_the_golden_ratio_down_to_a_tenth():
    decay = golden_ratio_decay()
    history = make_trainer(ConstantValLoss(), decay).fit((X, Y), val=(X, Y), epochs=16)
    g = GOLDEN_FACTOR
    assert g == pytest.approx(0.6180339887)
    expected = [0.1] * 5 + [0.1 * g] * 4 + [0.1 * g**2] * 4 + [0.1 * g**3] * 3
    assert history["lr"] == pytest.approx(expected)
    plateau = decay.scheduler
    assert isinstance(plateau, ReduceLROnPlateau)
    assert (plateau.mode, plateau.patience, plateau.min_lrs) == ("min", 3, [pytest.approx(0.01)])


def test_torchfusion_function_is_called_after_each_epoch_with_its_number():
    calls = []

    def lr_schedule(epoch: int) -> float:
        calls.append(epoch)
        return 0.1 / 10 ** (epoch // 2)

    history = make_trainer(LRScheduler(EpochFunction(lr_schedule))).fit((X, Y), epochs=4)
    assert calls == [0, 1, 2, 3]
    assert history["lr"] == pytest.approx([0.1, 0.1, 0.1, 0.01])  # epoch e+1 runs at fn(e)


def test_restart_returns_to_the_start():
    chain = LRScheduler(LinearSchedule(1.0, 0.0, epochs=4))
    trainer = make_trainer(chain)
    trainer.fit((X, Y), epochs=2)
    chain.restart()
    assert trainer.optimizer.param_groups[0]["lr"] == 1.0
    assert trainer.fit((X, Y), epochs=3)["lr"] == pytest.approx([1.0, 0.75, 1.0, 0.75, 0.5])

    calls = []
    function = LRScheduler(EpochFunction(lambda epoch: calls.append(epoch) or 0.5))
    trainer = make_trainer(function)
    trainer.fit((X, Y), epochs=2)
    function.restart()
    trainer.fit((X, Y), epochs=2)
    assert calls == [0, 1, 0, 1]
    assert trainer.history["lr"] == [0.1, 0.5, 0.1, 0.5]


class RestartAt(kiln.Callback):
    """Stands for PytorchTrainer's optimizer restart: calls `restart()` at an epoch's end."""

    def __init__(self, scheduler: LRScheduler, epoch: int) -> None:
        self.scheduler, self.epoch = scheduler, epoch

    def on_epoch_end(self, trainer: kiln.Trainer) -> None:
        if trainer.state.epoch == self.epoch:
            self.scheduler.restart()


@pytest.mark.parametrize("restart_first", [True, False])
def test_restart_during_a_run_in_either_callback_order(restart_first):
    """The epoch after a restart runs at the starting rate, before or after the step."""
    scheduler = LRScheduler(LinearSchedule(1.0, 0.0, epochs=4))
    restart = RestartAt(scheduler, 2)
    callbacks = [restart, scheduler] if restart_first else [scheduler, restart]
    history = make_trainer(*callbacks).fit((X, Y), epochs=5)
    assert history["lr"] == pytest.approx([1.0, 0.75, 1.0, 0.75, 0.5])


def test_restart_of_a_torch_scheduler_and_of_a_replaced_optimizer():
    decay = LRScheduler(lambda opt: StepLR(opt, step_size=1, gamma=0.5))
    trainer = make_trainer(decay)
    trainer.fit((X, Y), epochs=3)
    decay.restart()
    assert decay.scheduler.last_epoch == 0
    assert trainer.optimizer.param_groups[0]["lr"] == 0.1
    trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=0.3)
    decay.restart()  # a fresh optimizer (PytorchTrainer's restart): built again on it
    assert decay.scheduler.optimizer is trainer.optimizer
    assert trainer.optimizer.param_groups[0]["lr"] == 0.1  # the run's starting rate


def test_set_add_clear():
    scheduler = LRScheduler(ConstantSchedule(0.2, epochs=1))
    trainer = make_trainer(scheduler)
    trainer.fit((X, Y), epochs=1)
    scheduler.set(WarmupCosine(0.01, 0.1, 0.05, epochs=3, warmup=1))
    assert trainer.optimizer.param_groups[0]["lr"] == 0.01  # at once, as QuNet's set_scheduler
    scheduler.add(ConstantSchedule(0.05, epochs=1))
    assert len(scheduler.chain) == 2
    scheduler.clear()
    assert len(scheduler.chain) == 0
    assert trainer.fit((X, Y), epochs=2)["lr"] == [0.2, 0.01, 0.01]
    scheduler.set(lambda opt: StepLR(opt, 1))
    with pytest.raises(ValueError, match="appends a kiln curve to a chain of kiln curves"):
        scheduler.add(ConstantSchedule(0.05, epochs=1))


def test_plans_of_functions_and_factories_and_the_plot(tmp_path):
    function = LRScheduler(EpochFunction(lambda epoch: 0.1 * 0.5**epoch))
    assert function.plan(3, lr=1.0).lrs == [1.0, 0.1, 0.05]
    factory = LRScheduler(lambda opt: StepLR(opt, step_size=2), interval="step")
    assert factory.plan(2, samples_per_epoch=10, batch_size=5, lr=1.0).lrs == pytest.approx(
        [1.0, 1.0, 0.1, 0.1]
    )
    pytest.importorskip("matplotlib")
    chain = LRScheduler(
        [
            WarmupCosine(1e-4, 1e-2, 1e-3, samples=600, warmup=100),
            ConstantSchedule(1e-3, samples=200),
            ExponentialSchedule(1e-3, 1e-5, samples=400),
        ],
        interval="step",
    )
    figure = chain.plot(15, samples_per_epoch=100, batch_size=32, title="chain per step")
    assert [line.get_xdata()[0] for line in figure.axes[0].lines[1:]] == pytest.approx(
        [6, 8, 12], abs=0.25
    )
    figure.savefig(tmp_path / "plan.png")


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (
            lambda: LRScheduler(interval="batch"),
            ValueError,
            "must be 'epoch' or 'step'; received 'b",
        ),
        (lambda: LRScheduler(monitor=1), TypeError, "`monitor` must be a logged name"),
        (
            lambda: LRScheduler(0.1),
            TypeError,
            "LRScheduler takes a torch.optim.lr_scheduler .*float",
        ),
        (lambda: LRScheduler([0.1]), TypeError, "holds kiln schedules"),
        (lambda: LRScheduler(EpochFunction(abs), interval="step"), ValueError, "needs interval='e"),
        (
            lambda: LRScheduler(ConstantSchedule(0.1, epochs=2), interval="step"),
            ValueError,
            "counts samples, but ConstantSchedule.* is measured in epochs",
        ),
        (
            lambda: LRScheduler(ReduceLROnPlateau(torch.optim.SGD([nn.Parameter(X)])), "step"),
            ValueError,
            "ReduceLROnPlateau steps with the monitored value of each epoch",
        ),
        (lambda: LRScheduler(lambda o: 0.1).plan(2), ValueError, "pass `lr=`"),
        (lambda: LRScheduler([]).plan(0), ValueError, "`epochs` must be a positive whole number"),
        (lambda: LRScheduler(interval="step").plan(2), ValueError, "needs `samples_per_epoch=`"),
        (
            lambda: LRScheduler(LinearSchedule(0.1, 0.0, samples=9)).plan(2),
            ValueError,
            "counts samples, so its plan needs `samples_per_epoch=`",
        ),
        (
            lambda: LRScheduler(StepLR(torch.optim.SGD([nn.Parameter(X)]), 2)).plan(2, lr=0.1),
            ValueError,
            "cannot run a scheduler instance",
        ),
        (
            lambda: LRScheduler(lambda o: ReduceLROnPlateau(o)).plan(2, lr=0.1),
            ValueError,
            "depends on the step count alone; the factory returned ReduceLROnPlateau",
        ),
    ],
)
def test_bad_arguments_are_refused(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_errors_in_a_run():
    with pytest.raises(TypeError, match="returned float. For a function `fn.epoch. -> lr`, pass"):
        make_trainer(LRScheduler(lambda optimizer: 0.1)).fit((X, Y))
    other = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="built on another optimizer than the trainer's"):
        make_trainer(LRScheduler(StepLR(other, 2))).fit((X, Y))
    with pytest.raises(ValueError, match="watches 'val_loss', but `fit` has no validation data"):
        make_trainer(golden_ratio_decay()).fit((X, Y))
    decay = golden_ratio_decay(monitor="val_score")
    trainer = make_trainer(decay)
    with pytest.raises(ValueError, match=r"names a value that is never logged.*Logged values: ep"):
        trainer.fit((X, Y), val=(X, Y))  # found on the first batch by the trainer's checks
    trainer.state.epoch = 1  # as after an epoch in which the value stopped being logged
    trainer.state.logs = {"loss": 1.0, "val_loss": 1.0}
    with pytest.raises(ValueError, match=r"is not logged, so ReduceLROnPlateau cannot step. Lo"):
        decay.on_epoch_end(trainer)
    with pytest.raises(ValueError, match=r"must be a learning rate of 0 or more; received -1"):
        make_trainer(LRScheduler(EpochFunction(lambda epoch: -1))).fit((X, Y))
    scheduler = LRScheduler(ConstantSchedule(0.1, epochs=1))
    trainer = make_trainer(optimizer=None, lr=None)
    with pytest.raises(ValueError, match="this trainer has no optimizer. Create the trainer"):
        scheduler.on_fit_start(trainer)


def test_a_state_of_another_kind_is_refused():
    saved = LRScheduler(ConstantSchedule(0.1, epochs=1)).state_dict()
    with pytest.raises(ValueError, match="is a chain schedule, but this LRScheduler holds a tor"):
        LRScheduler(lambda opt: StepLR(opt, 1)).load_state_dict(saved)


# -- resume -------------------------------------------------------------------------------


class FlatNet(nn.Module):
    """Logs `flat`, a value that never improves, so that a plateau scheduler decays."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return {"loss": nn.functional.mse_loss(self.net(x), y), "flat": torch.ones(())}


SCHEDULES = {
    "chain-epoch": lambda: LRScheduler(
        [WarmupCosine(1e-3, 1e-1, 1e-2, epochs=3, warmup=1), LinearSchedule(None, 1e-3, samples=50)]
    ),
    "chain-step": lambda: LRScheduler(
        [
            WarmupCosine(1e-3, 1e-1, 1e-2, samples=60, warmup=20),
            ExponentialSchedule(None, 1e-3, samples=40),
        ],
        interval="step",
    ),
    "factory-step": lambda: LRScheduler(
        lambda opt: LinearLR(opt, start_factor=0.2, total_iters=12),  # recursive: lr *= ...
        interval="step",
    ),
    "golden": lambda: golden_ratio_decay(monitor="flat", patience=1),
    "function": lambda: LRScheduler(EpochFunction(lambda epoch: 0.05 * 0.7**epoch)),
}


def make_run(directory: Path, kind: str, crash_at: int | None) -> tuple[kiln.Trainer, kiln.Data]:
    kiln.seed_everything(0)
    X = torch.randn(40, 4)
    Y = X.sum(1, keepdim=True)
    callbacks = [SCHEDULES[kind](), CrashAtStep(crash_at), StepCheckpoint(every_n_steps=6)]
    trainer = kiln.Trainer(FlatNet(), optimizer="adam", lr=0.05, callbacks=callbacks,
                           dir=directory, device="cpu", progress=False)  # fmt: skip
    return trainer, kiln.Data((X, Y), batch_size=8, shuffle=True)


def without_time(history: kiln.History) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "time"} for row in history.epochs]


@pytest.mark.parametrize("kind", list(SCHEDULES))
def test_resume_mid_epoch_is_bitwise_identical(tmp_path, monkeypatch, kind):
    """5 steps an epoch; crash after step 8, resume from the save after step 6 (mid-epoch)."""
    monkeypatch.setattr(PlotLogs, "on_fit_end", lambda self, trainer: None)  # slow, unneeded
    straight, data = make_run(tmp_path / "straight", kind, None)
    straight.fit(data, epochs=5)

    crashed, data = make_run(tmp_path / "resumed", kind, 8)
    with pytest.raises(SimulatedCrashError):
        crashed.fit(data, epochs=5, resume=True)
    resumed, data = make_run(tmp_path / "resumed", kind, None)
    history = resumed.fit(data, epochs=5, resume=True)

    assert resumed.state.resumed
    assert without_time(history) == without_time(straight.history)
    assert len(set(history["lr"])) > 1  # the schedule did change the rate
    assert history.batch_losses == straight.history.batch_losses
    assert (
        resumed.callbacks.callbacks[0].state_dict() == straight.callbacks.callbacks[0].state_dict()
    )
    for ours, theirs in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)
