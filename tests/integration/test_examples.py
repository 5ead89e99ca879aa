import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import kiln

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.slow
def test_digits_cnn_demo_trains_stops_early_and_reaches_97_percent():
    """The README's demo trains, stops early and reaches at least 97% test accuracy."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "digits_cnn.py")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    accuracy = re.search(r"^test accuracy: (\d+\.\d\d)%$", out, re.MULTILINE)
    assert accuracy, out
    assert float(accuracy.group(1)) >= 97.0, out
    assert re.search(r"^Epoch \d+/\d+  ", out, re.MULTILINE), out
    assert re.search(r"^Stopped after epoch \d+: early stopping", out, re.MULTILINE), out
    best = re.search(r"^best counted epoch: (\d+) of \d+ \(val_loss (\d\.\d+),", out, re.MULTILINE)
    assert best, out
    losses = [float(v) for v in re.findall(r"^Epoch \d+/\d+ .* val_loss: (\d\.\d+)", out, re.M)]
    if min(losses) < float(best.group(2)):  # a lower epoch that did not count is named as such
        assert re.search(r"^\(epoch \d+ reached val_loss .*not counted", out, re.MULTILINE), out


class ScriptedValidation(kiln.Callback):
    """Writes scripted validation values into each epoch's logs."""

    def __init__(self, values: dict[str, list[float]]) -> None:
        self.values = values

    def on_validation_end(self, trainer: kiln.Trainer) -> None:
        for name, values in self.values.items():
            trainer.state.logs[name] = values[trainer.state.epoch - 1]


def test_digits_demo_summary_names_the_best_counted_epoch_and_a_lower_uncounted_one():
    """Epoch 4 comes lower than epoch 2 by less than min_delta: the summary says both, truly."""
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("digits_cnn", EXAMPLES / "digits_cnn.py")
    assert spec is not None
    assert spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    stopper = kiln.callbacks.EarlyStopping("val_loss", patience=5, min_delta=1e-3)
    scripted = ScriptedValidation(
        {"val_loss": [0.0200, 0.0093, 0.0097, 0.0084, 0.0110], "val_accuracy": [0.9] * 5}
    )
    X, Y = torch.randn(8, 2), torch.randn(8, 1)
    trainer = kiln.Trainer(
        nn.Linear(2, 1), loss="mse", callbacks=[scripted, stopper], device="cpu", progress=False
    )
    history = trainer.fit((X, Y), val=(X, Y), epochs=5)
    assert demo.summary(stopper, history) == (
        "best counted epoch: 2 of 5 (val_loss 0.0093, val_accuracy 0.9000); testing its weights\n"
        "(epoch 4 reached val_loss 0.0084: a gain under min_delta 0.001, not counted as an "
        "improvement)"
    )
    stopper.min_delta = 0.0  # without a threshold every gain counts: no second line
    trainer = kiln.Trainer(
        nn.Linear(2, 1), loss="mse", callbacks=[scripted, stopper], device="cpu", progress=False
    )
    history = trainer.fit((X, Y), val=(X, Y), epochs=5)
    assert demo.summary(stopper, history) == (
        "best counted epoch: 4 of 5 (val_loss 0.0084, val_accuracy 0.9000); testing its weights"
    )
