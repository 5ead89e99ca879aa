"""AutoTrainer: PytorchTrainer's preset built from kiln.Trainer, its files, split and report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset, random_split

import kiln
from kiln.callbacks import BestAverage, EarlyStopping, RestartOnPlateau, StopFile
from kiln.presets import AutoTrainer, CriterionTrainer, read_auto_record
from kiln.presets.inputs import split as _split


def small_net(inputs: int = 3, outputs: int = 2) -> nn.Module:
    """A module-level builder function, as PytorchTrainer's net_builder."""
    return nn.Sequential(nn.Linear(inputs, 8), nn.ReLU(), nn.Linear(8, outputs))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(2, 1), nn.Linear(3, 1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.a(x1) + self.b(x2)


class Items(Dataset):
    """A dataset read item by item, with PytorchTrainer's attributes and hooks."""

    def __init__(self, X, Y):
        self.X, self.Y = X, Y
        self.regression_flags = [1, 0]
        self.switches = 0

    def __len__(self):
        return len(self.X)

    def __getitem__(self, index):
        return self.X[index], self.Y[index]

    def switch_state(self):
        self.switches += 1


def mixed_data(n: int = 80) -> TensorDataset:
    X = torch.randn(n, 3)
    Y = torch.stack([10 * X[:, 0] + 50, (X[:, 1] > 0).float()], 1)
    return TensorDataset(X, Y)


def train(auto: AutoTrainer, data, name, **options):
    options = {"n_epochs": 3, "verbose": False, **options}
    return auto.train(data, name=str(name), **options)


def test_the_preset_configures_one_trainer_with_the_readme_callbacks(tmp_path):
    auto = AutoTrainer(small_net, [3, 2], device="cpu")
    history = train(auto, mixed_data(), tmp_path / "run", n_best_nets=2)
    trainer = auto.trainer
    assert isinstance(trainer, CriterionTrainer)
    assert isinstance(trainer, kiln.Trainer)
    assert type(trainer.optimizer).__name__ == "Lookahead"
    kinds = [type(cb) for cb in trainer.callbacks]
    for kind in (RestartOnPlateau, EarlyStopping, BestAverage, StopFile):
        assert kind in kinds
    stopper = next(cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping))
    assert (stopper.monitor, stopper.mode, stopper.patience) == ("val_score", "min", 0.15)
    assert (stopper.min_rel_delta, stopper.countdown) == (0.005, True)
    for row in history.epochs:
        assert row["score"] == pytest.approx(math.sqrt(row["unscaled_loss"]))
        assert row["val_score"] == pytest.approx(math.sqrt(row["val_unscaled_loss"]))
    assert auto.history is history


def test_without_restarts_there_is_no_restart_callback(tmp_path):
    auto = AutoTrainer(small_net, [3, 2], device="cpu")
    train(auto, mixed_data(), tmp_path / "run", with_restarts=False, n_epochs=1)
    assert not any(isinstance(cb, RestartOnPlateau) for cb in auto.trainer.callbacks)


def test_the_split_is_pytorch_trainers():
    data = mixed_data(50)
    train_part, val_part = _split(data, 0.9, shuffle=True)
    generator = torch.Generator().manual_seed(42)
    expected = random_split(range(50), [45, 5], generator=generator)
    assert train_part.indices == list(expected[0])
    assert val_part.indices == list(expected[1])
    assert _split(data, 0.9, shuffle=True)[1].indices == val_part.indices  # every run
    ordered = _split(data, 0.9, shuffle=False)
    assert ordered[0].indices == list(range(45))
    assert ordered[1].indices == list(range(45, 50))


def test_best_file_holds_weights_recipe_and_criterion_and_loads_back(tmp_path):
    data = mixed_data()
    auto = AutoTrainer(small_net, {"inputs": 3, "outputs": 2}, device="cpu")  # a dict: keywords
    train(auto, data, tmp_path / "run")
    record = read_auto_record(tmp_path / "run.pt")
    assert record["recipe"]["target"].endswith(":small_net")
    assert record["recipe"]["kwargs"] == {"inputs": 3, "outputs": 2}
    assert record["criterion"]["kinds"] == ["regression", "binary"]
    assert record["epoch"] == next(
        cb.best_epoch for cb in auto.trainer.callbacks if type(cb).__name__ == "SaveBest"
    )
    fresh = AutoTrainer(small_net, {"inputs": 3, "outputs": 2}, device="cpu")
    assert fresh.load(tmp_path / "run") is fresh  # on an instance: loads into it
    by_class = AutoTrainer.load(tmp_path / "run", device="cpu", builder=small_net)
    X = data.tensors[0]
    assert np.array_equal(fresh.predict(X), by_class.predict(X))
    auto.load(tmp_path / "run")
    assert np.array_equal(auto.predict(X), fresh.predict(X))


