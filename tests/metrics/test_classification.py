"""Tests of `kiln.metrics.classification`: `Accuracy`, binary, multiclass and top-k."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kiln.metrics import Accuracy


def _value(metric: Accuracy, output: torch.Tensor, target: torch.Tensor) -> float:
    metric.update(output, target)
    return float(metric.compute())


# --------------------------------------------------------------------------------------------
# Binary: one output column


PROBABILITIES = torch.tensor([0.1, 0.6, 0.4, 0.9, 0.5])
TRUTH = [0, 1, 1, 0, 0]  # right, right, wrong, wrong, right (0.5 is not > 0.5)


@pytest.mark.parametrize(
    "target",
    [
        torch.tensor(TRUTH, dtype=torch.float32),
        torch.tensor(TRUTH, dtype=torch.long),
        torch.tensor(TRUTH, dtype=torch.bool),
    ],
    ids=["float", "int", "bool"],
)
@pytest.mark.parametrize("column", [False, True], ids=["(N,)", "(N,1)"])
def test_accuracy_binary_threshold(target, column):
    """One output column is thresholded at 0.5 against 0/1 targets of any dtype."""
    output = PROBABILITIES.view(-1, 1) if column else PROBABILITIES
    assert _value(Accuracy(), output, target) == pytest.approx(3 / 5)


def test_accuracy_binary_column_target():
    """Outputs (N, 1) compare with targets (N, 1)."""
    target = torch.tensor(TRUTH, dtype=torch.float32).view(-1, 1)
    assert _value(Accuracy(), PROBABILITIES.view(-1, 1), target) == pytest.approx(3 / 5)


def test_accuracy_binary_logits_threshold():
    """With `threshold=0.0` logits are read by their sign."""
    logits = torch.tensor([-2.0, 0.5, -0.1, 3.0])
    target = torch.tensor([0.0, 1.0, 1.0, 1.0])
    assert _value(Accuracy(threshold=0.0), logits, target) == pytest.approx(3 / 4)
    assert _value(Accuracy(), logits, target) == pytest.approx(2 / 4)


def test_accuracy_binary_shape_mismatch():
    """A target of another size than the output column raises ValueError."""
    with pytest.raises(ValueError, match=r"one output column of 5 values cannot be compared"):
        Accuracy().update(PROBABILITIES, torch.zeros(4))


# --------------------------------------------------------------------------------------------
# Multiclass


SCORES = torch.tensor(
    [
        [0.1, 0.7, 0.2],  # top1 = 1, top2 = {1, 2}
        [0.5, 0.2, 0.3],  # top1 = 0, top2 = {0, 2}
        [0.2, 0.3, 0.5],  # top1 = 2, top2 = {2, 1}
        [0.6, 0.3, 0.1],  # top1 = 0, top2 = {0, 1}
    ]
)
LABELS = torch.tensor([1, 2, 0, 1])


def test_accuracy_multiclass_argmax():
    """Several columns are read by their arg-max."""
    assert _value(Accuracy(), SCORES, LABELS) == pytest.approx(1 / 4)


def test_accuracy_multiclass_one_hot_targets():
    """Targets given as one-hot rows are read by their arg-max."""
    one_hot = torch.nn.functional.one_hot(LABELS, 3).float()
    assert _value(Accuracy(), SCORES, one_hot) == pytest.approx(1 / 4)


def test_accuracy_top_k():
    """With `top_k` a sample is right when its label is among the k highest scores."""
    assert _value(Accuracy(top_k=2), SCORES, LABELS) == pytest.approx(3 / 4)
    assert _value(Accuracy(top_k=3), SCORES, LABELS) == pytest.approx(1.0)


def test_accuracy_top_k_exceeds_classes():
    """A `top_k` larger than the classes raises ValueError."""
    with pytest.raises(ValueError, match=r"top_k=4 exceeds the 3 classes"):
        Accuracy(top_k=4).update(SCORES, LABELS)


@pytest.mark.parametrize("top_k", [0, -1, 1.5, True, "2"])
def test_accuracy_top_k_invalid(top_k):
    """A `top_k` that is not a positive integer raises ValueError."""
    with pytest.raises(ValueError, match=r"`top_k` must be a positive integer"):
        Accuracy(top_k=top_k)


def test_accuracy_multidim_outputs():
    """Outputs (N, C, L) compare with labels (N, L), counting each position."""
    gen = torch.Generator().manual_seed(0)
    output = torch.randn(4, 3, 5, generator=gen)
    target = torch.randint(0, 3, (4, 5), generator=gen)
    expected = (output.argmax(1) == target).float().mean().item()
    assert _value(Accuracy(), output, target) == pytest.approx(expected)


def test_accuracy_multiclass_column_labels_rejected():
    """Labels of shape (N, 1) against (N, C) scores raise ValueError instead of broadcasting."""
    with pytest.raises(ValueError, match=r"accuracy"):
        Accuracy().update(SCORES, LABELS.view(-1, 1))


@pytest.mark.parametrize("bad", [[0.1, 0.2], None])
def test_accuracy_non_tensor(bad):
    """Outputs or targets that are not tensors raise TypeError."""
    with pytest.raises(TypeError, match=r"accuracy needs tensor outputs and targets"):
        Accuracy().update(SCORES, bad)


# --------------------------------------------------------------------------------------------
# Accumulation


def test_accuracy_accumulates_sample_weighted():
    """Several updates equal one update on the concatenation, not the mean of batch means."""
    gen = torch.Generator().manual_seed(1)
    output = torch.randn(15, 4, generator=gen)
    target = torch.randint(0, 4, (15,), generator=gen)
    metric = Accuracy()
    for start, stop in [(0, 2), (2, 7), (7, 15)]:
        metric.update(output[start:stop], target[start:stop])
    expected = (output.argmax(1) == target).double().mean()
    torch.testing.assert_close(metric.compute(), expected)


def test_accuracy_binary_accumulates():
    """Binary accuracy accumulates over batches of different sizes."""
    metric = Accuracy()
    metric.update(torch.tensor([0.9]), torch.tensor([1.0]))  # right
    metric.update(torch.tensor([0.9, 0.9, 0.9]), torch.tensor([0.0, 0.0, 1.0]))  # 1 of 3
    assert float(metric.compute()) == pytest.approx(2 / 4)


def test_accuracy_reset():
    """`reset` forgets the accumulated batches."""
    metric = Accuracy()
    metric.update(SCORES, LABELS)
    metric.reset()
    metric.update(SCORES, torch.tensor([1, 0, 2, 0]))
    assert float(metric.compute()) == 1.0


def test_accuracy_compute_before_update():
    """`compute` without any sample raises ValueError."""
    with pytest.raises(ValueError, match=r"The metric 'top1' has seen no samples"):
        Accuracy(name="top1").compute()


def test_accuracy_attributes():
    """Accuracy is maximized and keeps its options and name."""
    metric = Accuracy(top_k=2, threshold=0.0, name="acc2")
    assert Accuracy.higher_is_better is True
    assert (metric.top_k, metric.threshold, metric.name) == (2, 0.0, "acc2")
    assert repr(metric) == "Accuracy(name='acc2')"


# --------------------------------------------------------------------------------------------
# Tasks: multilabel, and checks of an explicit task


def test_accuracy_multilabel_counts_each_decision():
    """task='multilabel' counts every label decision, with float or integer targets."""
    output = torch.tensor([[0.9, 0.2, 0.6], [0.1, 0.8, 0.4]])
    target = torch.tensor([[1, 0, 0], [0, 1, 1]])
    assert _value(Accuracy(task="multilabel"), output, target) == pytest.approx(4 / 6)
    assert _value(Accuracy(task="multilabel"), output, target.float()) == pytest.approx(4 / 6)
    logits = torch.logit(output)
    assert _value(Accuracy(task="multilabel", threshold=0.0), logits, target) == pytest.approx(
        4 / 6
    )


def test_accuracy_multilabel_shape_mismatch():
    """Multilabel targets of another shape raise ValueError."""
    with pytest.raises(ValueError, match=r"multilabel outputs need 0/1 targets of the same shape"):
        Accuracy(task="multilabel").update(SCORES, LABELS)


@pytest.mark.parametrize(
    ("task", "output", "match"),
    [
        ("binary", SCORES, r"task='binary' needs one output column"),
        ("multiclass", PROBABILITIES, r"task='multiclass' needs a column per class"),
    ],
)
def test_accuracy_task_must_fit_the_output(task, output, match):
    """An explicit task that the output's shape contradicts raises ValueError."""
    with pytest.raises(ValueError, match=match):
        Accuracy(task=task).update(output, torch.zeros(len(output)))


