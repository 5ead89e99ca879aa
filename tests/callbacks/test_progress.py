"""Tests of `kiln.callbacks.ProgressBar`."""

from __future__ import annotations

import io
import sys

import pytest
import torch
from torch import nn

import kiln
from kiln.callbacks.progress import ProgressBar, format_value, summary_line


def fit_with(progress: ProgressBar, epochs: int = 2) -> kiln.Trainer:
    X, Y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    trainer = kiln.Trainer(
        nn.Linear(3, 2),
        loss="cross_entropy",
        metrics=["accuracy"],
        callbacks=[progress, kiln.callbacks.EarlyStopping("val_loss", patience=1)],
        device="cpu",
    )
    trainer.fit((X, Y), val=(X, Y), epochs=epochs, batch_size=8)
    return trainer


def test_progress_prints_one_summary_line_per_epoch():
    """Without a bar, each epoch prints one line: counters, time and every value."""
    out = io.StringIO()
    fit_with(ProgressBar(bar=False, file=out))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Epoch 1/2  5 steps  ")
    assert "loss: " in lines[0]
    assert "val_accuracy: " in lines[0]
    assert "lr: 0.001" in lines[0]
    assert lines[1].startswith("Epoch 2/2  5 steps  ")


def test_the_summary_counts_optimizer_steps_as_the_text_log_does(tmp_path):
    """5 batches in groups of 2 make 3 optimizer steps: the console and the file say 3."""
    out = io.StringIO()
    X, Y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    callbacks = [ProgressBar(bar=False, file=out), kiln.callbacks.TextLog(tmp_path / "log.txt")]
    trainer = kiln.Trainer(
        nn.Linear(3, 2), loss="cross_entropy", accumulate=2, callbacks=callbacks, device="cpu"
    )
    trainer.fit((X, Y), epochs=2, batch_size=8)
    lines = out.getvalue().splitlines()
    assert [line[:18] for line in lines] == ["Epoch 1/2  3 steps", "Epoch 2/2  3 steps"]
    assert (tmp_path / "log.txt").read_text().splitlines() == lines


def test_progress_live_bar_goes_to_stderr_and_leaves_no_trace(capsys):
    """With bar=True a tqdm bar is drawn on stderr and cleared after each epoch."""
    out = io.StringIO()
    fit_with(ProgressBar(bar=True, refresh_seconds=0.0, file=out))
    err = capsys.readouterr().err
    assert "Epoch 1/2" in err
    assert "loss: " in err
    assert out.getvalue().count("\n") == 2


def test_progress_without_a_terminal_shows_no_bar(capsys):
    """Under pytest stderr is not a terminal, so the automatic choice is lines only."""
    out = io.StringIO()
    fit_with(ProgressBar(file=out))
    assert "batch" not in capsys.readouterr().err
    assert out.getvalue().startswith("Epoch 1/2")


def test_progress_says_why_the_run_stopped():
    """An early stop is reported after the last summary line."""
    out = io.StringIO()
    trainer = kiln.Trainer(
        nn.Linear(3, 2),
        loss="cross_entropy",
        callbacks=[ProgressBar(bar=False, file=out)],
        device="cpu",
    )

    class StopNow(kiln.Callback):
        def on_epoch_end(self, trainer: kiln.Trainer) -> None:
            trainer.request_stop("a test asked")

    trainer.callbacks = [*trainer.callbacks, StopNow()]
    trainer.fit((torch.randn(8, 3), torch.randint(0, 2, (8,))), epochs=3)
    assert out.getvalue().splitlines()[-1] == "Stopped after epoch 1: a test asked"


def test_trainer_adds_a_progress_bar_unless_told_not_to():
    """progress=True (the default) adds one ProgressBar; progress=False adds none."""
    with_bar = kiln.Trainer(nn.Linear(1, 1), loss="mse", device="cpu")
    without = kiln.Trainer(nn.Linear(1, 1), loss="mse", device="cpu", progress=False)
    assert sum(isinstance(cb, ProgressBar) for cb in with_bar.callbacks) == 1
    assert not any(isinstance(cb, ProgressBar) for cb in without.callbacks)


def test_format_value_and_summary_line():
    """Values print with 4 decimals, learning rates in short scientific form."""
    assert format_value("loss", 0.123456) == "loss: 0.1235"
    assert format_value("lr", 0.0001) == "lr: 0.0001"
    assert format_value("lr", 3e-05) == "lr: 3e-05"
    line = summary_line(3, 10, 38, 0.987, {"epoch": 3, "loss": 1.0, "time": 0.9})
    assert line == "Epoch 3/10  38 steps  0.99s  loss: 1.0000"


class _FakeKernel:
    """Stands in for ipykernel's shell class."""


_FakeKernel.__name__ = "ZMQInteractiveShell"


class _ColabShell(_FakeKernel):
    """Colab's shell derives from the Jupyter kernel's."""


@pytest.mark.parametrize("shell_class", [_FakeKernel, _ColabShell])
def test_a_notebook_kernel_is_recognised(monkeypatch, shell_class):
    import types

    from kiln.callbacks import progress

    fake = types.ModuleType("IPython")
    fake.get_ipython = shell_class  # type: ignore[attr-defined]  # returns a shell instance
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert progress.in_notebook()
    monkeypatch.setattr(fake, "get_ipython", lambda: None)
    assert not progress.in_notebook()


def test_a_notebook_without_ipywidgets_gets_the_text_bar(monkeypatch):
    """tqdm's widget would print an error without ipywidgets: the text bar is used instead."""
    import tqdm

    from kiln.callbacks import progress

    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # makes `import ipywidgets` fail
    assert progress._bar_class() is tqdm.tqdm