def test_a_builder_function_is_never_called_from_the_file(tmp_path):
    auto = AutoTrainer(small_net, [3, 2], device="cpu")
    train(auto, mixed_data(), tmp_path / "run", n_epochs=1)
    with pytest.raises(ValueError, match="kiln never calls a function named in a file"):
        AutoTrainer.load(tmp_path / "run", device="cpu")


def test_a_kiln_model_class_is_rebuilt_from_the_file(tmp_path):
    auto = AutoTrainer(kiln.MLP, [3, [8], 2], device="cpu")
    train(auto, mixed_data(), tmp_path / "run", n_epochs=1)
    again = AutoTrainer.load(str(tmp_path / "run"), device="cpu")
    assert isinstance(again.net, kiln.MLP)


def test_averaged_file_only_with_several_best_nets(tmp_path):
    auto = AutoTrainer(small_net, [3, 2], device="cpu")
    train(auto, mixed_data(), tmp_path / "one", n_epochs=3, n_best_nets=1)
    assert not (tmp_path / "one_avg.pt").exists()
    train(auto, mixed_data(), tmp_path / "avg", n_epochs=3, n_best_nets=3)
    record = read_auto_record(tmp_path / "avg_avg.pt")
    averaging = next(cb for cb in auto.trainer.callbacks if isinstance(cb, BestAverage))
    assert record["averaged_epochs"] == averaging.averaged_epochs
    for key, value in auto.net.state_dict().items():
        assert torch.equal(record["model"][key], value)  # the averaged net stays in memory


def test_the_stop_file_ends_the_run_after_the_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stop_run").touch()
    auto = AutoTrainer(small_net, [3, 2], device="cpu")
    history = train(auto, mixed_data(), "run", n_epochs=10)
    assert len(history) == 1
    assert not (tmp_path / "stop_run").exists()
    assert (tmp_path / "run.pt").exists()


def test_report_lines_and_epoch_hook(tmp_path, capsys):
    seen = []
    auto = AutoTrainer(small_net, [3, 2], device="cpu")
    train(auto, mixed_data(), tmp_path / "run", verbose=True, epoch_hook=seen.append)
    out = capsys.readouterr().out
    assert seen == [auto] * len(auto.history)
    assert "MESSAGE: Regression flags: [1, 0]" in out
    lines = [line for line in out.splitlines() if "/ at epoch: " in line]
    assert len(lines) == len(auto.history)
    assert lines[0].startswith(f"MESSAGE: name: {tmp_path / 'run'} / train score: ")
    assert lines[0].endswith("/ Got improvement")


def test_a_dataset_of_items_uses_its_attributes_and_switch_state(tmp_path):
    X = torch.randn(40, 3)
    dataset = Items(X, torch.stack([X[:, 0], (X[:, 1] > 0).float()], 1))
    auto = AutoTrainer(small_net, [3, 2], device="cpu")
    train(auto, dataset, tmp_path / "run", n_epochs=1, repeat_train=2)
    assert auto.trainer.state.num_batches == 2 * math.ceil(36 / 16)
    assert dataset.switches > 0
    predicted = auto.predict_dataset(dataset)  # batch_size=1, as PytorchTrainer
    assert isinstance(predicted, np.ndarray)
    assert predicted.shape == (40, 2)
    assert ((predicted[:, 1] > 0) & (predicted[:, 1] < 1)).all()


def test_predict_runs_once_over_the_inputs_and_takes_several_inputs(tmp_path):
    x1, x2 = torch.randn(600, 2), torch.randn(600, 3)
    y = (x1.sum(1, keepdim=True) + x2.sum(1, keepdim=True)) * 4
    auto = AutoTrainer(TwoInputs(), device="cpu")  # a network, not a builder
    auto.train(_pairs(x1, x2, y), name=str(tmp_path / "two"), n_epochs=1, verbose=False)
    predicted = auto.predict(x1, x2.numpy())
    assert predicted.shape == (600, 1)  # PytorchTrainer's code gave (600 * batches, 1)
    from_dataset = auto.predict_dataset(_pairs(x1, x2, y), batch_size=64)
    assert np.allclose(predicted, from_dataset, atol=1e-6)


def data_as_dataset(items):
    class Listed(Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, index):
            return items[index]

    return Listed()


def _pairs(x1, x2, y):
    return data_as_dataset([((a, b), t) for a, b, t in zip(x1, x2, y, strict=True)])


def test_a_custom_criterion_needs_call_and_postproc(tmp_path):
    class Halved:
        def __init__(self, dataset):
            self.dataset = dataset

        def __call__(self, output, target, weights=None, unscaled=False):
            loss = ((output - target) ** 2).mean()
            return loss if unscaled else loss / 2

        def postproc(self, pred):
            return pred + 1000

    X = torch.randn(40, 3)
    auto = AutoTrainer(small_net, [3, 1], device="cpu")
    history = train(auto, (X, X[:, :1]), tmp_path / "run", criterion=Halved, n_epochs=1)
    assert history.loss[0] == pytest.approx(history.unscaled_loss[0] / 2)
    assert auto.criterion.dataset is not None  # the class was called with the dataset
    assert (auto.predict(X) > 900).all()
    with pytest.raises(TypeError, match=r"have a `postproc\(pred\)` method; received function"):
        train(auto, (X, X[:, :1]), tmp_path / "run", criterion=lambda o, t: (o - t).mean())


