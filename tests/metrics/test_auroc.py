"""Tests of `kiln.metrics.auroc`: the area under the ROC curve against scikit-learn."""

from __future__ import annotations

import io
import math

import pytest
import torch
from sklearn import metrics as sk

from kiln.metrics import AUROC
from kiln.metrics.auroc import column_auroc

GEN = torch.Generator().manual_seed(2)
SPLITS = [(0, 5), (5, 6), (6, 33), (33, 60)]
PROBS = torch.rand(60, generator=GEN)
BINARY = torch.randint(0, 2, (60,), generator=GEN)
LOGITS = torch.randn(60, 4, generator=GEN)
LABELS = torch.arange(60) % 4  # every class present
MULTILABEL = torch.randint(0, 2, (60, 3), generator=GEN)


def batched(metric, output, target):
    for start, stop in SPLITS:
        metric.update(output[start:stop], target[start:stop])
    return float(metric.compute())


def test_binary_equals_sklearn():
    """Binary scores over unequal batches equal roc_auc_score on the whole set."""
    expected = sk.roc_auc_score(BINARY, PROBS)
    assert batched(AUROC(), PROBS, BINARY) == pytest.approx(expected, abs=1e-12)
    assert batched(AUROC(), PROBS.view(-1, 1), BINARY.float()) == pytest.approx(expected)


def test_binary_logits_equal_probabilities():
    """A sigmoid keeps the order of binary scores: logits give the same area."""
    logits = torch.logit(PROBS)
    assert batched(AUROC(), logits, BINARY) == pytest.approx(batched(AUROC(), PROBS, BINARY))


def test_ties_count_one_half():
    """Tied scores count one half, as scikit-learn's trapezoids."""
    scores = torch.tensor([0.5, 0.5, 0.5, 0.2, 0.9, 0.2])
    target = torch.tensor([1, 0, 1, 0, 1, 1])
    expected = sk.roc_auc_score(target, scores)
    assert batched(AUROC(), scores, target) == pytest.approx(expected)


@pytest.mark.parametrize("logits", [None, True])
def test_multiclass_logits_equal_sklearn_on_probabilities(logits):
    """Multiclass logits go through a softmax; one-vs-rest macro as scikit-learn."""
    probs = LOGITS.double().softmax(1)
    expected = sk.roc_auc_score(LABELS, probs, multi_class="ovr")
    assert batched(AUROC(logits=logits), LOGITS, LABELS) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("logits", [None, False])
def test_multiclass_probabilities_are_used_as_they_are(logits):
    """Rows of probabilities are not put through a second softmax."""
    probs = LOGITS.softmax(1)
    expected = sk.roc_auc_score(LABELS, probs.double(), multi_class="ovr")
    assert batched(AUROC(logits=logits), probs, LABELS) == pytest.approx(expected, abs=1e-6)


def test_multiclass_one_hot_targets():
    """One-hot targets are read as labels."""
    one_hot = torch.nn.functional.one_hot(LABELS, 4).float()
    assert batched(AUROC(), LOGITS, one_hot) == pytest.approx(batched(AUROC(), LOGITS, LABELS))


def test_multilabel_equals_sklearn():
    """task='multilabel' averages the labels' areas, as scikit-learn's macro."""
    expected = sk.roc_auc_score(MULTILABEL, LOGITS[:, :3])
    metric = AUROC(task="multilabel")
    assert batched(metric, LOGITS[:, :3], MULTILABEL) == pytest.approx(expected, abs=1e-12)


def test_undefined_area_is_nan():
    """Targets of one class only leave the area undefined: NaN, not an error mid-training."""
    metric = AUROC()
    metric.update(torch.tensor([0.1, 0.7]), torch.tensor([1, 1]))
    assert math.isnan(float(metric.compute()))


def test_classes_without_positives_are_left_out():
    """A class absent from the targets is left out of the multiclass mean."""
    labels = torch.arange(60) % 3  # class 3 never occurs
    probs = LOGITS.softmax(1).double()
    areas = [sk.roc_auc_score(labels == c, probs[:, c]) for c in range(3)]
    assert batched(AUROC(), LOGITS, labels) == pytest.approx(sum(areas) / 3, abs=1e-12)


def test_column_auroc_per_column():
    """Each column gets its own area."""
    scores = torch.randn(30, 2, generator=GEN)
    truth = torch.randint(0, 2, (30, 2), generator=GEN).bool()
    areas = column_auroc(scores, truth)
    for column in range(2):
        expected = sk.roc_auc_score(truth[:, column], scores[:, column])
        assert float(areas[column]) == pytest.approx(expected)


def test_resume_mid_pass_is_bitwise():
    """Scores saved mid-pass (and loaded with weights_only) continue to the same value."""
    straight = AUROC()
    for start, stop in SPLITS:
        straight.update(LOGITS[start:stop], LABELS[start:stop])
    first = AUROC()
    for start, stop in SPLITS[:2]:
        first.update(LOGITS[start:stop], LABELS[start:stop])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = AUROC()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for start, stop in SPLITS[2:]:
        resumed.update(LOGITS[start:stop], LABELS[start:stop])
    assert torch.equal(resumed.compute(), straight.compute())


def test_restored_without_more_batches():
    """A state saved at the end of a pass computes without another update."""
    metric = AUROC()
    metric.update(PROBS, BINARY)
    other = AUROC()
    other.load_state_dict(metric.state_dict())
    assert torch.equal(other.compute(), metric.compute())


def test_reset_forgets():
    """reset empties the kept scores."""
    metric = AUROC()
    metric.update(PROBS, BINARY)
    metric.reset()
    with pytest.raises(ValueError, match=r"The metric 'auroc' has seen no samples"):
        metric.compute()


def test_predicted_labels_rejected():
    """Integer outputs are labels, which cannot be ranked: TypeError."""
    with pytest.raises(TypeError, match=r"auroc ranks scores, so it needs floating outputs"):
        AUROC().update(LABELS, LABELS)


def test_bad_labels():
    """Labels out of range raise ValueError: at once, or at compute for later batches."""
    with pytest.raises(ValueError, match=r"a multiclass target holds 4"):
        AUROC().update(LOGITS[:2], torch.tensor([0, 4]))
    metric = AUROC()
    metric.update(LOGITS[:2], LABELS[:2])
    metric.update(LOGITS[2:4], torch.tensor([0, 9]))
    with pytest.raises(ValueError, match=r"auroc: some targets of the pass are not labels 0 to 3"):
        metric.compute()
    metric = AUROC()
    metric.update(PROBS[:2], BINARY[:2])
    metric.update(PROBS[2:4], torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"auroc: some targets of the pass are not 0 or 1"):
        metric.compute()


def test_kind_changing_within_a_pass():
    """Binary then multiclass batches in one pass raise ValueError."""
    metric = AUROC()
    metric.update(PROBS[:3], BINARY[:3])
    with pytest.raises(ValueError, match=r"this batch is multiclass with 4 classes"):
        metric.update(LOGITS[:3], LABELS[:3])


def test_bad_task():
    """An unknown task raises ValueError."""
    with pytest.raises(ValueError, match=r"`task` must be one of"):
        AUROC(task="ranking")