def test_accuracy_bad_task():
    """An unknown task raises ValueError."""
    with pytest.raises(ValueError, match=r"`task` must be one of binary, multiclass, multilabel"):
        Accuracy(task="ordinal")


def test_accuracy_resume_mid_pass_is_bitwise():
    """Accuracy restored from `state_dict` continues to the same value, bitwise."""
    gen = torch.Generator().manual_seed(5)
    output, target = torch.randn(20, 3, generator=gen), torch.randint(0, 3, (20,), generator=gen)
    straight, first = Accuracy(), Accuracy()
    for metric in (straight, first):
        metric.update(output[:7], target[:7])
    straight.update(output[7:], target[7:])
    resumed = Accuracy()
    resumed.load_state_dict(first.state_dict())
    resumed.update(output[7:], target[7:])
    assert torch.equal(resumed.compute(), straight.compute())


def test_accuracy_leaves_the_ignored_label_out_of_the_count():
    """Targets of -100 (torch's `ignore_index`: padding) count neither as right nor at all."""
    output = torch.tensor([[2.0, 1.0], [2.0, 1.0], [1.0, 2.0], [2.0, 1.0]])
    metric = Accuracy()
    metric.update(output, torch.tensor([0, 1, -100, -100]))  # 1 right of 2 counted
    metric.update(output[:1], torch.tensor([0]))  # counted with the next, kept in a buffer
    assert float(metric.compute()) == pytest.approx(2 / 3)
    counts_all = Accuracy(ignore_index=None)
    counts_all.update(output, torch.tensor([0, 1, -100, -100]))
    assert float(counts_all.compute()) == 0.25


