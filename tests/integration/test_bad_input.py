"""Bad input gets a clear ValueError or TypeError before the first optimizer step.

Each test goes through the public API (`kiln.Trainer` and `fit`) and checks the error's type and
message, and, for errors raised by `fit`, that no optimizer step happened: the step counter is
still 0 and the weights are those before `fit`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import kiln
from kiln.callbacks import EarlyStopping
from kiln.data.in_memory import split_indices
from kiln.data.sources import HOLDOUT_SEED

N, FEATURES, CLASSES = 32, 4, 3


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


X = torch.randn(N, FEATURES, generator=_gen(0))
LABELS = torch.randint(0, CLASSES, (N,), generator=_gen(1))
Y_REG = torch.randn(N, 1, generator=_gen(2))


def make_trainer(model: Any = None, **kwargs: Any) -> kiln.Trainer:
    """A CPU trainer without progress bar; a Linear(4, 3) classifier by default."""
    kwargs.setdefault("device", "cpu")
    kwargs.setdefault("progress", False)
    return kiln.Trainer(nn.Linear(FEATURES, CLASSES) if model is None else model, **kwargs)


def snapshot(trainer: kiln.Trainer) -> dict[str, torch.Tensor]:
    """The model's weights before `fit`."""
    return {key: value.clone() for key, value in trainer.model.state_dict().items()}


def assert_no_step(trainer: kiln.Trainer, before: dict[str, torch.Tensor]) -> None:
    """No optimizer step happened: the counter is 0 and the weights are unchanged."""
    assert trainer.state.step == 0
    after = trainer.model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[key], before[key]) for key in before)


def fit_raises(
    trainer: kiln.Trainer,
    error: type[Exception] | tuple[type[Exception], ...],
    match: str,
    *args: Any,
    **kwargs: Any,
) -> pytest.ExceptionInfo[Exception]:
    """Call `fit`, expect `error` matching `match`, and check that no step happened."""
    before = snapshot(trainer)
    kwargs.setdefault("epochs", 1)
    with pytest.raises(error, match=match) as info:
        trainer.fit(*args, **kwargs)
    assert_no_step(trainer, before)
    return info


# --------------------------------------------------------------------------------------------
# Targets that do not fit the loss


def test_fit_rejects_target_that_would_broadcast():
    """Targets (N,) against outputs (N, 1) with mse raise ValueError suggesting `y.view(-1, 1)`."""
    trainer = make_trainer(nn.Linear(FEATURES, 1), loss="mse")
    fit_raises(trainer, ValueError, r"broadcast.*`y\.view\(-1, 1\)`", (X, Y_REG.view(-1)))


def test_fit_rejects_float_targets_for_cross_entropy():
    """Float targets with cross_entropy raise ValueError suggesting `y.long()`."""
    trainer = make_trainer(loss="cross_entropy")
    fit_raises(trainer, ValueError, r"float targets.*`y\.long\(\)`", (X, LABELS.float()))


def test_fit_rejects_integer_targets_for_mse():
    """Integer targets with mse raise ValueError suggesting `y.float()`."""
    trainer = make_trainer(nn.Linear(FEATURES, 1), loss="mse")
    fit_raises(trainer, ValueError, r"`y\.float\(\)`", (X, LABELS.view(-1, 1)))


def test_fit_rejects_label_out_of_range_in_first_batch():
    """Label 10 with 10 output classes raises ValueError naming the label and the range."""
    labels = LABELS.clone()
    labels[0] = 10
    trainer = make_trainer(nn.Linear(FEATURES, 10), loss="cross_entropy")
    fit_raises(trainer, ValueError, r"class label 10, .*10 classes.*0\.\.9", (X, labels))


