"""Tests of `kiln.metrics.confusion` and `kiln.metrics.inputs`: counts and how inputs are read."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from kiln.metrics import ConfusionCounts, ConfusionMatrix
from kiln.metrics.inputs import check_options, resolve_task

GEN = torch.Generator().manual_seed(1)
SCORES = torch.randn(40, 5, generator=GEN)
LABELS = torch.randint(0, 5, (40,), generator=GEN)
SPLITS = [(0, 3), (3, 17), (17, 40)]


def batched(metric, output, target):
    for start, stop in SPLITS:
        metric.update(output[start:stop], target[start:stop])
    return metric.compute()


def test_multiclass_equals_sklearn():
    """Rows are true classes, columns predicted ones, over all batches."""
    expected = sk.confusion_matrix(LABELS, SCORES.argmax(1), labels=range(5))
    result = batched(ConfusionMatrix(), SCORES, LABELS)
    assert result.dtype == torch.long
    np.testing.assert_array_equal(result.numpy(), expected)


def test_binary_and_multilabel_equal_sklearn():
    """One column gives 2 x 2; task='multilabel' gives one 2 x 2 matrix per label."""
    probs = torch.rand(40, generator=GEN)
    truth = torch.randint(0, 2, (40,), generator=GEN)
    expected = sk.confusion_matrix(truth, probs > 0.5)
    np.testing.assert_array_equal(batched(ConfusionMatrix(), probs, truth).numpy(), expected)
    labels = torch.randint(0, 2, (40, 3), generator=GEN)
    expected = sk.multilabel_confusion_matrix(labels, SCORES[:, :3] > 0)
    metric = ConfusionMatrix(task="multilabel", threshold=0.0)
    np.testing.assert_array_equal(batched(metric, SCORES[:, :3], labels).numpy(), expected)


@pytest.mark.parametrize("normalize", ["true", "pred", "all"])
def test_normalize_equals_sklearn(normalize):
    """Normalized matrices are fractions, as scikit-learn's."""
    expected = sk.confusion_matrix(LABELS, SCORES.argmax(1), labels=range(5), normalize=normalize)
    result = batched(ConfusionMatrix(normalize=normalize), SCORES, LABELS)
    np.testing.assert_allclose(result.numpy(), expected)


def test_value_is_kept_on_the_cpu():
    """The last result stays readable as `.value`."""
    metric = ConfusionMatrix()
    assert metric.value is None
    result = batched(metric, SCORES, LABELS)
    assert torch.equal(metric.value, result)


def test_multidimensional_outputs():
    """Outputs (N, C, L) against labels (N, L) count every position."""
    output = torch.randn(4, 3, 6, generator=GEN)
    target = torch.randint(0, 3, (4, 6), generator=GEN)
    metric = ConfusionMatrix()
    metric.update(output, target)
    expected = sk.confusion_matrix(target.reshape(-1), output.argmax(1).reshape(-1))
    np.testing.assert_array_equal(metric.compute().numpy(), expected)


def test_resume_mid_pass():
    """Counts restored from `state_dict` continue exactly."""
    metric = ConfusionMatrix()
    metric.update(SCORES[:10], LABELS[:10])
    resumed = ConfusionMatrix()
    resumed.load_state_dict(metric.state_dict())
    resumed.update(SCORES[10:], LABELS[10:])
    expected = sk.confusion_matrix(LABELS, SCORES.argmax(1), labels=range(5))
    np.testing.assert_array_equal(resumed.compute().numpy(), expected)


def test_counts_without_kind_in_state():
    """Counts restored from a state without the task cannot be read."""
    metric = ConfusionCounts("counts")
    metric.load_state_dict({"total": torch.zeros(9, dtype=torch.long), "count": 3})
    with pytest.raises(ValueError, match=r"counts: the saved counts do not say their task"):
        metric.compute()