def test_accuracy_ignores_a_label_the_model_can_predict():
    """An `ignore_index` that is a class (padding as class 0) is left out, right or not."""
    output = torch.tensor([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
    metric = Accuracy(ignore_index=0)
    metric.update(output, torch.tensor([0, 1, 1]))  # the first is right but padding
    assert float(metric.compute()) == 0.5
    top2 = Accuracy(top_k=2, ignore_index=0)
    top2.update(output, torch.tensor([0, 1, 1]))
    assert float(top2.compute()) == 1.0


def test_accuracy_sequence_labels_with_padding():
    """Scores (N, C, L) against labels (N, L) padded with -100, as in sequence work."""
    output = torch.zeros(2, 3, 4)
    output[:, 1] = 1.0  # predicts class 1 everywhere
    target = torch.tensor([[1, 1, -100, -100], [1, 0, 1, -100]])
    metric = Accuracy()
    metric.update(output, target)
    assert float(metric.compute()) == 0.8


def test_accuracy_resumes_from_a_state_saved_before_ignore_index():
    """A mid-pass state holding one sum (older kiln) still continues to the right value."""
    metric = Accuracy()
    metric.load_state_dict({"total": torch.tensor(3.0, dtype=torch.float64), "count": 4})
    metric.update(torch.tensor([[2.0, 1.0]]), torch.tensor([0]))
    assert float(metric.compute()) == 0.8


@pytest.mark.parametrize("value", [1.5, "0", True])
def test_accuracy_refuses_an_ignore_index_that_is_no_int(value):
    """`ignore_index` is an int (numpy's too) or None."""
    with pytest.raises(TypeError, match=r"`ignore_index` must be an int or None"):
        Accuracy(ignore_index=value)
    assert Accuracy(ignore_index=np.int64(3)).ignore_index == 3