@pytest.mark.parametrize("bad", [10, -1])
def test_fit_rejects_label_out_of_range_after_first_batch(bad):
    """A bad label outside the first batch of an in-memory `Data` is found before any step."""
    labels = LABELS.clone()
    labels[-1] = bad
    data = kiln.Data((X, labels), batch_size=8)  # not shuffled: the bad label is in batch 4
    trainer = make_trainer(nn.Linear(FEATURES, 10), loss="cross_entropy")
    fit_raises(trainer, ValueError, rf"class label {bad}, .*0\.\.9", data)


def test_fit_rejects_label_out_of_range_in_weighted_data():
    """The label check reads the last tensor of `(X, W, Y)` data."""
    labels = LABELS.clone()
    labels[-1] = CLASSES
    data = kiln.Data((X, torch.ones(N), labels), batch_size=8)
    trainer = make_trainer(loss="nll")
    fit_raises(trainer, ValueError, r"The loss nll got the class label 3", data)


def _held_out_indices(fraction: float) -> tuple[int, int]:
    """One sample index that `fit(val=fraction)` trains on, and one it holds out."""
    train, val = split_indices(N, (1 - fraction, fraction), seed=HOLDOUT_SEED)
    return int(train[-1]), int(val[-1])


def test_fit_rejects_label_out_of_range_in_training_part():
    """With `val=` a fraction, a bad label in the training part is found before any step."""
    labels = LABELS.clone()
    labels[_held_out_indices(0.25)[0]] = CLASSES
    trainer = make_trainer(loss="cross_entropy")
    fit_raises(trainer, ValueError, r"class label 3", (X, labels), val=0.25, batch_size=4)


def test_fit_rejects_label_out_of_range_in_held_out_part():
    """With `val=` a fraction, a bad label in the held-out part is found before any step."""
    labels = LABELS.clone()
    labels[_held_out_indices(0.25)[1]] = CLASSES
    trainer = make_trainer(loss="cross_entropy")
    fit_raises(trainer, ValueError, r"class label 3", (X, labels), val=0.25, batch_size=4)


def test_fit_rejects_label_out_of_range_in_val_data():
    """A bad label in validation `Data` is found before the first optimizer step."""
    labels = LABELS.clone()
    labels[-1] = CLASSES
    trainer = make_trainer(loss="cross_entropy")
    val = kiln.Data((X, labels), batch_size=8)
    fit_raises(trainer, ValueError, r"class label 3", (X, LABELS), val=val)


def test_fit_rejects_int32_labels():
    """int32 labels with cross_entropy raise ValueError suggesting `y.long()`."""
    trainer = make_trainer(loss="cross_entropy")
    fit_raises(trainer, ValueError, r"`y\.long\(\)`", (X, LABELS.int()))


# --------------------------------------------------------------------------------------------
# Data that cannot be batched


@pytest.mark.parametrize(
    "tensors",
    [(torch.empty(0, FEATURES), torch.empty(0, dtype=torch.long)), torch.empty(0, FEATURES)],
    ids=["pair", "single"],
)
def test_data_rejects_zero_rows(tensors):
    """A `kiln.Data` of zero rows raises ValueError when built."""
    with pytest.raises(ValueError, match=r"`Data` received no samples"):
        kiln.Data(tensors)


def test_fit_rejects_tuple_of_empty_tensors():
    """A tuple of zero-length tensors given to `fit` raises ValueError."""
    trainer = make_trainer(loss="cross_entropy")
    empty = (torch.empty(0, FEATURES), torch.empty(0, dtype=torch.long))
    fit_raises(trainer, ValueError, r"received no samples", empty)


def test_fit_rejects_empty_tuple():
    """An empty tuple given to `fit` raises an error naming the `train` argument."""
    trainer = make_trainer(loss="cross_entropy")
    fit_raises(trainer, (TypeError, ValueError), r"`train` ", ())


def test_fit_rejects_empty_tuple_saying_empty():
    """The error for an empty tuple says that it is empty."""
    trainer = make_trainer(loss="cross_entropy")
    fit_raises(trainer, (TypeError, ValueError), r"empty", ())


