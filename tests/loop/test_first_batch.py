"""Tests of `kiln.loop.first_batch`: what goes wrong on a pass's first batch, explained.

Through the public API (`Trainer.fit`, `evaluate`, `predict`), for the inputs a user brings from
plain PyTorch: padded labels, a DataLoader of dicts, a model returning a tuple.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import kiln
from kiln.metrics import Accuracy

N, FEATURES, CLASSES = 16, 4, 3


def make_trainer(model: nn.Module | None = None, **kwargs: Any) -> kiln.Trainer:
    kwargs.setdefault("loss", "cross_entropy")
    return kiln.Trainer(
        nn.Linear(FEATURES, CLASSES) if model is None else model,
        device="cpu",
        progress=False,
        **kwargs,
    )


def data(labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(N, FEATURES, generator=generator)
    Y = torch.randint(0, CLASSES, (N,), generator=generator) if labels is None else labels
    return X, Y


# Predict explains its first batch as evaluate does.


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            torch.randn(8, FEATURES + 1),
            r"The model could not run on the first batch: mat1 and mat2 shapes cannot be "
            r"multiplied .* The inputs have shape \(8, 5\) float32\. Its first layer, "
            r"Linear\(in_features=4, .* expects inputs of shape \(N, 4\)",
        ),
        (
            torch.randn(8, FEATURES, dtype=torch.float64),
            r"The model could not run on the first batch: .* The inputs are \(8, 4\) float64\. "
            r"Fix: give the data the model's dtype, usually float32",
        ),
    ],
)
def test_predict_explains_inputs_that_do_not_fit_as_evaluate_does(inputs, message):
    """Wrong feature count or dtype: `predict` gives evaluate's explanation, not torch's."""
    trainer = make_trainer()
    with pytest.raises(ValueError, match=message):
        trainer.evaluate((inputs, torch.zeros(len(inputs), dtype=torch.long)))
    with pytest.raises(ValueError, match=message) as info:
        trainer.predict(inputs)
    assert isinstance(info.value.__cause__, RuntimeError)  # torch's error stays as the cause


# A DataLoader of dicts.


class DictDataset(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return N

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": torch.zeros(FEATURES), "y": torch.tensor(index % CLASSES)}


@pytest.mark.parametrize("call", ["fit", "evaluate", "predict"])
def test_a_loader_of_dicts_is_explained(call):
    """A dict batch is read as keyword inputs: the message says so and how to fix it."""
    trainer = make_trainer()
    loader = DataLoader(DictDataset(), batch_size=4)
    match = (
        r"The model could not be called with the first batch: Linear\.forward\(\) got an "
        r"unexpected keyword argument 'x'\. The batch is a dict \('x', 'y'\): kiln reads a "
        r"dict as the model's keyword inputs alone.*Fix: have the dataset .* return `\(x, y\)`"
    )
    with pytest.raises(TypeError, match=match):
        getattr(trainer, call)(loader)
    assert trainer.state.step == 0


def test_too_many_inputs_are_explained():
    """`((x1, x2), y)` for a model of one input names how kiln called it."""
    dataset = [((torch.zeros(FEATURES), torch.zeros(2)), torch.tensor(0))] * 4
    match = (
        r"Linear\.forward\(\) takes 2 positional arguments but 3 were given\. kiln called it "
        r"with 2 positional inputs, `model\(\*x\)`, from the inputs \(\(4, 4\) float32, "
        r"\(4, 2\) float32\)"
    )
    with pytest.raises(TypeError, match=match):
        make_trainer().fit(DataLoader(dataset, batch_size=4))


def test_a_type_error_inside_the_model_is_left_as_it_is():
    """Only the call of the model with the batch is explained, not an error inside forward."""

    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat(x, 1)  # type: ignore[arg-type]

    with pytest.raises(TypeError, match=r"cat\(\)"):
        make_trainer(Broken(), optimizer=None).predict(torch.zeros(2, FEATURES))


# A model returning a tuple.


class TwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(FEATURES, CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(x), x


@pytest.mark.parametrize("call", ["fit", "evaluate"])
def test_a_model_returning_a_tuple_to_a_named_loss_is_explained(call):
    """The loss names the tuple's parts and shows a loss that picks the tensor."""
    trainer = make_trainer(TwoOutputs())
    match = (
        r"The loss cross_entropy takes the model's output as one tensor, but the model returned "
        r"a tuple: \(\(16, 3\) float32, \(16, 4\) float32\)\. Fix: .*"
        r"`loss=lambda output, y: F\.cross_entropy\(output\[0\], y\)`"
    )
    with pytest.raises(TypeError, match=match):
        getattr(trainer, call)(data())
    picked = make_trainer(TwoOutputs(), loss=lambda output, y: F.cross_entropy(output[0], y))
    picked.fit(data(), epochs=1)
    assert picked.state.step == 1


