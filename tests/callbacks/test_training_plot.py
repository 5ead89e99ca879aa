"""Tests of `TrainingPlot` and `kiln.tools.plotting.training_figure`."""

from __future__ import annotations

import math
import sys
import types
from typing import Any

import pytest

import kiln
from kiln.callbacks.training_plot import TrainingPlot
from kiln.tools.plotting import moving_average, score_key, training_figure

from .runs import fit, make_trainer

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def history_of(rows: list[dict[str, float]]) -> kiln.History:
    history = kiln.History()
    for row in rows:
        history.append(row)
    return history


def qunet_history(epochs: int = 4) -> kiln.History:
    """score/loss with validation, a learning rate from 1e-3 to 1e-2."""
    return history_of(
        [
            {
                "epoch": e,
                "loss": 1.0 / e,
                "score": 0.5 + 0.1 * e,
                "lr": 1e-3 * e if e < 4 else 1e-2,
                "val_loss": [0.9, 0.6, 0.7, 0.5][e - 1],
                "val_score": [0.6, 0.5, 0.8, 0.7][e - 1],
            }
            for e in range(1, epochs + 1)
        ]
    )


def lines(axes: Any) -> dict[str, Any]:
    return {line.get_label(): line for line in axes.get_lines()}


def test_figure_has_a_score_and_a_loss_panel_each_with_a_log_lr_twin():
    figure = training_figure(qunet_history(), marks=[2], title="a run")
    score, loss, score_lr, loss_lr = figure.axes  # the panels, then their twins
    assert score.get_title() == "score (max: 0.8000 [3], val: 0.7000, train: 0.9000)"
    assert loss.get_title() == "loss (min: 0.5000 [4], val: 0.5000, train: 0.2500)"
    assert figure.get_suptitle() == "a run"
    assert {"loss", "val_loss", "_new best", "_schedule end"} <= set(lines(loss))
    assert list(lines(loss)["val_loss"].get_xdata()) == [1.0, 2.0, 3.0, 4.0]
    assert (lines(loss)["loss"].get_color(), lines(loss)["val_loss"].get_color()) == (
        "darkblue",
        "green",
    )
    dots = lines(loss)["_new best"]  # each new best validation loss
    assert (list(dots.get_xdata()), list(dots.get_ydata())) == ([1.0, 2.0, 4.0], [0.9, 0.6, 0.5])
    assert list(lines(score)["_new best"].get_xdata()) == [1.0, 3.0]
    assert list(lines(loss)["_schedule end"].get_xdata()) == [2.0, 2.0]
    for twin in (score_lr, loss_lr):
        assert twin.get_yscale() == "log"
        assert twin.get_ylim() == pytest.approx((1e-3, 1e-2))
        assert list(lines(twin)["lr"].get_ydata()) == pytest.approx([1e-3, 2e-3, 3e-3, 1e-2])
    legend = [text.get_text() for text in loss_lr.get_legend().get_texts()]
    assert legend == ["loss", "val_loss", "lr"]
    assert loss.get_xlim() == (0.0, 4.0)


def test_the_score_is_the_first_metric_and_panels_are_drawn_only_for_what_exists():
    history = history_of([{"epoch": 1, "loss": 0.5, "accuracy": 0.7, "lr": 0.1, "time": 1.0}])
    assert score_key(history) == "accuracy"
    figure = training_figure(history)
    assert [axes.get_ylabel() for axes in figure.axes[:2]] == ["accuracy", "loss"]
    assert figure.axes[0].get_title() == "accuracy (max: 0.7000 [1], train: 0.7000)"
    only_loss = history_of([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.4}])
    assert score_key(only_loss) is None
    assert [axes.get_ylabel() for axes in training_figure(only_loss).axes] == ["loss"]
    assert len(training_figure(history, score="").axes) == 2  # the loss panel and its twin


def test_a_constant_lr_sits_between_two_decades():
    figure = training_figure(history_of([{"epoch": 1, "loss": 0.5, "lr": 1e-3}]))
    assert figure.axes[1].get_ylim() == pytest.approx((1e-4, 1e-2))


