"""The trainer's public surface: three positional parameters, `LoopOptions`, `kiln.load`'s
keywords, deprecated spellings that still work, and attributes that change nothing when read."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import kiln
from kiln.callbacks import LRScheduler
from kiln.optim import LinearSchedule

X, Y = torch.randn(16, 3), torch.randn(16, 1)


def make(**options) -> kiln.Trainer:
    return kiln.Trainer(
        nn.Linear(3, 1), "mse", "sgd", lr=0.1, device="cpu", progress=False, **options
    )


def test_only_the_model_loss_and_optimizer_are_positional():
    parameters = inspect.signature(kiln.Trainer).parameters.values()
    positional = [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == ["model", "loss", "optimizer"]


def test_the_former_positional_arguments_still_work_with_a_warning():
    with pytest.warns(FutureWarning, match=r"Passing lr, metrics to Trainer\(...\) by position"):
        trainer = kiln.Trainer(nn.Linear(3, 1), "mse", "sgd", 0.5, ["mae"], device="cpu")
    assert trainer.optimizer.param_groups[0]["lr"] == 0.5
    assert [metric.name for metric in trainer.metrics] == ["mae"]


def test_an_argument_given_by_position_and_by_name_is_refused():
    with pytest.raises(TypeError, match=r"Trainer\(...\) received lr twice"):
        kiln.Trainer(nn.Linear(3, 1), "mse", "sgd", 0.5, lr=0.1)


def test_loop_options_as_one_object_equal_the_keywords():
    by_object = make(options=kiln.LoopOptions(accumulate=2, clip_norm=1.0))
    by_keywords = make(accumulate=2, clip_norm=1.0)
    assert by_object.options == by_keywords.options == kiln.LoopOptions(accumulate=2, clip_norm=1.0)


def test_loop_options_given_both_ways_are_refused():
    with pytest.raises(ValueError, match=r"received both `options` and the keywords accumulate=2"):
        make(options=kiln.LoopOptions(clip_norm=1.0), accumulate=2)
    with pytest.raises(TypeError, match=r"`options` must be a kiln.LoopOptions; received dict"):
        make(options={"accumulate": 2})


def test_load_takes_the_trainer_keywords_and_refuses_others(tmp_path):
    trainer = make(accumulate=2)
    trainer.fit((X, Y), epochs=1, batch_size=4)
    path = trainer.save(tmp_path / "run.kiln")
    options = kiln.LoopOptions(accumulate=4)
    loaded = kiln.load(path, model=nn.Linear(3, 1), device="cpu", progress=False, options=options)
    assert loaded.options.accumulate == 4
    again = kiln.load(path, model=nn.Linear(3, 1), device="cpu", progress=False)
    assert again.options.accumulate == 2
    with pytest.raises(TypeError, match=r"kiln.load got the keywords epochs, which Trainer"):
        kiln.load(path, epochs=3)


def test_reading_schedules_changes_nothing_and_setting_one_takes_effect_at_fit():
    trainer = make()
    before = list(trainer.callbacks)
    assert trainer.schedules is trainer.schedules
    assert list(trainer.callbacks) == before
    trainer.fit((X, Y), epochs=1, batch_size=4)
    assert not any(isinstance(cb, LRScheduler) for cb in trainer.callbacks)
    trainer.schedules.set(LinearSchedule(lr1=0.1, lr2=0.01, epochs=3))
    assert list(trainer.callbacks) == before
    history = trainer.fit((X, Y), epochs=4, batch_size=4)
    assert isinstance(trainer.callbacks.callbacks[0], LRScheduler)
    assert history.lr[-4:] == pytest.approx([0.1, 0.07, 0.04, 0.01])


def test_trial_puts_every_attribute_back():
    trainer = make()
    trainer.fit((X, Y), epochs=2, batch_size=4)
    state, history, callbacks = trainer.state, trainer.history, list(trainer.callbacks)
    seen = []

    def inside() -> None:
        with trainer.trial(callbacks=[]):
            trainer.fit((X, Y), epochs=1, batch_size=4)
            seen.append(trainer.state.epoch)
            raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        inside()
    assert seen == [1]
    assert trainer.state is state
    assert trainer.history is history
    assert list(trainer.callbacks) == callbacks
    assert trainer.state.epoch == 2


def test_every_public_method_is_the_trainers_own():
    names = ["fit", "evaluate", "predict", "save", "test", "export", "state_dict",
             "load_state_dict", "lr_find", "summary", "training_step", "predict_step"]  # fmt: skip
    assert kiln.Trainer.__bases__ == (object,)
    for name in names:
        assert name in vars(kiln.Trainer), name