def test_fit_rejects_empty_dataset():
    """An empty torch Dataset raises ValueError."""
    trainer = make_trainer(loss="cross_entropy")
    dataset = TensorDataset(torch.empty(0, FEATURES), torch.empty(0, dtype=torch.long))
    fit_raises(trainer, ValueError, r"`train` is an empty dataset", dataset)


def test_fit_rejects_loader_over_empty_dataset():
    """A DataLoader over an empty Dataset raises ValueError."""
    trainer = make_trainer(loss="cross_entropy")
    dataset = TensorDataset(torch.empty(0, FEATURES), torch.empty(0, dtype=torch.long))
    fit_raises(trainer, ValueError, r"DataLoader over an empty dataset", DataLoader(dataset))


def test_fit_rejects_unequal_lengths():
    """Inputs and targets of different lengths raise ValueError listing the lengths."""
    trainer = make_trainer(loss="cross_entropy")
    fit_raises(trainer, ValueError, r"same length.*\[32, 31\]", (X, LABELS[:-1]))


@pytest.mark.parametrize("batch_size", [0, -1, 2.5])
def test_fit_rejects_bad_batch_size(batch_size):
    """A batch size that is not a positive integer raises ValueError."""
    trainer = make_trainer(loss="cross_entropy")
    match = r"`batch_size` must be a positive integer"
    fit_raises(trainer, ValueError, match, (X, LABELS), batch_size=batch_size)


def test_fit_rejects_batch_size_with_data():
    """`batch_size` with a `kiln.Data` that has its own raises ValueError."""
    trainer = make_trainer(loss="cross_entropy")
    data = kiln.Data((X, LABELS), batch_size=8)
    fit_raises(trainer, ValueError, r"carries its own batch size", data, batch_size=4)


# --------------------------------------------------------------------------------------------
# Inputs that do not fit the model


def test_fit_rejects_inputs_wider_than_first_layer():
    """5 features into `nn.Linear(4, 3)` raise ValueError naming the layer and `(N, 4)`."""
    trainer = make_trainer(loss="cross_entropy")
    info = fit_raises(
        trainer,
        ValueError,
        r"Linear\(in_features=4, out_features=3, bias=True\), expects inputs of shape \(N, 4\)",
        (torch.randn(N, 5, generator=_gen()), LABELS),
    )
    assert "(32, 5)" in str(info.value)


def test_fit_rejects_wrong_channels_for_conv_net():
    """One channel into a 3-channel conv net raises ValueError naming the Conv2d."""
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, CLASSES)
    )
    trainer = make_trainer(model, loss="cross_entropy")
    images = torch.randn(8, 1, 6, 6, generator=_gen())
    fit_raises(
        trainer,
        ValueError,
        r"Conv2d\(3, 4, .*expects inputs of shape \(N, 3, H, W\)",
        (images, LABELS[:8]),
    )


def test_fit_rejects_float64_inputs():
    """float64 tensors into a float32 model raise ValueError suggesting `x.float()`."""
    trainer = make_trainer(loss="cross_entropy")
    fit_raises(trainer, ValueError, r"float64.*`x\.float\(\)`", (X.double(), LABELS))


def test_fit_accepts_numpy_float64():
    """numpy float64 inputs are converted to float32 and train."""
    trainer = make_trainer(loss="cross_entropy")
    history = trainer.fit((X.double().numpy(), LABELS.numpy()), epochs=1, batch_size=16)
    assert len(history) == 1
    assert trainer.state.step == 2


# --------------------------------------------------------------------------------------------
# Names


def test_trainer_rejects_unknown_loss():
    """An unknown loss name raises ValueError listing the known names."""
    with pytest.raises(ValueError, match=r"Unknown loss 'crossentropyy'\. Known names: .*mse"):
        make_trainer(loss="crossentropyy")


def test_trainer_rejects_unknown_optimizer():
    """An unknown optimizer name raises ValueError listing the known names."""
    with pytest.raises(ValueError, match=r"Unknown optimizer 'adamm'\. Known names: sgd, adam"):
        make_trainer(loss="cross_entropy", optimizer="adamm")


