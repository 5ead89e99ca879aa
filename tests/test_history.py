"""Tests of `kiln.History` and `kiln.Evaluation`."""

from __future__ import annotations

import csv

import pytest
import torch

import kiln
from kiln import Evaluation, History


def make_history() -> History:
    history = History()
    history.append({"epoch": 1, "loss": 0.9, "val_loss": 1.0})
    history.append({"epoch": 2, "loss": 0.5})
    history.batch_losses.extend([1.0, 0.8, 0.6, 0.4])
    return history


def test_history_attribute_and_key_access_give_per_epoch_lists():
    """history.loss and history['loss'] are lists; missing epochs hold None."""
    history = make_history()
    assert len(history) == 2
    assert history.loss == history["loss"] == [0.9, 0.5]
    assert history.val_loss == [1.0, None]
    assert history.keys() == ["epoch", "loss", "val_loss"]


def test_history_unknown_key_lists_the_logged_ones():
    """Asking for a value never logged names the logged values."""
    history = make_history()
    with pytest.raises(KeyError, match="Logged values: epoch, loss, val_loss"):
        history["accuracy"]
    with pytest.raises(AttributeError, match="'accuracy' was never logged"):
        _ = history.accuracy


def test_history_to_dict_and_csv(tmp_path):
    """to_dict gives columns plus batch losses; to_csv writes one row per epoch."""
    history = make_history()
    assert history.to_dict()["batch_losses"] == [1.0, 0.8, 0.6, 0.4]
    path = tmp_path / "history.csv"
    history.to_csv(path)
    with path.open() as file:
        rows = list(csv.reader(file))
    assert rows == [["epoch", "loss", "val_loss"], ["1", "0.9", "1.0"], ["2", "0.5", ""]]


def test_history_state_dict_round_trips():
    """A history restored from its state_dict equals the original."""
    history = make_history()
    restored = History()
    restored.load_state_dict(history.state_dict())
    assert restored.to_dict() == history.to_dict()


def test_evaluation_is_a_read_only_mapping_with_attributes():
    """Evaluation gives attribute and key access, and names the evaluated values on a miss."""
    evaluation = Evaluation({"loss": 0.25, "accuracy": 0.875})
    assert evaluation.loss == evaluation["loss"] == 0.25
    assert dict(evaluation) == evaluation.to_dict() == {"loss": 0.25, "accuracy": 0.875}
    assert repr(evaluation) == "Evaluation(loss=0.25, accuracy=0.875)"
    with pytest.raises(AttributeError, match="Evaluated values: loss, accuracy"):
        _ = evaluation.f1


def test_evaluation_unpacks_into_its_values_loss_first():
    """`loss, acc = evaluation` (Keras, Poutyne) gives the values, not the names."""
    evaluation = Evaluation({"loss": 0.25, "acc": 0.875, "f1": 0.5})
    loss, acc, f1 = evaluation
    assert (loss, acc, f1) == (0.25, 0.875, 0.5)
    assert list(evaluation) == list(evaluation.values()) == [0.25, 0.875, 0.5]
    assert evaluation[0] == 0.25
    assert evaluation[-1] == 0.5
    assert list(evaluation.keys()) == ["loss", "acc", "f1"]
    assert dict(evaluation) == {**evaluation} == dict(evaluation.items())
    assert "acc" in evaluation
    assert 0.25 not in evaluation
    assert evaluation == {"loss": 0.25, "acc": 0.875, "f1": 0.5}
    with pytest.raises(IndexError, match=r"index 3 is out of range: it holds 3 values"):
        _ = evaluation[3]
    with pytest.raises(KeyError, match=r"'top5' was not evaluated\. Evaluated values: loss"):
        _ = evaluation["top5"]


def test_evaluate_unpacks_loss_then_metrics_in_the_order_given():
    """`trainer.evaluate` gives the loss, then the metrics in the order they were given."""
    X, Y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    trainer = kiln.Trainer(
        torch.nn.Linear(4, 3), loss="cross_entropy", metrics=["f1", "accuracy"], device="cpu",
        progress=False,
    )  # fmt: skip
    evaluation = trainer.evaluate((X, Y))
    loss, f1, accuracy = evaluation
    assert (loss, f1, accuracy) == (evaluation.loss, evaluation.f1, evaluation.accuracy)
    assert list(evaluation.keys()) == ["loss", "f1", "accuracy"]


def plotted_history() -> History:
    history = History()
    history.append({"epoch": 1, "loss": 0.9, "val_loss": 1.0, "accuracy": 0.5, "lr": 0.1})
    history.append({"epoch": 2, "loss": 0.5, "val_loss": 0.7, "accuracy": 0.8, "lr": 0.001})
    return history


def test_history_plot_draws_every_logged_value_in_its_own_panel():
    """One panel per value (validation with training), as PlotLogs draws each, in a grid."""
    pytest.importorskip("matplotlib")
    figure = plotted_history().plot()
    assert [axes.get_ylabel() for axes in figure.axes] == ["loss", "accuracy", "learning rate"]
    loss = figure.axes[0]
    assert loss.get_title() == "loss (best val_loss: 0.7000 at epoch 2)"
    assert [line.get_label() for line in loss.get_lines()] == ["loss", "val_loss", "best"]
    assert figure.axes[2].get_yscale() == "log"
    assert figure.axes[2].get_subplotspec().rowspan.start == 0  # three in a row by default
    assert plotted_history().plot(columns=2).axes[2].get_subplotspec().rowspan.start == 1


def test_history_plot_draws_the_given_keys():
    pytest.importorskip("matplotlib")
    assert [axes.get_ylabel() for axes in plotted_history().plot("accuracy").axes] == ["accuracy"]
    figure = plotted_history().plot(["lr", "loss"], columns=1)
    assert [axes.get_ylabel() for axes in figure.axes] == ["learning rate", "loss"]
    assert figure.axes[1].get_subplotspec().rowspan.start == 1  # one column: two rows


def test_history_plot_refuses_what_it_cannot_draw():
    pytest.importorskip("matplotlib")
    with pytest.raises(KeyError, match="'f1' was never logged"):
        plotted_history().plot("f1")
    with pytest.raises(ValueError, match="nothing to draw.*logged: nothing"):
        History().plot()
    with pytest.raises(ValueError, match="`columns` must be a whole number >= 1; received 0"):
        plotted_history().plot(columns=0)
