"""Tests of `kiln.metrics.external`: torchmetrics metrics used as they are."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch

from kiln.metrics import F1, TorchMetric, resolve_metrics
from kiln.metrics.external import is_torchmetrics, snake_case

torchmetrics = pytest.importorskip("torchmetrics")

GEN = torch.Generator().manual_seed(4)
LOGITS = torch.randn(40, 3, generator=GEN)
LABELS = torch.randint(0, 3, (40,), generator=GEN)


def test_torchmetrics_metric_is_wrapped_and_named():
    """A torchmetrics metric in `metrics=` becomes a TorchMetric named after its class."""
    original = torchmetrics.classification.MulticlassF1Score(num_classes=3, average="macro")
    (metric,) = resolve_metrics([original])
    assert isinstance(metric, TorchMetric)
    assert metric.metric is original
    assert metric.name == "multiclass_f1_score"
    assert metric.higher_is_better is True
    (named,) = resolve_metrics({"tm_f1": original})
    assert named.name == "tm_f1"


def test_torchmetrics_value_equals_kiln_f1():
    """Updated over batches, it gives the value it gives alone, and kiln's F1 agrees."""
    (metric,) = resolve_metrics([torchmetrics.classification.MulticlassF1Score(num_classes=3)])
    ours = F1()
    metric.reset()
    for start, stop in [(0, 9), (9, 40)]:
        metric.update(LOGITS[start:stop], LABELS[start:stop])
        ours.update(LOGITS[start:stop], LABELS[start:stop])
    assert float(metric.compute()) == pytest.approx(float(ours.compute()), abs=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torchmetrics.classification.MulticlassAccuracy(num_classes=3),
        lambda: torchmetrics.classification.MulticlassAUROC(num_classes=3),  # list states
    ],
    ids=["sums", "lists"],
)
def test_state_dict_resumes_mid_pass(make):
    """States saved mid-pass (weights_only) continue to the uninterrupted value."""
    straight = TorchMetric(make())
    for start, stop in [(0, 10), (10, 25), (25, 40)]:
        straight.update(LOGITS[start:stop], LABELS[start:stop])
    first = TorchMetric(make())
    first.update(LOGITS[:10], LABELS[:10])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = TorchMetric(make())
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    resumed.update(LOGITS[10:25], LABELS[10:25])
    resumed.update(LOGITS[25:], LABELS[25:])
    assert torch.equal(resumed.compute(), straight.compute())


def test_reset_and_sync():
    """reset forgets; sync leaves the work to torchmetrics (nothing to do here)."""
    metric = TorchMetric(torchmetrics.classification.MulticlassAccuracy(num_classes=3))
    metric.update(LOGITS, LABELS)
    before = metric.compute()
    metric.sync(lambda t: t * 2, lambda t: t)
    assert torch.equal(metric.compute(), before)
    metric.reset()
    metric.update(LOGITS[:1], LOGITS[:1].argmax(1))
    assert float(metric.compute()) == 1.0
    assert repr(metric).startswith("TorchMetric(MulticlassAccuracy(")


def test_detection_without_import():
    """Recognising a torchmetrics metric does not import torchmetrics; others are not one."""
    code = (
        "import sys, kiln.metrics as m; "
        "assert not m.external.is_torchmetrics(m.F1()); "
        "assert 'torchmetrics' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert is_torchmetrics(torchmetrics.MeanSquaredError())
    assert not is_torchmetrics(F1())


@pytest.mark.parametrize(
    ("name", "expected"),
    [("MulticlassF1Score", "multiclass_f1_score"), ("BinaryAUROC", "binary_auroc"), ("MSE", "mse")],
)
def test_snake_case(name, expected):
    """Class names become logged names, acronyms kept whole."""
    assert snake_case(name) == expected