def test_trainer_rejects_unknown_metric():
    """An unknown metric name raises ValueError listing the known names."""
    with pytest.raises(ValueError, match=r"Unknown metric 'accuarcy'\. Known names: accuracy"):
        make_trainer(loss="cross_entropy", metrics=["accuarcy"])


# --------------------------------------------------------------------------------------------
# Monitors


def test_fit_rejects_monitor_never_logged():
    """`EarlyStopping(monitor='val_acc')` with `val_accuracy` logged lists the logged values."""
    trainer = make_trainer(
        loss="cross_entropy", metrics=["accuracy"], callbacks=[EarlyStopping("val_acc")]
    )
    fit_raises(
        trainer,
        ValueError,
        r"monitor='val_acc'\) names a value that is never logged\. Logged values: .*val_accuracy",
        (X, LABELS),
        val=0.25,
    )


def test_fit_rejects_validation_monitor_without_validation():
    """`EarlyStopping(monitor='val_loss')` without validation data says to pass `val=`."""
    trainer = make_trainer(loss="cross_entropy", callbacks=[EarlyStopping("val_loss")])
    fit_raises(trainer, ValueError, r"no validation data: pass `val=`", (X, LABELS))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "up"}, r"`mode` must be 'auto', 'min' or 'max'; received 'up'"),
        ({"monitor": "weird"}, r"cannot tell whether that value should be minimized"),
        ({"patience": 0}, r"`patience` must be a positive integer; received 0"),
        ({"min_delta": -0.1}, r"`min_delta` must be zero or positive"),
    ],
)
def test_early_stopping_rejects_bad_arguments(kwargs, match):
    """Bad EarlyStopping arguments raise ValueError at construction."""
    with pytest.raises(ValueError, match=match):
        EarlyStopping(**kwargs)


# --------------------------------------------------------------------------------------------
# fit's arguments


@pytest.mark.parametrize("epochs", [0, -1, 1.5, True])
def test_fit_rejects_bad_epochs(epochs):
    """`epochs` that is not a positive integer raises ValueError."""
    trainer = make_trainer(loss="cross_entropy")
    match = rf"`epochs` must be a positive integer; received {epochs!r}"
    fit_raises(trainer, ValueError, match, (X, LABELS), epochs=epochs)


@pytest.mark.parametrize("val", [1.5, 0.0, -0.2, 1.0])
def test_fit_rejects_bad_val_fraction(val):
    """`val` as a fraction outside (0, 1) raises ValueError."""
    trainer = make_trainer(loss="cross_entropy")
    fit_raises(trainer, ValueError, r"must be between 0 and 1", (X, LABELS), val=val)


def test_fit_rejects_val_fraction_of_loader():
    """`val` as a fraction of a DataLoader raises TypeError suggesting `kiln.split`."""
    trainer = make_trainer(loss="cross_entropy")
    train = DataLoader(TensorDataset(X, LABELS), batch_size=8)
    fit_raises(trainer, TypeError, r"kiln\.split", train, val=0.2)


def test_fit_without_optimizer():
    """A trainer built with `optimizer=None` cannot fit."""
    trainer = make_trainer(loss="cross_entropy", optimizer=None)
    fit_raises(trainer, ValueError, r"no optimizer, so it cannot fit", (X, LABELS))


# --------------------------------------------------------------------------------------------
# The loss and the training step