def test_curves_longer_than_smooth_are_drawn_faint_under_their_moving_average():
    history = history_of([{"epoch": e, "loss": 1 + (-1) ** e} for e in range(1, 31)])
    drawn = lines(training_figure(history, smooth=20).axes[0])
    assert drawn["_loss raw"].get_alpha() == 0.5
    assert list(drawn["loss"].get_ydata())[5:25] == pytest.approx([1.0] * 20, abs=0.15)
    assert "_loss raw" not in lines(training_figure(history, smooth=30).axes[0])
    assert moving_average([1.0, 2.0, 3.0, 4.0, 8.0], 3) == [1.5, 2.0, 3.0, 5.0, 6.0]


def test_missing_validation_epochs_and_nan_leave_the_other_points():
    history = history_of(
        [
            {"epoch": 1, "loss": 0.9, "val_loss": 1.0},
            {"epoch": 2, "loss": math.nan},
            {"epoch": 3, "loss": 0.3, "val_loss": 0.8},
        ]
    )
    drawn = lines(training_figure(history).axes[0])
    assert list(drawn["val_loss"].get_xdata()) == [1.0, 3.0]
    assert list(drawn["_new best"].get_ydata()) == [1.0, 0.8]


def test_an_empty_history_has_nothing_to_draw():
    with pytest.raises(ValueError, match="neither a loss nor a score.*logged: nothing"):
        training_figure(kiln.History())


def test_draws_every_period_and_after_the_last_epoch_and_writes_a_png(tmp_path):
    plot = TrainingPlot(period=2, directory=tmp_path, show=False)
    fit(make_trainer([plot], None), epochs=3)
    assert plot.epochs_drawn == [2, 3]
    assert plot.written == [tmp_path / "training.png"]
    content = (tmp_path / "training.png").read_bytes()
    assert content.startswith(PNG_MAGIC)
    assert len(content) > 10_000
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    assert plot.figure is not None
    assert list(lines(plot.figure.axes[1])["val_loss"].get_xdata()) == [1, 2, 3]
    assert plot.figure.get_suptitle().startswith("epoch 3, samples=108, steps=15, lr=1.0e-03")


def test_without_a_directory_nothing_is_written(tmp_path):
    plot = TrainingPlot(show=False)
    fit(make_trainer([plot], None), epochs=1)
    assert plot.epochs_drawn == [1]
    assert plot.written == []
    assert list(tmp_path.iterdir()) == []


def test_the_run_directory_holds_the_figure_and_a_resumed_run_draws_the_whole_history(tmp_path):
    class Stop(kiln.Callback):
        def __init__(self, epoch: int | None) -> None:
            self.epoch = epoch

        def on_epoch_end(self, trainer: kiln.Trainer) -> None:
            if trainer.state.epoch == self.epoch:
                raise KeyboardInterrupt  # a kill after the checkpoint of epoch 1

    first = TrainingPlot(period=10, file="curves.png", show=False)
    with pytest.raises(KeyboardInterrupt):
        fit(make_trainer([first, Stop(2)], tmp_path), epochs=4)
    assert first.epochs_drawn == [2]  # the run that failed is still drawn, at fit end
    assert (tmp_path / "curves.png").read_bytes().startswith(PNG_MAGIC)
    plot = TrainingPlot(period=10, file="curves.png", show=False)
    history = fit(make_trainer([plot, Stop(None)], tmp_path), epochs=4, resume=True)
    assert plot.epochs_drawn == [4]
    loss = lines(plot.figure.axes[1])
    assert list(loss["loss"].get_xdata()) == [1, 2, 3, 4]
    assert list(loss["loss"].get_ydata()) == history.loss


def test_other_callbacks_draw_after_the_figure_in_on_plot():
    seen: list[tuple[int, bool]] = []
    plot = TrainingPlot(period=2, show=False)

    class Own(kiln.Callback):
        def on_plot(self, trainer: kiln.Trainer) -> None:
            seen.append((trainer.state.epoch, plot.figure is not None))

    fit(make_trainer([plot, Own()], None), epochs=4)
    assert seen == [(2, True), (4, True)]