def test_predicted_labels_need_num_classes():
    """Integer outputs of the target's shape are labels: without num_classes, ValueError."""
    with pytest.raises(ValueError, match=r"the outputs are labels .* Pass `num_classes=`"):
        ConfusionMatrix().update(LABELS, LABELS)
    metric = ConfusionMatrix(num_classes=5)
    metric.update(LABELS, LABELS)
    assert torch.equal(metric.compute().diagonal(), torch.bincount(LABELS, minlength=5))


def test_predicted_labels_out_of_range_are_reported():
    """A predicted label beyond num_classes is not counted in a wrong cell."""
    metric = ConfusionMatrix(num_classes=3)
    metric.update(torch.tensor([0, 5]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"1 targets or predicted labels .* labels 0 to 2"):
        metric.compute()


def test_class_count_changing_within_a_pass():
    """Batches of one pass with different class counts raise ValueError."""
    metric = ConfusionMatrix()
    metric.update(SCORES[:4], LABELS[:4])
    with pytest.raises(ValueError, match=r"this batch is multiclass with 3 classes, but earlier"):
        metric.update(SCORES[:4, :3], torch.zeros(4, dtype=torch.long))


def test_fractional_float_labels_rejected():
    """Float labels must be whole numbers."""
    with pytest.raises(ValueError, match=r"a multiclass target holds 1.5"):
        ConfusionMatrix().update(SCORES[:2], torch.tensor([0.0, 1.5]))


@pytest.mark.parametrize(
    ("output", "target", "task", "match"),
    [
        (torch.zeros(4, 3), torch.zeros(5, dtype=torch.long), None, r"same number of samples"),
        (torch.zeros(4, 3), torch.zeros(4, 1, dtype=torch.long), None, r"one label per sample"),
        (torch.zeros(4), torch.zeros(3), None, r"same number of samples"),
        (torch.zeros(4, 1), torch.zeros(4, 2), None, r"one output column of 4 values"),
        (torch.zeros(4, 3), torch.zeros(4), "multilabel", r"multilabel outputs \(N, labels\)"),
        (torch.zeros(4, 3), torch.zeros(4), "binary", r"task='binary' needs one output column"),
        (torch.zeros(4), torch.zeros(4), "multiclass", r"task='multiclass' needs one score"),
    ],
)
def test_shapes_that_fit_no_task(output, target, task, match):
    """Shapes that cannot be meant raise ValueError saying what was received."""
    with pytest.raises(ValueError, match=match):
        resolve_task("m", output, target, task, None)


def test_num_classes_must_match_the_columns():
    """num_classes differing from the output's columns raises ValueError."""
    with pytest.raises(ValueError, match=r"num_classes=4, but the outputs have 5 columns"):
        ConfusionMatrix(num_classes=4).update(SCORES, LABELS)


def test_non_tensors():
    """Outputs or targets that are not tensors raise TypeError."""
    with pytest.raises(TypeError, match=r"confusion_matrix needs tensor outputs and targets"):
        ConfusionMatrix().update(SCORES, [0, 1])


@pytest.mark.parametrize(
    ("task", "num_classes", "match"),
    [
        ("multi", None, r"`task` must be one of binary, multiclass, multilabel or None"),
        (None, 1, r"`num_classes` must be an integer of at least 2; received 1"),
        (None, 2.0, r"`num_classes` must be an integer of at least 2"),
    ],
)
def test_bad_options(task, num_classes, match):
    """A bad task or class count raises ValueError at construction."""
    with pytest.raises(ValueError, match=match):
        check_options(task, num_classes)
    with pytest.raises(ValueError, match=match):
        ConfusionMatrix(task=task, num_classes=num_classes)


def test_bad_normalize():
    """An unknown normalization raises ValueError."""
    with pytest.raises(ValueError, match=r"`normalize` must be None, 'true', 'pred' or 'all'"):
        ConfusionMatrix(normalize="rows")


def test_single_label_multilabel_is_binary():
    """task='multilabel' with one output column is read as binary."""
    assert resolve_task("m", torch.zeros(4, 1), torch.zeros(4, 1), "multilabel", None) == (
        "binary",
        2,
    )
