"""Tests of `kiln.metrics.fscore`: precision, recall, F-beta and F1 against scikit-learn."""

from __future__ import annotations

import pytest
import torch
from sklearn import metrics as sk

from kiln.metrics import F1, FBeta, Precision, Recall

GEN = torch.Generator().manual_seed(0)
SCORES = torch.randn(50, 4, generator=GEN)
LABELS = torch.randint(0, 4, (50,), generator=GEN)
PROBS = torch.rand(50, generator=GEN)
BINARY = torch.randint(0, 2, (50,), generator=GEN)
LABEL_SCORES = torch.randn(50, 3, generator=GEN)
MULTILABEL = torch.randint(0, 2, (50, 3), generator=GEN)
SPLITS = [(0, 7), (7, 8), (8, 31), (31, 50)]  # batches of unequal sizes

SKLEARN = {Precision: sk.precision_score, Recall: sk.recall_score, F1: sk.f1_score}


def batched(metric, output, target):
    for start, stop in SPLITS:
        metric.update(output[start:stop], target[start:stop])
    return float(metric.compute())


@pytest.mark.parametrize("cls", list(SKLEARN))
@pytest.mark.parametrize("average", ["macro", "micro"])
def test_multiclass_equals_sklearn_over_the_whole_set(cls, average):
    """Batches of unequal sizes give scikit-learn's value on all predictions at once."""
    expected = SKLEARN[cls](LABELS, SCORES.argmax(1), average=average)
    assert batched(cls(average=average), SCORES, LABELS) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("cls", list(SKLEARN))
@pytest.mark.parametrize("average", ["macro", "micro", "binary"])
def test_binary_equals_sklearn(cls, average):
    """One column of probabilities is thresholded at 0.5; every average matches scikit-learn."""
    expected = SKLEARN[cls](BINARY, PROBS > 0.5, average=average)
    assert batched(cls(average=average), PROBS, BINARY) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("cls", list(SKLEARN))
@pytest.mark.parametrize("average", ["macro", "micro"])
def test_multilabel_equals_sklearn(cls, average):
    """task='multilabel' scores each label; logits threshold at 0."""
    expected = SKLEARN[cls](MULTILABEL, LABEL_SCORES > 0, average=average)
    metric = cls(average=average, task="multilabel", threshold=0.0)
    assert batched(metric, LABEL_SCORES, MULTILABEL.float()) == pytest.approx(expected, abs=1e-12)


def test_logits_and_probabilities_agree():
    """Logits with threshold 0 give the value of their sigmoid with threshold 0.5."""
    logits = torch.randn(40, generator=GEN)
    target = torch.randint(0, 2, (40,), generator=GEN)
    on_logits = batched(F1(average="binary", threshold=0.0), logits, target)
    on_probs = batched(F1(average="binary"), torch.sigmoid(logits), target)
    assert on_logits == on_probs


def test_fbeta_equals_sklearn():
    """FBeta weighs recall by beta, as scikit-learn's fbeta_score."""
    expected = sk.fbeta_score(LABELS, SCORES.argmax(1), beta=2.0, average="macro")
    assert batched(FBeta(beta=2.0), SCORES, LABELS) == pytest.approx(expected, abs=1e-12)


def test_macro_leaves_out_absent_classes():
    """A class that is neither a target nor a prediction is left out, as in scikit-learn."""
    output = torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [5.0, 0, 0, 0]])
    target = torch.tensor([0, 1, 1])  # classes 2 and 3 never occur
    expected = sk.f1_score(target, output.argmax(1), average="macro")
    assert batched(F1(), output, target) == pytest.approx(expected)


def test_one_hot_targets_and_predicted_labels():
    """One-hot targets are read by arg-max; integer outputs are labels given num_classes."""
    one_hot = torch.nn.functional.one_hot(LABELS, 4).float()
    expected = sk.f1_score(LABELS, SCORES.argmax(1), average="macro")
    assert batched(F1(), SCORES, one_hot) == pytest.approx(expected)
    assert batched(F1(num_classes=4), SCORES.argmax(1), LABELS) == pytest.approx(expected)


