"""Tests of `kiln.losses.checks`: the first-batch checks of a loss's output and target."""

from __future__ import annotations

import pytest
import torch

from kiln.losses import resolve_loss
from kiln.losses.checks import CLASSES, ELEMENTWISE, OTHER, check_label_range, check_loss_inputs

N, C = 8, 3


def _labels(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# Any kind


@pytest.mark.parametrize("kind", [CLASSES, ELEMENTWISE, OTHER])
def test_check_missing_target(kind):
    """A batch without target raises ValueError explaining the batch formats."""
    with pytest.raises(ValueError, match=r"needs a target.*`\(x, y\)` or `\(x, w, y\)`"):
        check_loss_inputs("mse", kind, torch.zeros(N, 1), None)


def test_check_other_kind_not_checked():
    """Losses of kind 'other' accept shapes the other kinds reject."""
    check_loss_inputs("custom", OTHER, torch.zeros(N, 1), torch.zeros(N, dtype=torch.long))


def test_check_non_tensors_not_checked():
    """Outputs and targets that are not tensors pass through to the loss."""
    check_loss_inputs("custom", ELEMENTWISE, {"a": torch.zeros(N)}, [1, 2])


# --------------------------------------------------------------------------------------------
# Elementwise losses


@pytest.mark.parametrize("name", ["mse", "l1", "bce_with_logits", "smooth_l1"])
def test_check_elementwise_broadcast_column(name):
    """Output (N, 1) against target (N,) raises ValueError naming the broadcast and the fix."""
    with pytest.raises(ValueError, match=r"broadcast.*`y\.view\(-1, 1\)`") as info:
        check_loss_inputs(name, ELEMENTWISE, torch.zeros(N, 1), torch.zeros(N))
    assert f"The loss {name} compares output and target element by element" in str(info.value)
    assert "(8, 1)" in str(info.value)


def test_check_elementwise_broadcast_row():
    """Output (N,) against target (N, 1) is rejected as well."""
    with pytest.raises(ValueError, match=r"would broadcast"):
        check_loss_inputs("mse", ELEMENTWISE, torch.zeros(N), torch.zeros(N, 1))


def test_check_elementwise_different_sizes():
    """Shapes with different element counts ask for matching shapes, not a reshape."""
    with pytest.raises(ValueError, match=r"make the model's output and the target the same shape"):
        check_loss_inputs("mse", ELEMENTWISE, torch.zeros(N, 2), torch.zeros(N))


@pytest.mark.parametrize("dtype", [torch.long, torch.int32, torch.bool])
def test_check_elementwise_integer_target(dtype):
    """Integer targets for a regression loss raise ValueError suggesting `y.float()`."""
    with pytest.raises(ValueError, match=r"expects float targets.*`y\.float\(\)`"):
        check_loss_inputs("mse", ELEMENTWISE, torch.zeros(N, 1), torch.zeros(N, 1, dtype=dtype))


def test_check_elementwise_accepts_matching_floats():
    """Float targets of the output's shape pass."""
    check_loss_inputs("mse", ELEMENTWISE, torch.zeros(N, 2), torch.ones(N, 2))


# --------------------------------------------------------------------------------------------
# Classification losses


def test_check_classes_one_dim_output():
    """A 1-D output for cross-entropy raises ValueError pointing to bce_with_logits."""
    with pytest.raises(ValueError, match=r"one score per class.*loss='bce_with_logits'"):
        check_loss_inputs("cross_entropy", CLASSES, torch.zeros(N), _labels(*[0] * N))


def test_check_classes_float_labels():
    """Float targets of shape (N,) raise ValueError suggesting `y.long()`."""
    with pytest.raises(ValueError, match=r"received float targets of shape \(8,\).*`y\.long\(\)`"):
        check_loss_inputs("cross_entropy", CLASSES, torch.zeros(N, C), torch.zeros(N))


def test_check_classes_accepts_probabilities():
    """Float targets of the output's shape (class probabilities) are accepted."""
    probabilities = torch.full((N, C), 1 / C)
    check_loss_inputs("cross_entropy", CLASSES, torch.zeros(N, C), probabilities)


def test_check_classes_accepts_labels():
    """Integer labels of shape (N,) within range are accepted."""
    check_loss_inputs("cross_entropy", CLASSES, torch.zeros(N, C), torch.arange(N) % C)


def test_check_classes_accepts_multidim_labels():
    """Outputs (N, C, L) with labels (N, L) are accepted."""
    check_loss_inputs("cross_entropy", CLASSES, torch.zeros(N, C, 5), torch.zeros(N, 5).long())


def test_check_classes_column_labels():
    """Labels of shape (N, 1) raise ValueError suggesting `y.view(-1)`."""
    match = r"target of shape \(8,\); received \(8, 1\)\. Fix: `y\.view\(-1\)`"
    with pytest.raises(ValueError, match=match):
        check_loss_inputs("cross_entropy", CLASSES, torch.zeros(N, C), torch.zeros(N, 1).long())


def test_check_classes_wrong_label_count():
    """Labels of another count than the samples ask for one label per sample."""
    with pytest.raises(ValueError, match=r"Fix: one label per sample"):
        check_loss_inputs("cross_entropy", CLASSES, torch.zeros(N, C), torch.zeros(N, 2).long())


@pytest.mark.parametrize(("bad", "shown"), [(3, "3"), (7, "7"), (-1, "-1")])
def test_check_classes_label_out_of_range(bad, shown):
    """A label outside 0..classes-1 raises ValueError naming the label and the range."""
    target = _labels(0, 1, 2, bad, 0, 1, 2, 0)
    with pytest.raises(ValueError, match=rf"class label {shown}, .* 3 classes, .* 0\.\.2"):
        check_loss_inputs("cross_entropy", CLASSES, torch.zeros(N, C), target)


def test_check_label_range_suggests_wider_layer():
    """A too-large label suggests a last layer with enough outputs."""
    with pytest.raises(ValueError, match=r"give the model's last layer 6 outputs"):
        check_label_range("nll", _labels(0, 5), 3)


def test_check_label_range_negative_label_message():
    """A negative label does not suggest resizing a layer that is already the right size."""
    with pytest.raises(ValueError, match=r"class label -1") as info:
        check_label_range("nll", _labels(-1, 1), 3)
    assert "last layer 3 outputs" not in str(info.value)


def test_check_label_range_empty_target():
    """An empty target has no label to check."""
    check_label_range("nll", torch.zeros(0, dtype=torch.long), 3)


# --------------------------------------------------------------------------------------------
# Arming in LossFunction


def test_loss_function_armed_checks_once():
    """After the first call the loss is disarmed, and a second bad call is not checked."""
    loss = resolve_loss("mse")
    with pytest.raises(ValueError, match=r"broadcast"):
        loss(torch.zeros(N, 1), torch.zeros(N))
    assert loss.armed is False
    with pytest.warns(UserWarning, match=r"different to the input size"):
        loss(torch.zeros(N, 1), torch.zeros(N))


def test_loss_function_good_first_call_disarms():
    """A first call with good inputs disarms the loss too."""
    loss = resolve_loss("cross_entropy")
    loss(torch.zeros(N, C), torch.arange(N) % C)
    assert loss.armed is False


def test_loss_function_rearmed_checks_again():
    """Setting `armed` again (as the trainer does at each pass) checks the next call."""
    loss = resolve_loss("cross_entropy")
    loss(torch.zeros(N, C), torch.arange(N) % C)
    loss.armed = True
    with pytest.raises(ValueError, match=r"`y\.long\(\)`"):
        loss(torch.zeros(N, C), torch.zeros(N))


@pytest.mark.parametrize(
    ("loss", "output", "target", "match"),
    [
        ("nll", torch.zeros(N, C), torch.zeros(N), r"`y\.long\(\)`"),
        ("bce", torch.full((N, 1), 0.5), torch.zeros(N), r"`y\.view\(-1, 1\)`"),
        ("cross_entropy", torch.zeros(N, C), torch.full((N,), 9), r"class label 9"),
    ],
)
def test_loss_function_runs_check_on_first_call(loss, output, target, match):
    """A `LossFunction` runs the checks on its first call, before the torch loss."""
    with pytest.raises(ValueError, match=match):
        resolve_loss(loss)(output, target)


def test_loss_function_checks_torch_module_kind():
    """A torch loss module is checked by its kind (here classes)."""
    with pytest.raises(ValueError, match=r"The loss CrossEntropyLoss got the class label 5"):
        resolve_loss(torch.nn.CrossEntropyLoss())(torch.zeros(2, C), _labels(0, 5))


def test_check_classes_int32_labels():
    """Labels of another integer dtype than int64 raise ValueError suggesting `y.long()`."""
    target = (torch.arange(N) % C).int()
    with pytest.raises(ValueError, match=r"`y\.long\(\)`"):
        check_loss_inputs("cross_entropy", CLASSES, torch.zeros(N, C), target)


# --------------------------------------------------------------------------------------------
# Ignored labels, binary targets, outputs that are not one tensor


def test_check_classes_skips_the_ignored_label():
    """-100 (torch's `ignore_index`: padding) is not a label out of range; others still are."""
    target = _labels(0, -100, 2, -100, 1, 0, 2, 1)
    check_loss_inputs("cross_entropy", CLASSES, torch.zeros(N, C), target, ignore_index=-100)
    check_label_range("nll", _labels(7, 7, 1), 3, ignore_index=7)
    check_label_range("nll", _labels(-100, -100), 3, ignore_index=-100)  # all padding
    with pytest.raises(ValueError, match=r"class label 5, .* 0\.\.2"):
        check_label_range("nll", _labels(-100, 5), 3, ignore_index=-100)
    with pytest.raises(ValueError, match=r"class label -100"):
        check_label_range("nll", _labels(-100, 1), 3)  # a loss without ignore_index


@pytest.mark.parametrize(("bad", "shown"), [(1.5, "1.5"), (-0.25, "-0.25"), (3.0, "3")])
def test_check_unit_interval_refuses_targets_outside_0_1(bad, shown):
    """Binary cross-entropy targets outside [0, 1] are refused: torch computes a wrong loss."""
    target = torch.tensor([[0.0], [1.0], [bad]])
    match = rf"The loss bce_with_logits expects targets between 0 and 1 .* holds {shown},"
    with pytest.raises(ValueError, match=match) as info:
        check_loss_inputs(
            "bce_with_logits", ELEMENTWISE, torch.zeros(3, 1), target, unit_interval=True
        )
    fix = "loss='cross_entropy'" if bad == 3.0 else "Scale the targets into [0, 1]"
    assert fix in str(info.value)


def test_check_unit_interval_accepts_labels_and_probabilities():
    """0/1 labels and probabilities pass; only the flag turns the check on."""
    target = torch.tensor([[0.0], [1.0], [0.25]])
    check_loss_inputs("bce", ELEMENTWISE, torch.zeros(3, 1), target, unit_interval=True)
    check_loss_inputs("mse", ELEMENTWISE, torch.zeros(3, 1), target * 9)


@pytest.mark.parametrize(
    ("output", "shown", "pick"),
    [
        (
            (torch.zeros(N, C), torch.zeros(N, 4)),
            r"a tuple: \(\(8, 3\) float32, \(8, 4\)",
            "output[0]",
        ),
        (
            {"logits": torch.zeros(N, C)},
            r"a dict: \{'logits': \(8, 3\) float32\}",
            "output['logits']",
        ),
    ],
)
def test_check_torch_loss_refuses_an_output_that_is_not_one_tensor(output, shown, pick):
    """A model returning a tuple or a dict to torch's loss gets how to pick the tensor."""
    with pytest.raises(
        TypeError, match=rf"takes the model's output as one tensor, .* returned {shown}"
    ) as info:
        check_loss_inputs(
            "cross_entropy", CLASSES, output, _labels(*[0] * N), torch_loss="F.cross_entropy"
        )
    assert f"`loss=lambda output, y: F.cross_entropy({pick}, y)`" in str(info.value)


def test_check_torch_loss_refuses_a_target_that_is_not_a_tensor():
    """A list of labels (a dataset yielding strings) is named, with the fix."""
    with pytest.raises(
        TypeError, match=r"the batch's target is a list: \(str, str\)\. Fix: make the dataset"
    ):
        check_loss_inputs(
            "mse", ELEMENTWISE, torch.zeros(2, 1), ["a", "b"], torch_loss="F.mse_loss"
        )
