"""Tests of `kiln.Trainer`: fit, evaluate and predict through the public API."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import kiln


def make_trainer(model: nn.Module, **kwargs: object) -> kiln.Trainer:
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("progress", False)
    return kiln.Trainer(model, **kwargs)  # type: ignore[arg-type]


def classification_data(n: int = 60, features: int = 4, classes: int = 3):
    X = torch.randn(n, features)
    Y = torch.randint(0, classes, (n,))
    return X, Y


def test_fit_returns_history_with_one_row_per_epoch():
    """fit returns the History: one row per epoch, Keras-style keys, per-batch losses."""
    X, Y = classification_data()
    trainer = make_trainer(nn.Linear(4, 3), loss="cross_entropy", metrics=["accuracy"])
    history = trainer.fit((X, Y), val=(X, Y), epochs=3, batch_size=16)
    assert len(history) == 3
    assert history.epoch == [1, 2, 3]
    assert set(history.keys()) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "time"}
    assert len(history.batch_losses) == 3 * 4
    assert all(0.0 <= value <= 1.0 for value in history.val_accuracy)


def test_fit_equals_a_hand_written_loop_bitwise():
    """Without shuffling, kiln's fit takes exactly the steps of a plain PyTorch loop."""
    X, Y = classification_data(n=50)
    torch.manual_seed(1)
    reference = nn.Linear(4, 3)
    model = copy.deepcopy(reference)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for _ in range(2):
        for start in range(0, 50, 16):
            loss = F.cross_entropy(reference(X[start : start + 16]), Y[start : start + 16])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    trainer = make_trainer(model, loss="cross_entropy", optimizer="sgd", lr=0.1)
    trainer.fit(kiln.Data((X, Y), batch_size=16), epochs=2)
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=False):
        assert torch.equal(ours, theirs)


def test_fit_epoch_loss_is_the_sample_weighted_mean_of_batch_losses():
    """The epoch loss weighs each batch by its size (a short last batch counts less)."""
    X, Y = classification_data(n=50)
    trainer = make_trainer(nn.Linear(4, 3), loss="cross_entropy", optimizer="sgd", lr=1e-12)
    history = trainer.fit(kiln.Data((X, Y), batch_size=16), epochs=1)
    sizes = torch.tensor([16, 16, 16, 2], dtype=torch.float64)
    expected = (torch.tensor(history.batch_losses, dtype=torch.float64) * sizes).sum() / 50
    assert history.loss[0] == pytest.approx(float(expected), rel=1e-6)


def test_fit_epoch_counter_carries_across_calls():
    """A second fit continues the epoch count, and the history keeps every epoch."""
    X, Y = classification_data()
    trainer = make_trainer(nn.Linear(4, 3), loss="cross_entropy")
    trainer.fit((X, Y), epochs=2)
    history = trainer.fit((X, Y), epochs=3)
    assert trainer.state.epoch == 5
    assert history.epoch == [1, 2, 3, 4, 5]


def test_fit_learns_a_linear_regression():
    """Training reduces the loss of a learnable problem far below its start."""
    X = torch.randn(256, 3)
    Y = X @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    trainer = make_trainer(nn.Linear(3, 1), loss="mse", optimizer="adam", lr=0.05)
    history = trainer.fit((X, Y), epochs=30, batch_size=32)
    assert history.loss[-1] < 0.01 * history.loss[0]


def test_fit_val_fraction_holds_out_the_same_samples_every_run():
    """fit(val=0.25) trains on 75% and validates on the same 25% on every run."""
    X, Y = classification_data(n=100)
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        trainer = make_trainer(nn.Linear(4, 3), loss="cross_entropy", optimizer="sgd", lr=1e-12)
        trainer.fit((X, Y), val=0.25, epochs=1, batch_size=25)
        results.append(trainer.history.val_loss[0])
        assert trainer.state.num_batches == 3
    assert results[0] == results[1]


def test_fit_accepts_numpy_arrays_and_datasets_and_loaders():
    """Numpy arrays, a Dataset and a DataLoader train the same way as tensors."""
    X, Y = classification_data()
    sources = [
        (X.numpy().astype(np.float64), Y.numpy()),
        TensorDataset(X, Y),
        DataLoader(TensorDataset(X, Y), batch_size=8),
    ]
    for source in sources:
        trainer = make_trainer(nn.Linear(4, 3), loss="cross_entropy")
        assert len(trainer.fit(source, epochs=1)) == 1


