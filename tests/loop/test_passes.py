"""The loop's options from the seeds: val_every, pre_val, budgets, repeated passes, hooks,
and a dataset's switch_state."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import kiln
from kiln.data.repeated import Repeated
from kiln.loop.passes import find_switch_state, switching
from kiln.testing import EventRecorder
from tests.helpers import without_plots


def make(**kwargs) -> kiln.Trainer:
    kwargs.setdefault("loss", "mse")
    trainer = kiln.Trainer(nn.Linear(2, 1), device="cpu", progress=False, **kwargs)
    # Without the plots an experiment directory gets at the end of fit, which take long.
    without_plots(trainer)
    return trainer


def data(n: int = 20):
    X = torch.randn(n, 2)
    return X, X.sum(1, keepdim=True)


def test_val_every_validates_every_n_epochs_and_the_last():
    history = make().fit(data(), val=data(8), epochs=5, val_every=2, batch_size=5)
    assert [value is not None for value in history["val_loss"]] == [False, True, False, True, True]


def test_pre_val_validates_before_training_without_an_epoch():
    recorder = EventRecorder()
    trainer = make(callbacks=[recorder])
    history = trainer.fit(data(), val=data(8), epochs=2, pre_val=True, batch_size=5)
    names = [name for name, *_ in recorder.events]
    assert names[1] == "validation_start"
    assert names.index("validation_end") < names.index("train_epoch_start")
    assert set(trainer.state.pre_val_logs) == {"epoch", "val_loss"}
    assert trainer.state.pre_val_logs["epoch"] == 0
    assert trainer.state.pre_val_logs["val_loss"] == pytest.approx(
        make().evaluate(data(8)).loss, abs=10
    )
    assert len(history) == 2


def test_pre_val_is_skipped_when_the_run_resumes(tmp_path):
    trainer = make(dir=tmp_path)
    trainer.fit(data(), val=data(8), epochs=1, batch_size=5)
    resumed = make(dir=tmp_path)
    resumed.fit(data(), val=data(8), epochs=2, batch_size=5, pre_val=True, resume=True)
    assert resumed.state.resumed
    assert resumed.state.pre_val_logs == {}


@pytest.mark.parametrize(
    ("budget", "step", "samples", "reason"),
    [
        ({"max_steps": 7}, 7, 35, "reached max_steps (7 steps)"),
        ({"max_samples": 12}, 3, 15, "reached max_samples (15 samples)"),
    ],
)
def test_budgets_stop_inside_an_epoch(budget, step, samples, reason):
    trainer = make()
    history = trainer.fit(data(), val=data(8), epochs=10, batch_size=5, **budget)
    assert (trainer.state.step, trainer.state.samples) == (step, samples)
    assert trainer.state.stop_reason == reason
    assert len(history) == len(history.val_loss) == (2 if step == 7 else 1)
    assert history.val_loss[-1] is not None  # the stopping epoch is validated


def test_budget_counts_per_call_and_resume_continues_to_a_larger_one(tmp_path):
    trainer = make(dir=tmp_path)
    trainer.fit(data(), epochs=10, batch_size=5, max_steps=6)
    trainer.fit(data(), epochs=10, batch_size=5, max_steps=6)
    assert trainer.state.step == 12
    again = make(dir=tmp_path)
    again.fit(data(), epochs=10, batch_size=5, max_steps=12, resume=True)
    assert again.state.step == 12
    assert len(again.history) == len(trainer.history)
    again.fit(data(), epochs=10, batch_size=5, max_steps=15, resume=True)
    assert again.state.step == 15


def test_repeat_train_averages_the_passes_with_their_own_orders():
    X, Y = data()
    trainer = make()
    history = trainer.fit(kiln.repeat(kiln.Data((X, Y), batch_size=5, shuffle=True), 3), epochs=2)
    assert trainer.state.num_batches == 12
    assert len(history.batch_losses) == 24
    assert trainer.state.samples == 120
    assert history.loss[0] == pytest.approx(sum(history.batch_losses[:12]) / 12)


def test_repeated_passes_follow_distinct_orders():
    data_ = kiln.Data(torch.arange(6), batch_size=6, shuffle=True, seed=0)
    passes = Repeated(data_, times=3)
    passes.epoch = 1
    orders = [batch.tolist() for batch in passes]
    assert len({tuple(order) for order in orders}) == 3
    assert len(list(Repeated(data_, 2))) == len(Repeated(data_, 2)) == 2


class CountingDataset(Dataset):
    def __init__(self, n: int) -> None:
        self.X, self.Y = data(n)
        self.reads = 0

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, index: int):
        self.reads += 1
        return self.X[index], self.Y[index]


def test_repeat_val_passes_average_to_the_same_value():
    val = CountingDataset(8)
    trainer = make()
    history = trainer.fit(
        kiln.Data(data(), batch_size=5), val=kiln.repeat(DataLoader(val, batch_size=4), 2)
    )
    assert val.reads == 16
    assert history.val_loss[0] == pytest.approx(
        trainer.evaluate(DataLoader(val, batch_size=4)).loss
    )


def test_the_deprecated_fit_arguments_still_work_and_warn():
    X, Y = data()
    with pytest.warns(FutureWarning, match=r"use kiln.repeat\(data, n\) instead"):
        history = make().fit(kiln.Data((X, Y), batch_size=5), epochs=1, repeat_train=3)
    assert len(history.batch_losses) == 12
    with pytest.raises(TypeError, match="fit\\(\\) got unexpected keyword arguments: repeats"):
        make().fit(kiln.Data((X, Y), batch_size=5), repeats=3)
    with pytest.raises(ValueError, match="Give the passes per epoch once"):
        make().fit(kiln.repeat((X, Y), 2), repeat_train=2)


def test_repeat_refuses_a_count_that_is_not_a_positive_integer():
    with pytest.raises(ValueError, match=r"`times` must be a positive integer; received 0"):
        kiln.repeat(data(), 0)


@pytest.mark.filterwarnings("ignore:fit\\(epoch_hook=fn\\) is deprecated:FutureWarning")
def test_epoch_hook_runs_after_the_values_and_before_epoch_end():
    recorder = EventRecorder()
    seen = []

    def hook(trainer: kiln.Trainer) -> None:
        seen.append((sorted(trainer.state.logs), len(recorder.events)))
        recorder.events.append(("hook", trainer.state.epoch, 0, 0))

    make(callbacks=[recorder]).fit(data(), val=data(8), epochs=2, epoch_hook=hook, batch_size=10)
    assert [keys for keys, _ in seen] == [["epoch", "loss", "lr", "time", "val_loss"]] * 2
    names = [name for name, *_ in recorder.events]
    assert names[names.index("hook") + 1] == "epoch_end"
    assert names.count("hook") == 2


class Switching(Dataset):
    """Each batch is all of one label, switched by switch_state before the batch is made."""

    def __init__(self) -> None:
        self.X = torch.randn(12, 2)
        self.label = 0.0
        self.calls = 0

    def switch_state(self) -> None:
        self.calls += 1
        self.label = 1.0 - self.label

    def __len__(self) -> int:
        return len(self.X)

    def __getitem__(self, index: int):
        return self.X[index], torch.tensor([self.label])


def test_switch_state_is_called_before_each_batch_of_every_pass():
    dataset = Switching()
    loader = DataLoader(dataset, batch_size=4)
    labels = []

    class Labels(kiln.Callback):
        def on_train_batch_start(self, trainer: kiln.Trainer) -> None:
            labels.append(trainer.state.batch[1].flatten().tolist())

    trainer = make(callbacks=[Labels()])
    trainer.fit(loader, val=loader, epochs=1)
    assert labels == [[1.0] * 4, [0.0] * 4, [1.0] * 4]
    assert dataset.calls == 6  # 3 training and 3 validation batches
    trainer.predict(loader)
    assert dataset.calls == 9


def test_switch_state_is_found_through_subsets_and_on_data():
    dataset = Switching()
    train, _ = kiln.split(dataset, 0.5, 0.5)
    assert find_switch_state(DataLoader(train, batch_size=2)) == dataset.switch_state

    class SwitchingData(kiln.Data):
        def switch_state(self) -> None:
            pass

    assert find_switch_state(SwitchingData(torch.arange(3))) is not None
    assert find_switch_state(kiln.Data(torch.arange(3))) is None


def test_switching_without_a_length_asks_once_more_at_the_end():
    calls = []
    assert list(switching(iter([1, 2]), lambda: calls.append(1))) == [1, 2]
    assert len(calls) == 3
    calls.clear()
    assert list(switching(iter([1]), lambda: calls.append(1), remaining=3)) == [1]
    assert len(calls) == 2