def test_an_error_in_on_plot_names_the_callback():
    class Broken(kiln.Callback):
        def on_plot(self, trainer: kiln.Trainer) -> None:
            raise RuntimeError("cannot draw")

    with pytest.raises(RuntimeError, match="cannot draw") as raised:
        fit(make_trainer([TrainingPlot(show=False), Broken()], None), epochs=1)
    if sys.version_info >= (3, 11):
        assert "(raised in Broken.on_plot)" in raised.value.__notes__


def test_schedule_ends_and_marks_draw_vertical_lines():
    class Schedule(kiln.Callback):
        schedule_ends = [1]

        def on_epoch_end(self, trainer: kiln.Trainer) -> None:
            pass

    plot = TrainingPlot(show=False, marks=[2.5])
    fit(make_trainer([Schedule(), plot], None), epochs=2)
    marks = [
        line for line in plot.figure.axes[1].get_lines() if line.get_label() == "_schedule end"
    ]
    assert [line.get_xdata()[0] for line in marks] == [2.5, 1.0]


def test_in_a_notebook_the_figure_replaces_the_previous_one(monkeypatch):
    shown: list[tuple[str, bytes]] = []

    class Handle:
        def update(self, image: Any) -> None:
            shown.append(("update", image.data))

    def display(image: Any, display_id: bool = False) -> Handle:
        shown.append(("display", image.data))
        return Handle()

    ipython = types.ModuleType("IPython")
    kernel_shell = type("ZMQInteractiveShell", (), {})  # what a Jupyter kernel runs
    ipython.get_ipython = kernel_shell  # type: ignore[attr-defined]
    ipython_display = types.ModuleType("IPython.display")
    ipython_display.display = display  # type: ignore[attr-defined]
    ipython_display.Image = lambda data, format: types.SimpleNamespace(data=data)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", ipython_display)
    fit(make_trainer([TrainingPlot()], None), epochs=2)
    assert [kind for kind, _ in shown] == ["display", "update"]
    assert all(png.startswith(PNG_MAGIC) for _, png in shown)
    shown.clear()
    fit(make_trainer([TrainingPlot(show=False)], None), epochs=1)
    assert shown == []


def test_show_true_without_ipython_fails_before_training(monkeypatch):
    monkeypatch.setitem(sys.modules, "IPython.display", None)
    trainer = make_trainer([TrainingPlot(show=True)], None)
    with pytest.raises(ImportError, match=r"show=True\) shows the figure with IPython"):
        fit(trainer, epochs=1)
    assert trainer.state.epoch == 0


def test_torchfusion_per_metric_pngs(tmp_path):
    """TorchFusion's names, with its 0-based epoch index: epoch 2 is `_1`."""
    plot = TrainingPlot(period=2, directory=tmp_path, file=None, show=False, per_metric=True)
    fit(make_trainer([plot], None), epochs=2)
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["epoch_1_loss.png", "test_accuracy_epoch_1.png", "train_accuracy_epoch_1.png"]
    assert all(path.read_bytes().startswith(PNG_MAGIC) for path in tmp_path.iterdir())


def test_a_missing_matplotlib_fails_before_training(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    trainer = make_trainer([TrainingPlot(show=False)], None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        fit(trainer, epochs=1)
    assert trainer.state.epoch == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"period": 0}, ValueError, "`period` must be at least 1 epoch; received 0"),
        ({"period": 2.0}, TypeError, "`period` must be a whole number.*received float"),
        ({"file": ""}, TypeError, "`file` must be a non-empty path or None; received ''"),
        ({"directory": 3}, TypeError, "`directory` must be a non-empty path or None"),
        ({"show": "yes"}, TypeError, "`show` must be None, True or False; received 'yes'"),
        ({"mode": "up"}, ValueError, "`mode` must be 'auto', 'min' or 'max'; received 'up'"),
        ({"smooth": -1}, ValueError, "`smooth` must be a whole number of points >= 0"),
        ({"marks": ["end"]}, TypeError, r"`marks` must be epoch numbers; received \['end'\]"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        TrainingPlot(**kwargs)