def test_multiclass_criterion(tmp_path):
    X = torch.randn(90, 3)
    labels = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()
    auto = AutoTrainer(small_net, [3, 3], device="cpu")
    train(auto, (X, labels), tmp_path / "run", criterion="multiclass", n_epochs=2)
    assert np.allclose(auto.predict(X).sum(1), 1.0, atol=1e-5)


def test_a_nan_score_stops_the_run_cleanly(tmp_path, capsys):
    X = torch.randn(40, 3)
    X[5, 0] = float("inf")
    auto = AutoTrainer(small_net, [3, 2], device="cpu")
    Y = torch.stack([X[:, 1], (X[:, 2] > 0).float()], 1)
    train(auto, (X, Y), tmp_path / "run", n_epochs=5, verbose=True, shuffle=False)
    assert "Got nan and stopped" in capsys.readouterr().out
    assert auto.trainer.state.stop_reason.startswith("Got nan and stopped")


def test_resume_continues_bitwise(tmp_path):
    def run(directory, crash_at=None, n_epochs=6):
        kiln.seed_everything(0)
        auto = AutoTrainer(small_net, [3, 2], device="cpu")

        def hook(_auto):
            if crash_at is not None and len(auto.trainer.history) == crash_at:
                raise RuntimeError("crash")

        name = str(directory / "run")
        auto.train(mixed_data(), name=name, n_epochs=n_epochs, verbose=False, n_best_nets=2,
                   epoch_hook=hook, dir=directory, resume=True)  # fmt: skip
        return auto

    straight = run(tmp_path / "straight")
    with pytest.raises(RuntimeError, match="crash"):
        run(tmp_path / "resumed", crash_at=3)
    resumed = run(tmp_path / "resumed")
    assert resumed.trainer.state.resumed
    drop = lambda history: [{k: v for k, v in r.items() if k != "time"} for r in history.epochs]  # noqa: E731
    assert drop(resumed.history) == drop(straight.history)
    for ours, theirs in zip(resumed.net.parameters(), straight.net.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    best = read_auto_record(tmp_path / "resumed" / "run.pt")
    assert best["epoch"] == read_auto_record(tmp_path / "straight" / "run.pt")["epoch"]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"train_prop": 1.0}, ValueError, "must lie strictly between 0 and 1"),
        ({"criterion": "hinge"}, ValueError, "unknown criterion 'hinge'"),
        ({"train_prop": 0.01}, ValueError, "both need at least one"),
    ],
)
def test_bad_training_options_are_explained(tmp_path, options, error, message):
    auto = AutoTrainer(small_net, [3, 2], device="cpu")
    with pytest.raises(error, match=message):
        train(auto, mixed_data(), tmp_path / "run", **options)


def test_bad_construction_and_use_are_explained(tmp_path):
    with pytest.raises(TypeError, match="`net_builder` must be a function"):
        AutoTrainer(42)
    with pytest.raises(TypeError, match="`net_build_args` must be a list or tuple"):
        AutoTrainer(small_net, "3, 2")
    with pytest.raises(TypeError, match="net_builder returned a int"):
        AutoTrainer(lambda: 1)
    auto = AutoTrainer(small_net, [3, 2], device="cpu")
    with pytest.raises(TypeError, match="`dataset` must be a torch Dataset"):
        train(auto, {"x": 1}, tmp_path / "run")
    with pytest.raises(ValueError, match="has no criterion yet"):
        auto.predict(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"needs the network's inputs"):
        auto.predict()
    with pytest.raises(FileNotFoundError, match="No model file"):
        auto.load(tmp_path / "missing")
    torch.save({"weight": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(
        ValueError, match="is a bare `state_dict`, not a file of kiln's auto preset"
    ):
        auto.load(tmp_path / "plain")


def test_load_of_another_kiln_file_says_what_it_is_and_what_kiln_load_returns(tmp_path):
    """The hint names the file's kind, and `kiln.load` for what it is: it gives a Trainer."""
    trainer = kiln.Trainer(kiln.MLP(2, [4], 1), loss="mse", device="cpu", progress=False)
    saved = trainer.save(tmp_path / "run.pt")
    torch.save(nn.Linear(2, 1).state_dict(), tmp_path / "bare.pt")
    for name, kind in [("run", r"a trainer written by `Trainer\.save\(\)`"), ("bare", "a bare")]:
        with pytest.raises(
            ValueError, match=rf"is {kind}.*, not a file of kiln's auto preset"
        ) as info:
            AutoTrainer.load(tmp_path / name, device="cpu")
        message = str(info.value)
        assert "`kiln.load(path)` rebuilds a `kiln.Trainer` (not an AutoTrainer)" in message
        assert "that `AutoTrainer.train(..., name=name)` writes" in message
    assert saved.exists()