def test_not_a_mean_of_batch_values():
    """The value over two batches is not the mean of the two batch values."""
    metric = F1(average="binary")
    metric.update(torch.tensor([0.9]), torch.tensor([1]))  # batch F1: 1
    metric.update(torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0, 1, 1]))  # batch F1: 0
    assert float(metric.compute()) == pytest.approx(sk.f1_score([1, 0, 1, 1], [1, 1, 0, 0]))


def test_resume_mid_pass_is_bitwise():
    """A metric restored from `state_dict` mid-pass ends with the same value, bitwise."""
    straight = F1()
    for start, stop in SPLITS:
        straight.update(SCORES[start:stop], LABELS[start:stop])
    first = F1()
    for start, stop in SPLITS[:2]:
        first.update(SCORES[start:stop], LABELS[start:stop])
    saved = first.state_dict()
    resumed = F1()
    resumed.load_state_dict(saved)
    for start, stop in SPLITS[2:]:
        resumed.update(SCORES[start:stop], LABELS[start:stop])
    assert torch.equal(resumed.compute(), straight.compute())


def test_state_dict_holds_tensors_and_plain_data():
    """The saved state loads with `weights_only=True`."""
    import io

    metric = Precision()
    metric.update(SCORES, LABELS)
    buffer = io.BytesIO()
    torch.save(metric.state_dict(), buffer)
    buffer.seek(0)
    other = Precision()
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(other.compute(), metric.compute())


def test_direction_and_defaults():
    """Scores are maximized; names and averages default to Poutyne's."""
    assert F1.higher_is_better
    assert Precision.higher_is_better
    assert Recall.higher_is_better
    assert (F1().name, F1().average, FBeta().name) == ("f1", "macro", "fbeta")


@pytest.mark.parametrize("average", ["weighted", None, "samples"])
def test_bad_average(average):
    """An unknown average raises ValueError listing the accepted ones."""
    with pytest.raises(ValueError, match=r"`average` must be 'macro', 'micro' or 'binary'"):
        F1(average=average)


@pytest.mark.parametrize("beta", [0, -1.0, True, "2"])
def test_bad_beta(beta):
    """beta must be a positive number."""
    with pytest.raises(ValueError, match=r"`beta` must be a positive number"):
        FBeta(beta=beta)


def test_binary_average_on_multiclass_inputs():
    """average='binary' with multiclass inputs raises ValueError at the first update."""
    with pytest.raises(ValueError, match=r"average='binary' scores the positive class"):
        F1(average="binary").update(SCORES, LABELS)


def test_labels_out_of_range_first_batch():
    """A label out of range in the first batch of a pass raises at once."""
    with pytest.raises(ValueError, match=r"a multiclass target holds 7, but it must hold labels 0"):
        F1().update(SCORES[:3], torch.tensor([0, 7, 1]))


def test_labels_out_of_range_later_batch():
    """A label out of range in a later batch is counted and reported by compute."""
    metric = F1()
    metric.update(SCORES[:3], LABELS[:3])
    metric.update(SCORES[3:5], torch.tensor([4, 1]))  # 4 classes: 4 is just out
    with pytest.raises(ValueError, match=r"f1: 1 targets or predicted labels of the pass were not"):
        metric.compute()
    for bad in (-1, 9):  # far out: caught when the kept batches are counted
        metric = F1()
        metric.update(SCORES[:3], LABELS[:3])
        metric.update(SCORES[3:5], torch.tensor([bad, 1]))
        with pytest.raises(ValueError, match=r"f1: some targets of the pass are out of range"):
            metric.compute()


def test_binary_integer_targets_must_be_zero_or_one():
    """A binary integer target of 2 is rejected."""
    with pytest.raises(ValueError, match=r"a binary target holds 2, but it must hold 0 or 1"):
        Recall().update(PROBS[:2], torch.tensor([0, 2]))


def test_compute_before_update():
    """No samples, no value."""
    with pytest.raises(ValueError, match=r"The metric 'f1' has seen no samples"):
        F1().compute()
