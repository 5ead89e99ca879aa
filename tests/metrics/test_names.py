"""Tests of `kiln.metrics.names`: metric names and `resolve_metrics`."""

from __future__ import annotations

import pytest
import torch

from kiln.metrics import (
    AUROC,
    F1,
    METRIC_NAMES,
    Accuracy,
    ConfusionMatrix,
    FunctionMetric,
    MeanAbsoluteError,
    MeanSquaredError,
    Precision,
    R2Score,
    Recall,
    RootMeanSquaredError,
    metric_spec,
    resolve_metrics,
)


class RunningMax:
    """A duck-typed metric: reset, update, compute, and no base class."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.value = float("-inf")

    def update(self, output, target) -> None:
        self.value = max(self.value, float(output.max()))

    def compute(self) -> float:
        return self.value


class NamedMax(RunningMax):
    """A duck-typed metric with its own `name`."""

    name = "biggest"


class LossNamedMax(RunningMax):
    """A duck-typed metric whose name clashes with the loss."""

    name = "loss"


def max_error(output, target):
    return (output - target).abs().max()


def test_resolve_metrics_none():
    """`None` means no metrics."""
    assert resolve_metrics(None) == []


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("accuracy", Accuracy),
        ("acc", Accuracy),
        ("mse", MeanSquaredError),
        ("mean_squared_error", MeanSquaredError),
        ("rmse", RootMeanSquaredError),
        ("mae", MeanAbsoluteError),
        ("mean_absolute_error", MeanAbsoluteError),
        ("Accuracy", Accuracy),
        (" MSE ", MeanSquaredError),
    ],
)
def test_resolve_metrics_names(name, cls):
    """Each name builds its metric, logged under the name as given."""
    (metric,) = resolve_metrics(name)
    assert type(metric) is cls
    assert metric.name == name


@pytest.mark.parametrize(
    ("name", "top_k"), [("top2", 2), ("top_5", 5), ("top3_accuracy", 3), ("top4_acc", 4)]
)
def test_resolve_metrics_top_k_names(name, top_k):
    """`topK` names build top-k accuracies."""
    (metric,) = resolve_metrics([name])
    assert isinstance(metric, Accuracy)
    assert metric.top_k == top_k
    assert metric.name == name


def test_resolve_metrics_top_zero():
    """`top0` is rejected as an invalid `top_k`."""
    with pytest.raises(ValueError, match=r"`top_k` must be a positive integer"):
        resolve_metrics(["top0"])


def test_resolve_metrics_list_keeps_order():
    """A list of names, objects and functions resolves in order."""
    metrics = resolve_metrics(["acc", MeanAbsoluteError(), max_error])
    assert [m.name for m in metrics] == ["acc", "mae", "max_error"]
    assert isinstance(metrics[2], FunctionMetric)


def test_resolve_metrics_dict_renames():
    """A dict `{name: spec}` logs each metric under its key."""
    metrics = resolve_metrics({"a1": "accuracy", "a5": "top5", "err": max_error, "r": "rmse"})
    assert [m.name for m in metrics] == ["a1", "a5", "err", "r"]
    assert metrics[1].top_k == 5
    assert isinstance(metrics[3], RootMeanSquaredError)


def test_resolve_metrics_metric_object_passes_through():
    """A `Metric` object is used as it is."""
    metric = Accuracy(top_k=2, name="my_acc")
    assert resolve_metrics(metric) == [metric]


def test_resolve_metrics_duck_typed_in_list():
    """An object with reset/update/compute is accepted and named after its class."""
    duck = RunningMax()
    (metric,) = resolve_metrics([duck])
    assert metric is duck
    assert duck.name == "running_max"


def test_resolve_metrics_duck_typed_name_attribute():
    """A duck-typed metric's own `name` attribute is kept."""
    (metric,) = resolve_metrics([NamedMax()])
    assert metric.name == "biggest"


def test_resolve_metrics_duck_typed_dict_name():
    """A dict key names a duck-typed metric."""
    (metric,) = resolve_metrics({"peak": RunningMax()})
    assert metric.name == "peak"


def test_resolve_metrics_duck_typed_alone():
    """A single duck-typed metric, not in a list, is accepted."""
    duck = RunningMax()
    assert resolve_metrics(duck) == [duck]


def test_resolve_metrics_single_function():
    """A single function becomes a `FunctionMetric`."""
    (metric,) = resolve_metrics(max_error)
    assert isinstance(metric, FunctionMetric)
    metric.update(torch.zeros(2), torch.tensor([1.0, -3.0]))
    assert float(metric.compute()) == 3.0


@pytest.mark.parametrize(
    "metrics",
    [
        ["accuracy", "accuracy"],
        ["mse", MeanSquaredError()],
        ["acc", FunctionMetric(max_error, name="acc")],
    ],
)
def test_resolve_metrics_duplicate_names(metrics):
    """Two metrics logged under one name raise ValueError."""
    with pytest.raises(ValueError, match=r"Two values would be logged under the same name"):
        resolve_metrics(metrics)


@pytest.mark.parametrize(
    "metrics", [{"loss": "mse"}, [FunctionMetric(max_error, name="loss")], [LossNamedMax()]]
)
def test_resolve_metrics_name_loss(metrics):
    """A metric named 'loss' clashes with the loss and raises ValueError."""
    with pytest.raises(ValueError, match=r"same name: loss\."):
        resolve_metrics(metrics)