def test_fit_sets_the_epoch_of_a_loader_sampler():
    """A DataLoader's sampler with set_epoch (as DistributedSampler) is told every epoch."""

    class RecordingSampler(torch.utils.data.SequentialSampler):
        epochs: list[int] = []

        def set_epoch(self, epoch: int) -> None:
            self.epochs.append(epoch)

    X, Y = classification_data(n=8)
    dataset = TensorDataset(X, Y)
    sampler = RecordingSampler(dataset)
    make_trainer(nn.Linear(4, 3), loss="cross_entropy").fit(
        DataLoader(dataset, batch_size=4, sampler=sampler), epochs=3
    )
    assert sampler.epochs == [0, 1, 2]


def test_fit_weighted_batches_scale_the_loss():
    """(x, w, y) batches weigh each sample's loss: mean(w * loss)."""
    X = torch.randn(8, 2)
    Y = torch.randn(8, 1)
    W = torch.tensor([0.0, 2.0] * 4)
    trainer = make_trainer(nn.Linear(2, 1), loss="mse", optimizer=None)
    unweighted = (trainer.predict(X) - Y).square().squeeze(1)
    evaluation = trainer.evaluate((X, W, Y), batch_size=8)
    assert evaluation.loss == pytest.approx(float((W * unweighted).mean()), rel=1e-5)


def test_fit_multi_input_batches_call_the_model_with_several_arguments():
    """An `((x1, x2), y)` batch calls `model(x1, x2)`."""

    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.left, self.right = nn.Linear(2, 1), nn.Linear(3, 1)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.left(a) + self.right(b)

    class PairDataset(Dataset):
        def __len__(self) -> int:
            return 10

        def __getitem__(self, index: int):
            return (torch.ones(2) * index, torch.ones(3)), torch.ones(1)

    trainer = make_trainer(TwoInputs(), loss="mse")
    trainer.fit(PairDataset(), epochs=1, batch_size=4)
    assert trainer.predict((torch.ones(5, 2), torch.ones(5, 3))).shape == (5, 1)


def test_fit_dict_inputs_call_the_model_with_keywords():
    """A `({"a": ..., "b": ...}, y)` batch calls `model(a=..., b=...)`."""

    class Keywords(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 1)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return self.linear(torch.cat([a, b], dim=1))

    class DictDataset(Dataset):
        def __len__(self) -> int:
            return 6

        def __getitem__(self, index: int):
            return {"a": torch.ones(2), "b": torch.zeros(2)}, torch.ones(1)

    trainer = make_trainer(Keywords(), loss="mse")
    trainer.fit(DictDataset(), epochs=1, batch_size=3)
    predictions = trainer.predict({"a": torch.ones(7, 2), "b": torch.zeros(7, 2)}, batch_size=3)
    assert predictions.shape == (7, 1)


def test_evaluate_measures_loss_and_metrics_on_the_whole_data():
    """evaluate returns the exact loss and accuracy over all samples, without prefix."""
    X, Y = classification_data(n=50)
    model = nn.Linear(4, 3)
    trainer = make_trainer(model, loss="cross_entropy", metrics=["accuracy"])
    evaluation = trainer.evaluate((X, Y), batch_size=16)
    with torch.no_grad():
        output = model(X)
    assert evaluation.loss == pytest.approx(float(F.cross_entropy(output, Y)), rel=1e-5)
    assert evaluation.accuracy == pytest.approx(float((output.argmax(1) == Y).float().mean()))
    assert evaluation["accuracy"] == evaluation.accuracy


def test_predict_concatenates_batches_on_the_cpu():
    """predict returns one CPU tensor over all batches, also for numpy input and Data."""
    X, Y = classification_data(n=70)
    model = nn.Linear(4, 3)
    trainer = make_trainer(model, optimizer=None)
    expected = model(X).detach()
    assert torch.allclose(trainer.predict(X, batch_size=16), expected)
    assert torch.allclose(trainer.predict(X.numpy()), expected)
    from_data = trainer.predict(kiln.Data((X, Y), batch_size=32))
    assert from_data.device.type == "cpu"
    assert torch.allclose(from_data, expected)


class Regressor(nn.Linear):
    """A linear model that defines its own training step (the QuNet/Lightning door)."""

    def __init__(self) -> None:
        super().__init__(2, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self(x), y)


