"""Tests of `kiln.callbacks.PlotLogs` and `plot_history`: one figure file per logged quantity."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import kiln
from kiln.callbacks import PlotLogs
from kiln.callbacks.plot_logs import plot_history, plotted_quantities

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path, monkeypatch):
    """Relative paths without a trainer directory land in the test's own directory."""
    monkeypatch.chdir(tmp_path)


def make_trainer(
    callbacks: list[kiln.Callback], directory: Path | None, metrics: list[str] | None = None
) -> kiln.Trainer:
    return kiln.Trainer(
        nn.Linear(3, 2),
        loss="cross_entropy",
        metrics=metrics,
        callbacks=callbacks,
        device="cpu",
        progress=False,
        dir=directory,
    )


def fit(trainer: kiln.Trainer, epochs: int = 3) -> kiln.History:
    generator = torch.Generator().manual_seed(1)
    X, Y = torch.randn(36, 3, generator=generator), torch.randint(0, 2, (36,), generator=generator)
    return trainer.fit((X, Y), val=(X[:12], Y[:12]), epochs=epochs, batch_size=8)


def history_of(rows: list[dict[str, float]]) -> kiln.History:
    history = kiln.History()
    for row in rows:
        history.append(row)
    return history


def test_one_png_per_quantity_with_validation_on_the_same_figure(tmp_path):
    plots = PlotLogs()
    fit(make_trainer([plots], tmp_path, metrics=["accuracy"]))
    directory = tmp_path / "plots"
    names = sorted(path.name for path in directory.iterdir())
    assert names == ["accuracy.png", "loss.png", "lr.png", "time.png"]
    assert sorted(plots.written) == [directory / name for name in names]
    for name in names:
        content = (directory / name).read_bytes()
        assert content.startswith(PNG_MAGIC)
        assert len(content) > 5000


def test_several_formats_and_a_directory_relative_to_the_working_one(tmp_path):
    fit(make_trainer([PlotLogs("figures", formats=("png", ".SVG"))], None), epochs=2)
    names = sorted(path.name for path in (tmp_path / "figures").iterdir())
    assert names == ["loss.png", "loss.svg", "lr.png", "lr.svg", "time.png", "time.svg"]
    assert (tmp_path / "figures" / "loss.svg").read_text().startswith("<?xml")


def test_plot_history_draws_train_and_validation_against_the_epoch():
    history = history_of(
        [
            {"epoch": 1, "loss": 0.9, "val_loss": 1.0},
            {"epoch": 2, "loss": 0.5, "val_loss": 0.7},
            {"epoch": 3, "loss": 0.3, "val_loss": 0.8},
        ]
    )
    axes = plot_history(history, "loss").axes[0]
    train, validation, best = axes.get_lines()
    assert (train.get_label(), validation.get_label(), best.get_label()) == (
        "loss",
        "val_loss",
        "best",
    )
    assert list(train.get_xdata()) == [1, 2, 3]
    assert list(train.get_ydata()) == [0.9, 0.5, 0.3]
    assert list(validation.get_ydata()) == [1.0, 0.7, 0.8]
    assert (list(best.get_xdata()), list(best.get_ydata())) == ([2.0], [0.7])
    assert axes.get_title() == "loss (best val_loss: 0.7000 at epoch 2)"
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("epoch", "loss")
    assert [text.get_text() for text in axes.get_legend().get_texts()] == [
        "loss",
        "val_loss",
        "best",
    ]


def test_plot_history_skips_missing_values_and_uses_a_log_scale_for_a_wide_lr():
    history = history_of(
        [
            {"epoch": 1, "lr": 0.1, "accuracy": 0.5},
            {"epoch": 2, "lr": 0.01, "accuracy": 0.7, "val_accuracy": 0.6},
            {"epoch": 3, "lr": 0.0001, "accuracy": 0.8},
        ]
    )
    lr_axes = plot_history(history, "lr").axes[0]
    assert lr_axes.get_yscale() == "log"
    assert (lr_axes.get_title(), lr_axes.get_ylabel()) == ("lr", "learning rate")
    accuracy_axes = plot_history(history, "accuracy").axes[0]
    validation = accuracy_axes.get_lines()[1]
    assert (list(validation.get_xdata()), list(validation.get_ydata())) == ([2], [0.6])
    assert accuracy_axes.get_title() == "accuracy (best val_accuracy: 0.6000 at epoch 2)"


def test_plot_history_names_what_was_logged_when_the_key_was_not():
    history = history_of([{"epoch": 1, "loss": 0.5}])
    with pytest.raises(KeyError, match="'accuracy' was never logged.*Logged values: epoch, loss"):
        plot_history(history, "accuracy")


def test_plotted_quantities_pair_validation_values_with_training_ones():
    history = history_of([{"epoch": 1, "loss": 0.5, "val_loss": 0.6, "val_f1": 0.4, "lr": 0.1}])
    assert plotted_quantities(history) == ["loss", "val_f1", "lr"]


def test_plots_are_drawn_after_a_run_that_raised(tmp_path):
    class Crash(kiln.Callback):
        def on_epoch_end(self, trainer: kiln.Trainer) -> None:
            if trainer.state.epoch == 2:
                raise RuntimeError("boom")

    plots = PlotLogs("plots")
    with pytest.raises(RuntimeError, match="boom"):
        fit(make_trainer([plots, Crash()], tmp_path))
    assert (tmp_path / "plots" / "loss.png").read_bytes().startswith(PNG_MAGIC)
    assert not list((tmp_path / "plots").glob(".*"))  # no temporary file left behind


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"directory": None}, TypeError, "`directory` must be a non-empty.*received None"),
        ({"directory": ""}, TypeError, "`directory` must be a non-empty.*received ''"),
        ({"formats": ["png", 3]}, ValueError, r"received \('png', 3\)"),
        ({"formats": 5}, TypeError, "`formats` must be a format name.*received int"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(kwargs, error, message):
    with pytest.raises(error, match=message):
        PlotLogs(**kwargs)


def test_no_formats_leaves_the_plots_out_of_a_directory(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # not even imported
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    trainer = make_trainer([PlotLogs("plots", formats=())], tmp_path)
    fit(trainer, epochs=1)
    assert (tmp_path / "log.tsv").exists()
    assert not (tmp_path / "plots").exists()


def test_an_unknown_format_is_refused_before_training(tmp_path):
    trainer = make_trainer([PlotLogs(formats=("png", "bmpx"))], None)
    with pytest.raises(ValueError, match="cannot write the format.*bmpx.*Choose among: .*png"):
        fit(trainer, epochs=1)
    assert trainer.state.step == 0


def test_a_directory_that_is_a_file_is_refused_before_training(tmp_path):
    (tmp_path / "plots").write_text("not a directory")
    trainer = make_trainer([PlotLogs("plots")], None)
    with pytest.raises(ValueError, match="plots is a file, but the plots need a directory"):
        fit(trainer, epochs=1)
    assert trainer.state.step == 0


def test_without_matplotlib_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    trainer = make_trainer([PlotLogs()], None)
    with pytest.raises(ImportError, match=r"needs matplotlib.*`pip install matplotlib`"):
        fit(trainer, epochs=1)
    assert trainer.state.step == 0