def test_resolve_metrics_unknown_name_lists_known():
    """An unknown name raises ValueError listing the known names."""
    with pytest.raises(
        ValueError,
        match=r"Unknown metric 'kappa'\. Known names: accuracy, acc, .*f1, .*auroc, .*r2",
    ):
        resolve_metrics(["kappa"])


@pytest.mark.parametrize("bad", [[3], [None]])
def test_resolve_metrics_bad_kind(bad):
    """An entry of no accepted kind raises TypeError."""
    with pytest.raises(TypeError, match=r"Each metric must be a name, a Metric object"):
        resolve_metrics(bad)


@pytest.mark.parametrize("name", ["accuracy", "acc"])
def test_resolve_metrics_logits_threshold(name):
    """With `logits=True`, named accuracies threshold one-column outputs at 0."""
    (metric,) = resolve_metrics([name], logits=True)
    assert metric.threshold == 0.0
    (metric,) = resolve_metrics({"renamed": name}, logits=True)
    assert metric.threshold == 0.0
    (metric,) = resolve_metrics([name])
    assert metric.threshold == 0.5


def test_resolve_metrics_logits_leaves_objects():
    """`logits=True` does not change an Accuracy object the user built."""
    metric = Accuracy()
    resolve_metrics([metric], logits=True)
    assert metric.threshold == 0.5


def test_metric_names_table():
    """Every name builds a metric logged under the given name."""
    assert {"accuracy", "acc", "f1", "fscore_macro", "auroc", "r2", "confusion_matrix"} <= set(
        METRIC_NAMES
    )
    assert all(factory("x").name == "x" for factory in METRIC_NAMES.values())


@pytest.mark.parametrize(
    ("name", "cls", "options"),
    [
        ("f1", F1, {"average": "macro"}),
        ("F1_Score", F1, {"average": "macro"}),
        ("fscore_macro", F1, {"average": "macro"}),
        ("fscore_micro", F1, {"average": "micro"}),
        ("bin_f1", F1, {"average": "binary"}),
        ("binary_f1", F1, {"average": "binary"}),
        ("precision", Precision, {"average": "macro"}),
        ("precision_micro", Precision, {"average": "micro"}),
        ("bin_recall", Recall, {"average": "binary"}),
        ("recall-macro", Recall, {"average": "macro"}),
        ("auroc", AUROC, {}),
        ("roc_auc", AUROC, {}),
        ("confusion_matrix", ConfusionMatrix, {}),
        ("r2", R2Score, {}),
        ("r2_score", R2Score, {}),
        ("bin_acc", Accuracy, {"task": "binary"}),
        ("top1", Accuracy, {"top_k": 1}),
        ("top10", Accuracy, {"top_k": 10}),
        ("top100", Accuracy, {"top_k": 100}),
        ("top5acc", Accuracy, {"top_k": 5}),
    ],
)
def test_poutyne_and_other_names(name, cls, options):
    """Poutyne's names (and spellings without underscores) build the matching metric."""
    (metric,) = resolve_metrics([name])
    assert type(metric) is cls
    assert metric.name == name
    for key, value in options.items():
        assert getattr(metric, key) == value


def test_logits_sets_threshold_of_every_named_metric():
    """With logits=True, every named metric with a threshold reads logits at 0."""
    metrics = resolve_metrics(["f1", "precision", "confusion_matrix", "acc"], logits=True)
    assert [m.threshold for m in metrics] == [0.0] * 4


def test_multilabel_flag():
    """multilabel=True reads several columns as labels; one column stays binary."""
    f1, acc, top2, bin_acc = resolve_metrics(["f1", "acc", "top2", "bin_acc"], multilabel=True)
    assert (f1.task, acc.task, top2.task, bin_acc.task) == (
        "multilabel",
        "multilabel",
        None,
        "binary",
    )
    output, target = torch.tensor([[0.9, 0.8], [0.1, 0.7]]), torch.tensor([[1, 0], [0, 1]])
    acc.update(output, target)
    assert float(acc.compute()) == 0.75
    f1.update(torch.tensor([0.9, 0.2]), torch.tensor([1, 0]))
    assert float(f1.compute()) == 1.0


@pytest.mark.parametrize(
    ("metric", "spec"),
    [
        (Accuracy(), "accuracy"),
        (Accuracy(top_k=5, name="a5"), "top5"),
        (Accuracy(task="binary"), "binary_accuracy"),
        (F1(), "f1"),
        (F1(average="micro"), "fscore_micro"),
        (Precision(average="binary"), "bin_precision"),
        (AUROC(), "auroc"),
        (ConfusionMatrix(), "confusion_matrix"),
        (R2Score(), "r2"),
        (MeanSquaredError(), "mse"),
        (F1(num_classes=3), None),
        (Accuracy(threshold=0.3), None),
        (FunctionMetric(max_error), None),
        (RunningMax(), None),
    ],
)
def test_metric_spec(metric, spec):
    """metric_spec finds a name that builds the same metric, or None."""
    assert metric_spec(metric) == spec
    if spec is not None:
        (rebuilt,) = resolve_metrics([spec])
        assert type(rebuilt) is type(metric)


def test_metric_spec_follows_logits():
    """A metric with threshold 0 is named when the trainer's outputs are logits."""
    assert metric_spec(F1(threshold=0.0)) is None
    assert metric_spec(F1(threshold=0.0), logits=True) == "f1"