class OwnStep(nn.Module):
    """A regression model whose `training_step` returns what its `mode` says."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.layer = nn.Linear(FEATURES, 1)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        errors = (self(x) - y) ** 2
        if self.mode == "none":
            return None
        if self.mode == "vector":
            return {"loss": errors.view(-1)}
        if self.mode == "no_grad":
            with torch.no_grad():
                return ((self(x) - y) ** 2).mean()
        return errors.mean()  # "loss only"


def test_fit_rejects_no_loss_and_no_training_step():
    """No loss and no `training_step` raise ValueError."""
    trainer = make_trainer(nn.Linear(FEATURES, 1))
    fit_raises(trainer, ValueError, r"no loss and the model defines no `training_step`", (X, Y_REG))


def test_fit_rejects_training_step_returning_none():
    """A `training_step` returning None raises TypeError."""
    trainer = make_trainer(OwnStep("none"))
    fit_raises(trainer, TypeError, r"must return the loss .*; it returned NoneType", (X, Y_REG))


def test_fit_rejects_non_scalar_loss():
    """A `training_step` returning a non-scalar loss raises ValueError mentioning `.mean()`."""
    trainer = make_trainer(OwnStep("vector"))
    match = r"a single number .* shape \(32,\)\. Reduce it, e\.g\. `loss\.mean\(\)`"
    fit_raises(trainer, ValueError, match, (X, Y_REG))


def test_fit_rejects_loss_without_grad():
    """A loss computed under `torch.no_grad()` raises ValueError."""
    trainer = make_trainer(OwnStep("no_grad"))
    fit_raises(trainer, ValueError, r"does not depend on any trainable parameter", (X, Y_REG))


def test_fit_rejects_metrics_without_output_and_target():
    """Metrics with a `training_step` that returns only the loss raise ValueError."""
    trainer = make_trainer(OwnStep("loss only"), metrics=["mse"])
    fit_raises(trainer, ValueError, r"metrics, but .* gives them no output and target", (X, Y_REG))


def test_fit_error_names_training_step():
    """Errors about the step's result name the method `training_step`."""
    trainer = make_trainer(OwnStep("none"))
    fit_raises(trainer, TypeError, r"`training_step` must return the loss", (X, Y_REG))


def test_fit_rejects_loss_of_frozen_model():
    """A loss over a model whose parameters are all frozen raises ValueError."""
    model = nn.Linear(FEATURES, 1)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    model.requires_grad_(False)
    trainer = make_trainer(model, loss="mse", optimizer=optimizer)
    fit_raises(trainer, ValueError, r"all parameters frozen", (X, Y_REG))


# --------------------------------------------------------------------------------------------
# Trainer's arguments


@pytest.mark.parametrize("model", [lambda x: x, "mlp", None])
def test_trainer_rejects_non_module(model):
    """A model that is not an `nn.Module` raises TypeError."""
    with pytest.raises(TypeError, match=r"`model` must be a torch\.nn\.Module"):
        kiln.Trainer(model, loss="mse", device="cpu", progress=False)


class NotACallback:
    """An object without any `on_<event>` method."""

    def on_something_else(self, trainer: Any) -> None:
        """Not an event of kiln."""


@pytest.mark.parametrize("callback", [object(), NotACallback()])
def test_trainer_rejects_non_callback(callback):
    """A callback object with no `on_<event>` method raises TypeError."""
    with pytest.raises(TypeError, match=r"is not a callback: it has no `on_<event>\(trainer\)`"):
        make_trainer(loss="mse", callbacks=[callback])


def test_trainer_rejects_model_without_trainable_parameters():
    """A model without trainable parameters and a named optimizer raises ValueError."""
    with pytest.raises(ValueError, match=r"no trainable parameters"):
        make_trainer(nn.Linear(FEATURES, 1).requires_grad_(False), loss="mse")


def test_trainer_rejects_negative_lr():
    """A negative learning rate raises ValueError (0, which torch accepts, does not)."""
    with pytest.raises(ValueError, match=r"`lr` must be a number of at least 0 .*; received -1"):
        make_trainer(loss="mse", lr=-1)


def test_fit_trains_on_good_data():
    """The same trainer setup trains on good data, so the errors above come from the input."""
    trainer = make_trainer(loss="cross_entropy", metrics=["accuracy"])
    history = trainer.fit((X, LABELS), val=0.25, epochs=1, batch_size=8)
    assert trainer.state.step == 3
    assert len(history["val_accuracy"]) == 1
    assert not np.isnan(history["loss"][-1])