def test_model_defined_step_logs_its_values_with_val_prefix():
    """A training_step returning {'loss', 'score'} logs score and val_score (sample-weighted)."""

    class OptimizerStepper(Regressor):
        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.mse_loss(self(x), y)
            return {"loss": loss, "score": torch.tensor([1.0, float(len(x))])}

    X, Y = torch.randn(10, 2), torch.randn(10, 1)
    trainer = make_trainer(OptimizerStepper())
    history = trainer.fit((X, Y), val=(X, Y), epochs=1, batch_size=4)
    assert history.score == [1.0]
    # Batches of 4, 4 and 2 samples: the mean of the sizes weighted by size.
    assert history.score_1[0] == pytest.approx((4 * 4 + 4 * 4 + 2 * 2) / 10)
    assert history.val_score == [1.0]


def test_model_defined_validation_and_predict_steps_are_used():
    """validation_step and predict_step on the model replace the defaults."""

    class OptimizerStepper(Regressor):
        def validation_step(self, batch, batch_idx):
            return {"loss": torch.tensor(7.0), "special": 3.0}

        def predict_step(self, batch, batch_idx):
            return torch.full((len(batch), 1), 5.0)

    X, Y = torch.randn(10, 2), torch.randn(10, 1)
    trainer = make_trainer(OptimizerStepper())
    history = trainer.fit((X, Y), val=(X, Y), epochs=1)
    assert history.val_loss == [7.0]
    assert history.val_special == [3.0]
    assert torch.equal(trainer.predict(X), torch.full((10, 1), 5.0))


def test_request_stop_ends_the_epoch_after_the_current_batch():
    """A callback's request_stop ends training after that batch; the epoch is still logged."""

    class StopAtSecondBatch(kiln.Callback):
        def on_train_batch_end(self, trainer: kiln.Trainer) -> None:
            if trainer.state.batch_idx == 1:
                trainer.request_stop("enough")

    X, Y = classification_data(n=64)
    trainer = make_trainer(nn.Linear(4, 3), loss="cross_entropy", callbacks=[StopAtSecondBatch()])
    history = trainer.fit((X, Y), epochs=5, batch_size=8)
    assert trainer.state.step == 2
    assert len(history) == 1
    assert trainer.state.stop_reason == "enough"


def test_callback_errors_keep_their_type_and_name_the_callback():
    """An error raised in a callback reaches the caller with a note naming callback and event."""
    seen: list[str] = []

    class Broken(kiln.Callback):
        def on_train_epoch_end(self, trainer: kiln.Trainer) -> None:
            raise KeyError("boom")

    class Watcher(kiln.Callback):
        def on_exception(self, trainer: kiln.Trainer) -> None:
            seen.append(type(trainer.state.error).__name__)

        def on_fit_end(self, trainer: kiln.Trainer) -> None:
            seen.append("fit_end")

    X, Y = classification_data()
    trainer = make_trainer(nn.Linear(4, 3), loss="cross_entropy", callbacks=[Broken(), Watcher()])
    with pytest.raises(KeyError, match="boom") as raised:
        trainer.fit((X, Y), epochs=1)
    assert "Broken.on_train_epoch_end" in "".join(getattr(raised.value, "__notes__", []))
    assert seen == ["KeyError", "fit_end"]


def test_trainer_without_optimizer_can_evaluate_but_not_fit():
    """optimizer=None builds a trainer for evaluation and prediction only."""
    X, Y = classification_data()
    trainer = make_trainer(nn.Linear(4, 3), loss="cross_entropy", optimizer=None)
    assert "loss" in trainer.evaluate((X, Y))
    with pytest.raises(ValueError, match="no optimizer"):
        trainer.fit((X, Y), epochs=1)


def test_trainer_logs_the_learning_rate():
    """The optimizer's learning rate is logged as `lr` every epoch."""
    X, Y = classification_data()
    trainer = make_trainer(nn.Linear(4, 3), loss="cross_entropy", optimizer="sgd", lr=0.05)
    assert trainer.fit((X, Y), epochs=2).lr == [0.05, 0.05]


def test_trainer_accepts_a_reassigned_callback_list():
    """Assigning a list to trainer.callbacks replaces them (QuNet's habit)."""
    from kiln.testing import EventRecorder

    recorder = EventRecorder()
    X, Y = classification_data()
    trainer = make_trainer(nn.Linear(4, 3), loss="cross_entropy", progress=True)
    with pytest.warns(UserWarning, match=r"replaced every callback, and ProgressBar that the tr"):
        trainer.callbacks = [recorder]
    trainer.fit((X, Y), epochs=1)
    assert recorder.events[0][0] == "fit_start"
