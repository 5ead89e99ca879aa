"""Tests of `kiln.History` and `kiln.Evaluation`."""

from __future__ import annotations

import csv

import pytest

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
