"""`kiln.options`: validation of `Trainer(...)` and `fit(...)` options, and the task presets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kiln
from kiln.options import (
    FitOptions,
    LoopOptions,
    apply_task_preset,
    resolve_precision,
    spent_budget,
)


def data():
    return torch.randn(8, 2), torch.randn(8, 1)


def make(**kwargs):
    return kiln.Trainer(nn.Linear(2, 1), loss="mse", device="cpu", progress=False, **kwargs)


@pytest.mark.parametrize(
    ("spelling", "name"),
    [("32", "32"), (32, "32"), ("bf16", "bf16"), ("bf16-mixed", "bf16"), (16, "fp16")],
)
def test_precision_spellings(spelling, name):
    assert resolve_precision(spelling) == name


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"precision": "int8"}, ValueError, r"`precision` must be '32'.*received 'int8'"),
        ({"precision": True}, ValueError, r"`precision` must be .*received True"),
        ({"accumulate": 0}, ValueError, r"`accumulate` must be a positive integer; received 0"),
        ({"accumulate": 2.0}, TypeError, r"`accumulate` must be a positive integer; received 2.0"),
        ({"clip_norm": 0}, ValueError, r"`clip_norm` must be a positive, finite number; rece"),
        ({"clip_value": "1"}, TypeError, r"`clip_value` must be a positive number or None"),
        (
            {"clip_norm": 1.0, "clip_value": 1.0},
            ValueError,
            r"pass `clip_norm` or `clip_value`, not both",
        ),
        ({"nonfinite": "ignore"}, ValueError, r"`nonfinite` must be 'raise'.*received 'ignore'"),
        ({"compile": 1}, TypeError, r"`compile` must be True or False; received 1"),
        ({"precision": "fp16"}, ValueError, r"precision='fp16' needs a CUDA device.*'bf16'"),
    ],
)
def test_trainer_rejects_bad_step_options(kwargs, error, message):
    with pytest.raises(error, match=message):
        make(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"epochs": 0}, ValueError, r"`epochs` must be a positive integer; received 0"),
        ({"val_every": 0}, ValueError, r"fit: `val_every` must be a positive integer; rec"),
        ({"repeat_train": 1.5}, TypeError, r"`repeat_train` must be a positive integer; rec"),
        ({"repeat_val": -1}, ValueError, r"`repeat_val` must be a positive integer; received"),
        ({"max_steps": 0}, ValueError, r"`max_steps` must be a positive integer; received 0"),
        ({"max_samples": "9"}, TypeError, r"`max_samples` must be a positive integer or None"),
        ({"pre_val": 1}, TypeError, r"`pre_val` must be True or False; received 1"),
        ({"epoch_hook": 3}, TypeError, r"`epoch_hook` must be a function `hook\(trainer\)`"),
    ],
)
@pytest.mark.filterwarnings("ignore::FutureWarning")  # repeat_train, epoch_hook: deprecated
def test_fit_rejects_bad_options_before_training(kwargs, error, message):
    trainer = make()
    before = [p.clone() for p in trainer.model.parameters()]
    with pytest.raises(error, match=message):
        trainer.fit(data(), **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))


def test_options_are_frozen_and_normalized():
    options = LoopOptions(precision=16)
    assert options.precision == "fp16"
    with pytest.raises(AttributeError):
        options.accumulate = 2  # type: ignore[misc]


def test_limits_are_relative_to_the_run_or_totals_on_resume():
    state = kiln.TrainState(epoch=2, step=20, samples=200)
    FitOptions(epochs=3, max_steps=5, max_samples=50).set_limits(state, resume=False)
    assert (state.max_epochs, state.max_steps, state.max_samples) == (5, 25, 250)
    FitOptions(epochs=3, max_steps=5).set_limits(state, resume=True)
    assert (state.max_epochs, state.max_steps, state.max_samples) == (3, 5, None)
    assert spent_budget(state) == "reached max_steps (20 steps)"
    assert (
        spent_budget(kiln.TrainState(samples=9, max_samples=8)) == "reached max_samples (9 samples)"
    )
    assert spent_budget(kiln.TrainState(step=1, max_steps=2)) is None


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"pre_val": True}, "`pre_val`"),
        ({"val_every": 2, "repeat_val": 3}, "`val_every`, `repeat_val`"),
    ],
)
@pytest.mark.filterwarnings("ignore::FutureWarning")  # repeat_val: deprecated
def test_validation_options_without_validation_data_are_refused(kwargs, names):
    with pytest.raises(
        ValueError, match=f"fit: {names} set how to validate, but `fit` received no"
    ):
        make().fit(data(), **kwargs)


def test_task_presets_fill_in_what_the_user_left_out():
    """Each preset chooses loss, metrics and monitor; what the user gives wins."""
    assert apply_task_preset("classification", None, None, None) == (
        "cross_entropy",
        ["accuracy"],
        "val_accuracy",
    )
    assert apply_task_preset("regr", None, None, None) == ("mse", ["mae"], "val_loss")
    assert apply_task_preset("regression", "l1", None, "val_mae") == ("l1", ["mae"], "val_mae")
    # The user's own metrics may not include the preset's monitored value: fall back to val_loss.
    assert apply_task_preset("classification", None, ["top2"], None) == (
        "cross_entropy",
        ["top2"],
        "val_loss",
    )
    assert apply_task_preset(None, "mse", None, None) == ("mse", None, "val_loss")


@pytest.mark.parametrize("task", ["clustering", "", 3])
def test_an_unknown_task_is_refused_with_the_presets(task):
    with pytest.raises(ValueError, match=r"`task` must be one of \['classification', 'regr"):
        kiln.Trainer(nn.Linear(2, 2), task=task, device="cpu")


def test_options_take_numpy_integers_and_floats_as_python_numbers():
    """Counts and limits computed with numpy are accepted, and kept as Python numbers."""
    import numpy as np

    loop = LoopOptions(accumulate=np.int64(2), clip_norm=np.float32(0.5))
    assert (loop.accumulate, loop.clip_norm) == (2, 0.5)
    assert type(loop.accumulate) is int
    assert type(loop.clip_norm) is float
    fit = FitOptions(epochs=np.int64(3), val_every=np.int32(2), max_steps=np.uint16(7))
    assert (fit.epochs, fit.val_every, fit.max_steps) == (3, 2, 7)
    assert all(type(value) is int for value in (fit.epochs, fit.val_every, fit.max_steps))
    with pytest.raises(TypeError, match=r"Trainer: `accumulate` must be a positive integer"):
        LoopOptions(accumulate=np.float64(2.0))