# Padding: torch's ignore_index.


def padded_labels() -> torch.Tensor:
    labels = data()[1].clone()
    labels[::3] = -100
    return labels


@pytest.mark.parametrize("loss", ["cross_entropy", nn.CrossEntropyLoss()])
def test_ignored_labels_train_and_are_left_out_of_accuracy(loss):
    """-100 labels pass the label checks (in memory and from a loader); accuracy skips them."""
    X, Y = data(padded_labels())
    trainer = make_trainer(loss=loss, metrics=["accuracy"])
    trainer.fit((X, Y), val=DataLoader(TensorDataset(X, Y), batch_size=4), epochs=1)
    kept = Y != -100
    with torch.no_grad():
        right = (trainer.model(X).argmax(1) == Y)[kept].float().mean()
    assert trainer.evaluate((X, Y)).accuracy == pytest.approx(float(right))


def test_a_loss_with_its_own_ignore_index_asks_the_metric_to_follow():
    """`CrossEntropyLoss(ignore_index=0)` with a named accuracy: say how to make it skip 0."""
    X, Y = data()
    trainer = make_trainer(loss=nn.CrossEntropyLoss(ignore_index=0), metrics=["accuracy"])
    match = (
        r"The loss CrossEntropyLoss ignores the targets labelled 0 .* but the metric 'accuracy' "
        r"would count them .* `kiln\.metrics\.Accuracy\(ignore_index=0, name='accuracy'\)`"
    )
    with pytest.raises(ValueError, match=match):
        trainer.fit((X, Y), epochs=1)
    padded = Y.clone()
    padded[:4] = 7  # out of range, but ignored
    trainer = make_trainer(
        loss=nn.CrossEntropyLoss(ignore_index=7), metrics=[Accuracy(ignore_index=7)]
    )
    trainer.fit((X, padded), epochs=1)


def test_labels_out_of_range_beside_padding_are_still_refused():
    """Skipping -100 does not let another bad label through, even beyond the first batch."""
    labels = padded_labels()
    labels[-1] = CLASSES  # in the last batch of in-memory data
    with pytest.raises(ValueError, match=r"got the class label 3, but .* 3 classes"):
        make_trainer().fit(kiln.Data(data(labels), batch_size=4), epochs=1)


# Binary cross-entropy targets.


@pytest.mark.parametrize("loss", ["bce_with_logits", "bce", nn.BCEWithLogitsLoss()])
def test_binary_targets_outside_0_1_are_refused_before_a_step(loss):
    """Targets of 0..5 for a binary loss: refused on the first batch (all of in-memory data)."""
    model = nn.Sequential(nn.Linear(FEATURES, 1), nn.Sigmoid()) if loss == "bce" else None
    model = model or nn.Linear(FEATURES, 1)
    X = data()[0]
    Y = torch.zeros(N, 1)
    Y[-1] = 5.0  # only in the last batch
    trainer = make_trainer(model, loss=loss)
    with pytest.raises(ValueError, match=r"expects targets between 0 and 1 .* holds 5, .* "
                       r"For class labels 0\.\.C-1 use loss='cross_entropy'"):  # fmt: skip
        trainer.fit(kiln.Data((X, Y), batch_size=4), epochs=1)
    assert trainer.state.step == 0
    loader = DataLoader(TensorDataset(X, Y * 2 - 1), batch_size=4)  # -1/1 labels
    with pytest.raises(ValueError, match=r"holds -1, .* for 0/1 labels written otherwise"):
        make_trainer(model, loss=loss).evaluate(loader)
